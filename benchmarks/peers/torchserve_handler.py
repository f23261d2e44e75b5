"""TorchServe handler for MiniLM: TorchServe batches requests (batchSize, maxBatchDelay) and
hands this handler one list; every request's body is ``{"texts": [...]}`` and gets back its
own ``{"embeddings": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys

from ts.torch_handler.base_handler import BaseHandler

sys.path.insert(0, os.environ["PEERS_DIR"])
from minilm import MiniLM  # noqa: E402


class MiniLMHandler(BaseHandler):
    def initialize(self, context) -> None:
        self.model = MiniLM(threads=int(os.environ.get("PEER_THREADS", "1")))
        self.initialized = True

    def handle(self, data, context):
        bodies = []
        for row in data:
            body = row.get("body") or row.get("data")
            bodies.append(json.loads(body) if isinstance(body, bytes | bytearray | str) else body)
        texts = [t for b in bodies for t in b["texts"]]
        vectors = self.model.embed(texts).tolist()
        out, i = [], 0
        for b in bodies:
            n = len(b["texts"])
            out.append({"embeddings": vectors[i : i + n]})
            i += n
        return out

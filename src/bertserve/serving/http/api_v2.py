"""Open Inference Protocol (KServe v2) with Triton's binary tensor extension.

Input: one tensor ``text`` (BYTES, shape [N] or [N, 1]) as JSON ``data`` or binary
(``parameters.binary_data_size`` after the JSON header, whose length is in the
``Inference-Header-Content-Length`` header); a pair model takes two, ``text`` and
``text_pair``, of the same shape (one missing, or shapes that differ: 400). Outputs:
``embedding`` (FP32 [N, D]) for an embedder; ``logits``, ``probabilities`` (FP32 [N, C]) and
``label`` (BYTES [N]) for a classifier (of texts or of pairs); ``score`` (FP32 [N],
sigmoid(logit)) and ``logit`` (FP32 [N]) for a reranker. An output is returned binary when
asked (per output ``parameters.binary_data`` or request ``parameters.binary_data_output``), as
``tritonclient[http]`` does by default.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from ...errors import InputError, MalformedBodyError, UnknownModelError
from ...postprocess import sigmoid, softmax
from ...version import __version__
from ..core.engine import Engine
from ..core.info import ModelInfo
from .bodies import parse_json, slo_of
from .encode import Reply, dumps
from .schemas import (
    INFER_ERRORS,
    Live,
    ModelReady,
    Ready,
    V2InferResponse,
    V2ModelMetadata,
    V2ServerMetadata,
    errors,
    json_body,
)

HEADER = "inference-header-content-length"
VERSION = "1"
PAIR_INPUTS = ("text", "text_pair")


def decode_bytes_tensor(buf: bytes, count: int, name: str = "text") -> list[bytes]:
    """Triton's BYTES layout: each element is a 4-byte little-endian length, then the bytes."""
    out, pos = [], 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise MalformedBodyError("binary BYTES tensor is truncated (incomplete length prefix)")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise MalformedBodyError("binary BYTES tensor is truncated (element longer than the data)")
        out.append(buf[pos:pos + n])
        pos += n
    if len(out) != count:
        raise InputError(f"input {name!r} has {len(out)} elements, but its shape says {count}")
    return out


def encode_bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for v in values:
        b = v.encode("utf-8")
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def parse_tensors(raw: bytes, header_len: str | None,
                  names: tuple[str, ...] = ("text",)) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The JSON header and the BYTES input tensors of a v2 infer request, by name (each of
    ``names`` at most once; which must be there is the caller's to say)."""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError as exc:
            raise MalformedBodyError("Inference-Header-Content-Length must be an integer") from exc
        if not 0 < n <= len(raw):
            raise MalformedBodyError("Inference-Header-Content-Length is larger than the body")
        head, binary = raw[:n], raw[n:]
    else:
        head, binary = raw, b""
    req = parse_json(head)
    if not isinstance(req, dict):
        raise MalformedBodyError("the inference request must be a JSON object")
    takes = ("one input 'text' (BYTES, shape [N])" if names == ("text",) else
             "two inputs, 'text' and 'text_pair' (BYTES, both of shape [N])")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError(f'the request needs "inputs": a list of tensors; this model takes {takes}')
    tensors: dict[str, list[str]] = {}
    pos = 0
    for spec in inputs:
        if not isinstance(spec, dict):
            raise InputError("each input must be a JSON object")
        name = spec.get("name")
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        chunk = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise MalformedBodyError(f"input {name!r}: binary_data_size does not match the body")
            chunk, pos = binary[pos:pos + size], pos + size
        if name not in names:
            raise InputError(f"unknown input {name!r}; this model takes {takes}")
        if name in tensors:
            raise MalformedBodyError(f"input {name!r} is given twice")
        if spec.get("datatype") != "BYTES":
            raise InputError(f"input {name!r} must have datatype BYTES, not {spec.get('datatype')!r}")
        shape = spec.get("shape")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not shape):
            raise InputError(f"input {name!r} needs a shape: a list of non-negative integers, e.g. [N]")
        count = int(np.prod(shape))
        if chunk is not None:
            elems = decode_bytes_tensor(chunk, count, name)
        else:
            data = spec.get("data")
            if not isinstance(data, list):
                raise InputError(f"input {name!r} needs \"data\" (a list of strings) or binary data")
            elems = list(np.asarray(data, dtype=object).ravel()) if data else []
            if len(elems) != count:
                raise InputError(f"input {name!r} has {len(elems)} elements, but its shape says {count}")
        texts = []
        for i, e in enumerate(elems):
            if isinstance(e, bytes):
                try:
                    e = e.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"input {name!r} element {i} is not valid UTF-8") from exc
            if not isinstance(e, str):
                raise InputError(f"input {name!r} element {i} is a {type(e).__name__}, not a string")
            texts.append(e)
        tensors[name] = texts
    return req, tensors


def parse_request(raw: bytes, header_len: str | None) -> tuple[dict[str, Any], list[str]]:
    """The JSON header and the texts of a single-text model's v2 infer request."""
    req, tensors = parse_tensors(raw, header_len)
    return req, tensors["text"]


def parse_pairs(raw: bytes, header_len: str | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """A pair model's request: two inputs, ``text`` and ``text_pair``, of the same shape (else 400)."""
    req, tensors = parse_tensors(raw, header_len, PAIR_INPUTS)
    missing = [n for n in PAIR_INPUTS if n not in tensors]
    if missing:
        raise MalformedBodyError(f"this model scores text pairs: it takes two inputs, 'text' and "
                                 f"'text_pair' (BYTES, both of shape [N]); {missing[0]!r} is missing")
    shapes = [s.get("shape") for s in req["inputs"]]
    if shapes[0] != shapes[1]:
        raise MalformedBodyError(f"inputs 'text' and 'text_pair' must have the same shape, not "
                                 f"{shapes[0]} and {shapes[1]}")
    return req, tensors["text"], tensors["text_pair"]


def output_names(task: str) -> list[str]:
    if task == "embed":
        return ["embedding"]
    return ["score", "logit"] if task == "rerank" else ["logits", "probabilities", "label"]


def check_model(engine: Engine, name: str, version: str | None = None) -> None:
    served = engine.info.name
    if name != served:
        raise UnknownModelError(f"model {name!r} is not served here; this server serves {served!r}")
    if version not in (None, "", VERSION):
        raise UnknownModelError(f"model {name!r} has no version {version!r} (only {VERSION!r})")


def wanted_outputs(req: dict[str, Any], task: str) -> dict[str, bool]:
    """The outputs to send, each with whether it goes binary."""
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError('"parameters" must be a JSON object')
    wanted = output_names(task)
    binary_all = bool(params.get("binary_data_output", False))
    asked = req.get("outputs")
    if not asked:
        return {n: binary_all for n in wanted}
    if not isinstance(asked, list):
        raise InputError('"outputs" must be a list of {"name": ...} objects')
    binary: dict[str, bool] = {}
    for o in asked:
        oname = o.get("name") if isinstance(o, dict) else None
        if oname not in wanted:
            raise InputError(f"unknown output {oname!r}; this model gives {', '.join(wanted)}")
        oparams = o.get("parameters") or {}
        binary[oname] = bool(oparams.get("binary_data", binary_all)) if isinstance(oparams, dict) \
            else binary_all
    return binary


async def infer(engine: Engine, name: str, version: str | None, raw: bytes,
                headers: Mapping[str, str]) -> Reply:
    check_model(engine, name, version)
    info = engine.info
    pairs = None
    if info.pairs:
        req, texts, pairs = parse_pairs(raw, headers.get(HEADER))
    else:
        req, texts = parse_request(raw, headers.get(HEADER))
    task = info.task or "embed"
    binary = wanted_outputs(req, task)
    params = req.get("parameters") or {}
    if "slo_ms" in params:
        slo = slo_of(params["slo_ms"], "parameters.slo_ms")
    else:
        slo = slo_of(headers.get("x-slo-ms"), "the x-slo-ms header")
    out = await engine.infer(texts, text_pairs=pairs, slo_ms=slo)
    tensors = tensors_of(out.outputs, task, list(info.labels) or None)
    return encode_response(info.name, req.get("id"), tensors, binary, {
        "students": out.students, "tokens": out.tokens,
        "queue_ms": round(out.queue_s * 1e3, 3), "compute_ms": round(out.compute_s * 1e3, 3)})


def runtime_of(info: ModelInfo) -> dict[str, Any] | None:
    """The runtime behind the model, and backend auto's measurement when it made one."""
    if not info.backend:
        return None
    return {"backend": info.backend, "precision": info.precision, "auto": info.auto}


def build_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v2")

    def metadata() -> dict:
        info = engine.info
        task = info.task or "embed"
        dim = info.dim or -1
        if task == "embed":
            outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, dim]}]
        elif task == "rerank":
            outputs = [{"name": "score", "datatype": "FP32", "shape": [-1]},
                       {"name": "logit", "datatype": "FP32", "shape": [-1]}]
        else:
            outputs = [{"name": "logits", "datatype": "FP32", "shape": [-1, dim]},
                       {"name": "probabilities", "datatype": "FP32", "shape": [-1, dim]},
                       {"name": "label", "datatype": "BYTES", "shape": [-1]}]
        names = PAIR_INPUTS if info.pairs else ("text",)
        inputs = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in names]
        meta = {"name": info.name, "versions": [VERSION], "platform": "bertserve", "inputs": inputs,
                "outputs": outputs}
        runtime = runtime_of(info)
        if runtime is not None:
            meta["parameters"] = {"runtime": runtime}
        return meta

    @router.get("", responses={200: {"model": V2ServerMetadata}})
    async def server_metadata() -> dict:
        return {"name": "bertserve", "version": __version__, "extensions": ["binary_tensor_data"]}

    @router.get("/health/live", responses={200: {"model": Live}})
    async def live() -> dict:
        return {"live": True}

    @router.get("/health/ready", responses={200: {"model": Ready}, 503: {"model": Ready,
                "description": "not ready yet, or shutting down"}})
    async def ready() -> JSONResponse:
        ok = engine.ready and engine.accepting
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    found = {200: {"model": V2ModelMetadata}, **errors("v2", 404)}
    ready_or_not = {200: {"model": ModelReady}, 503: {"model": ModelReady, "description": "not ready"},
                    **errors("v2", 404)}
    inferred = {200: {"model": V2InferResponse, "content": {"application/octet-stream": {}},
                      "description": "JSON, or (binary outputs asked) the JSON header then the tensors"},
                **errors("v2", *INFER_ERRORS)}

    # A model name may hold "/" (org/model): the routes take it as a path, so the most specific
    # must be registered first (the decorator nearest the function is applied first).
    @router.get("/models/{name:path}/ready", responses=ready_or_not)
    @router.get("/models/{name:path}/versions/{version}/ready", responses=ready_or_not)
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        check_model(engine, name, version)
        ok = engine.ready and engine.accepting
        return JSONResponse({"name": engine.info.name, "ready": ok}, status_code=200 if ok else 503)

    @router.post("/models/{name:path}/infer", summary="Infer (KServe v2 / Open Inference Protocol)",
                 openapi_extra=json_body("V2InferRequest"), responses=inferred)
    @router.post("/models/{name:path}/versions/{version}/infer", summary="Infer a version",
                 openapi_extra=json_body("V2InferRequest"), responses=inferred)
    async def infer_route(name: str, request: Request, version: str | None = None) -> Response:
        return (await infer(engine, name, version, await request.body(), request.headers)).response()

    @router.get("/models/{name:path}", responses=found)
    @router.get("/models/{name:path}/versions/{version}", responses=found)
    async def model_metadata(name: str, version: str | None = None) -> dict:
        if name.endswith("/infer"):  # the infer route (POST only), not a model name
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
        check_model(engine, name, version)
        return metadata()

    return router


def tensors_of(values: np.ndarray, task: str, labels: list[str] | None) -> dict[str, tuple[str, Any]]:
    if task == "embed":
        return {"embedding": ("FP32", values.astype("<f4"))}
    if task == "rerank":  # one logit per pair
        logit = np.ascontiguousarray(values[:, 0], dtype="<f4")
        return {"score": ("FP32", sigmoid(logit)), "logit": ("FP32", logit)}
    probs = softmax(values).astype("<f4")
    names = labels or [str(i) for i in range(values.shape[1])]
    return {"logits": ("FP32", values.astype("<f4")), "probabilities": ("FP32", probs),
            "label": ("BYTES", [names[int(i)] for i in probs.argmax(axis=1)])}


def encode_response(model: str, req_id: Any, tensors: dict[str, tuple[str, Any]],
                    binary: dict[str, bool], parameters: dict[str, Any]) -> Reply:
    outputs, blobs = [], []
    for name, want_binary in binary.items():
        dtype, value = tensors[name]
        shape = [len(value)] if dtype == "BYTES" else list(value.shape)
        entry: dict[str, Any] = {"name": name, "datatype": dtype, "shape": shape}
        if want_binary:
            blob = encode_bytes_tensor(value) if dtype == "BYTES" else value.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = list(value) if dtype == "BYTES" else np.ascontiguousarray(value).ravel()
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": outputs,
                            "parameters": parameters}
    if req_id is not None:
        head["id"] = req_id
    header = dumps(head)
    if not blobs:
        return Reply(header)
    return Reply(header + b"".join(blobs), content_type="application/octet-stream",
                 headers={"Inference-Header-Content-Length": str(len(header))})

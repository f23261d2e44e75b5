"""``--budget`` → training steps per student, re-fitted to what the last training really took.

A share of the budget goes to training; each trained candidate gets a part of it by its layer
count (a K × L stack: K·L layers, plus its refit). Steps are that time over the seconds one step
of one layer takes: first a guess, then measured on every finished training (its wall time over
its steps × layers, so the teacher's labelling and start-up are priced in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

TRAIN_SHARE = 0.6  # of the budget; the rest: quantisation, quality, profiles, served verification
BATCH = 32  # the commands' default batch size
FIRST_GUESS_S = 0.08  # one step of one MiniLM-sized layer, batch 32 × 64 tokens, on 2 CPU cores


def parse_duration(text: str) -> float:
    """``90s``, ``20m``, ``2h``, ``1h30m`` or plain seconds → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
            raise ConfigError(f"cannot read the budget {text!r}: use e.g. 90s, 20m, 2h or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"the budget must be positive, got {text!r}")
    return seconds


@dataclass(slots=True)
class TrainingBudget:
    seconds: float  # for all training
    layers_left: float  # layer-units still to train (a stack with its refit: 1.5 K·L)
    step_layer_s: float = FIRST_GUESS_S
    fixed_steps: int | None = None  # --max-steps: every student trains exactly this many
    max_texts: int | None = None  # transfer texts available (None: unbounded)

    def steps(self, layers: float) -> int:
        """Steps for a candidate of ``layers`` layer-units, from the time that is left."""
        if self.fixed_steps is not None:
            return self.fixed_steps
        share = self.seconds * layers / max(1, self.layers_left)
        return max(1, int(share / (self.step_layer_s * layers)))

    def flags(self, layers: float) -> dict[str, object]:
        """``--max-steps``, ``--n`` and ``--epochs`` for one training: one pass over fresh texts
        while the corpus lasts, more passes over all of it after."""
        steps = self.steps(layers)
        wanted = steps * BATCH
        n = wanted if self.max_texts is None else max(1, min(wanted, self.max_texts))
        epochs = max(1.0, round(wanted / n, 2))
        return {"n": n, "epochs": epochs, "max-steps": steps}

    def spent(self, layers: float, steps: int, seconds: float) -> None:
        """One training finished: take its time off the budget and learn the rate from it."""
        self.seconds = max(0.0, self.seconds - seconds)
        self.layers_left = max(0, self.layers_left - layers)
        if steps > 0 and layers > 0:
            self.step_layer_s = seconds / (steps * layers)

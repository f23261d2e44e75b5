"""The loop: build every candidate, measure its quality and capacity, verify the best, choose.

Resumable: a candidate's artifact is written all at once by its command (a folder with a
manifest is complete), and its figures are kept beside it in ``result.json``; a rerun skips
both. A candidate whose build fails is reported with its error, and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..artifact import MANIFEST_NAME, load_manifest, save_manifest, staged_out
from ..errors import BertserveError, ConfigError
from . import quality as q
from . import report
from .budget import TRAIN_SHARE, TrainingBudget
from .candidates import TEACHER, Candidate, Space, argv, candidates, command, default_transfer, shown
from .capacity import Layout, predicted, verified


@dataclass(slots=True)
class OptimizeOptions:
    min_quality: float = 0.99  # classifiers: share of the teacher's test accuracy; embedders: recall@10
    min_ood_quality: float | None = 0.97  # classifiers: share of its out-of-domain accuracy
    budget_s: float = 7200.0
    space: Space = field(default_factory=Space)
    layout: Layout = field(default_factory=Layout)
    verify: int = 3  # best candidates served and measured for real (and the teacher); 0: predict only
    max_steps: int | None = None  # every student trains exactly this many steps (else: by budget)
    target_rate: float | None = None  # also say how many replicas serve this rate
    eval_n: int = 1000
    corpus_n: int = 3000
    verify_step_s: float = 8.0
    verify_min_requests: int = 200
    threads: int | None = None  # intra-op threads of the quality runs
    progress: bool = True


@dataclass(slots=True)
class OptimizeResult:
    out: Path
    best: str | None
    report: Path
    rows: list[dict]


class _Run:
    def __init__(self, teacher: str | Path | None, out: Path, opts: OptimizeOptions) -> None:
        self.folder, self.manifest = load_manifest(teacher)
        if self.manifest.task not in ("classify", "embed"):
            raise ConfigError(f"bertserve optimize serves classifiers and embedders; {self.folder} is a "
                              f"{self.manifest.task} model")
        self.teacher = str(self.folder)
        self.out, self.opts = out, opts
        self.console = Console(quiet=not opts.progress)
        self.transfer = opts.space.transfer or default_transfer(self.manifest)
        self.space = dataclasses.replace(opts.space, transfer=self.transfer)
        self.cands = candidates(self.manifest, self.space)
        self.started = time.monotonic()

    # -- where things are -------------------------------------------------------------
    def dir(self, c: Candidate) -> Path:
        return self.out / "candidates" / c.name

    def artifact(self, c: Candidate) -> Path:
        return self.folder if c.step == "teacher" else self.dir(c) / "artifact"

    def built(self, c: Candidate) -> bool:
        return c.step == "teacher" or (self.artifact(c) / MANIFEST_NAME).exists()

    def _read(self, c: Candidate, name: str) -> dict | None:
        path = self.dir(c) / name
        return json.loads(path.read_text()) if path.exists() else None

    def _write(self, c: Candidate, name: str, data: dict) -> None:
        self.dir(c).mkdir(parents=True, exist_ok=True)
        tmp = self.dir(c) / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.dir(c) / name)

    def say(self, text: str) -> None:
        self.console.print(text)

    # -- steps --------------------------------------------------------------------------
    def build(self, c: Candidate, budget: TrainingBudget) -> dict:
        """Run the candidate's command (once); what ran and how long it took."""
        done = self._read(c, "build.json")
        if c.step == "teacher":
            return {"argv": None, "seconds": 0.0}
        if done is not None and self.built(c):
            return done
        source = next(s for s in self.cands if s.name == c.source)
        if not self.built(source):
            raise BertserveError(f"its source {source.name} was not built")
        units = c.layers * (1.5 if c.step == "stack" else 1.0)
        params = dict(c.params)
        if c.trained:
            params |= budget.flags(units)
        args = argv(Candidate(c.name, c.step, c.source, params), self.teacher, str(self.artifact(source)),
                    self.artifact(c))
        self.say(f"  [dim]$ {shown(args)}[/dim]")
        t0 = time.monotonic()
        shutil.rmtree(self.artifact(c), ignore_errors=True)
        self.dir(c).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(command(args), stdout=None if self.opts.progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise BertserveError(f"`{shown(args)}` failed: {' / '.join(tail) or proc.returncode}")
        if c.trained:
            budget.spent(units, int(params["max-steps"]), seconds)
        info = {"argv": args, "seconds": round(seconds, 1)}
        self._write(c, "build.json", info)
        return info

    def measure(self, c: Candidate, judge: q.Judge) -> dict:
        """Quality against the teacher and the planner's capacity (cached in result.json)."""
        done = self._read(c, "result.json")
        if done is not None and "quality" in done and "predicted" in done:
            return done
        enc = q.load(self.artifact(c), c.backend, c.precision, self.opts.threads)
        score = judge.score(enc).as_dict()
        del enc
        cap = predicted(self.artifact(c), c.backend, c.precision, self.opts.layout)
        row = {"quality": score, "predicted": cap}
        self._write(c, "result.json", row)
        return row

    def verify(self, c: Candidate, guess: float) -> float:
        done = self._read(c, "result.json") or {}
        if "served" in done:
            return float(done["served"])
        self.say(f"serving {c.name} for real (open-loop sweep around {guess:g} req/s)...")
        run = verified(self.artifact(c), c.serve_flags(), self.opts.layout, guess, self.dir(c) / "serve.log",
                       step_s=self.opts.verify_step_s, min_requests=self.opts.verify_min_requests,
                       progress=self.opts.progress)
        self._write(c, "result.json", {**done, "served": run["capacity"], "served_run": run})
        return float(run["capacity"])

    # -- the loop -----------------------------------------------------------------------
    def passes(self, row: dict) -> bool:
        """Above the floor; the teacher at fp32 is the reference, never the answer."""
        if row["name"] == TEACHER:
            return False
        s = row["quality"]
        ood_floor = self.opts.min_ood_quality if self.manifest.task == "classify" else None
        return s["value"] >= self.opts.min_quality and (ood_floor is None or s["ood"] is None
                                                        or s["ood"] >= ood_floor)

    def run(self) -> OptimizeResult:
        from ..bench.runner import machine
        from ..data import corpus as load_corpus

        opts = self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        trained = [c for c in self.cands if c.trained and not self.built(c)]
        units = sum(c.layers * (1.5 if c.step == "stack" else 1.0) for c in trained)
        available = sum(len(load_corpus(p.split(":")[0])) for p in self.transfer.split("+"))
        budget = TrainingBudget(opts.budget_s * TRAIN_SHARE, units, fixed_steps=opts.max_steps,
                                max_texts=available)
        self.say(f"[bold]optimize[/bold] {self.teacher}: {len(self.cands)} candidates, budget "
                 f"{opts.budget_s:.0f} s, SLO {opts.layout.slo_ms:g} ms → {self.out}")
        with self.console.status("the teacher's answers on the held-out sets..."):
            judge = q.Judge(q.load(self.folder, "onnxruntime", "fp32", opts.threads), self.manifest,
                            self.transfer, eval_n=opts.eval_n, corpus_n=opts.corpus_n)
        rows: list[dict] = []
        for i, c in enumerate(self.cands, 1):
            elapsed = time.monotonic() - self.started
            eta = elapsed / (i - 1) * (len(self.cands) - i + 1) if i > 1 else None
            self.say(f"[bold][{i}/{len(self.cands)}] {c.name}[/bold] · {elapsed:.0f} s elapsed"
                     + (f", about {eta:.0f} s to go" if eta is not None else ""))
            row: dict = {"name": c.name, "step": c.step,
                         "serve": shown(["serve", "ARTIFACT", *c.serve_flags()])}
            try:
                info = self.build(c, budget)
                row |= {"command": shown(info["argv"]) if info["argv"] else None, "seconds": info["seconds"]}
                row["serve"] = shown(["serve", str(self.artifact(c)), *c.serve_flags()])
                with self.console.status(f"measuring {c.name}: quality, profile, predicted capacity..."):
                    row |= self.measure(c, judge)
            except BertserveError as exc:
                self.say(f"  [red]{c.name} failed:[/red] {exc}")
                row |= {"error": str(exc), "quality": {"metric": "", "value": 0.0, "ood": None},
                        "predicted": 0.0}
            row["passes"] = "error" not in row and self.passes(row)
            self.say(f"  quality {row['quality']['value']:.4f}"
                     + (f", out of domain {row['quality']['ood']:.4f}" if row['quality'].get('ood') else "")
                     + f"; predicted {row['predicted']:g} req/s")
            rows.append(row)
        self.verify_best(rows)
        return self.choose(rows, machine())

    def verify_best(self, rows: list[dict]) -> None:
        if self.opts.verify <= 0:
            return
        ok = sorted((r for r in rows if r["passes"]), key=lambda r: -r["predicted"])
        picked = [r for r in rows if r["name"] == TEACHER] + ok[: self.opts.verify]
        for r in picked:
            c = next(c for c in self.cands if c.name == r["name"])
            try:
                r["served"] = self.verify(c, r["predicted"])
            except BertserveError as exc:
                self.say(f"  [red]serving {c.name} failed:[/red] {exc}")
                r["served_error"] = str(exc)

    def choose(self, rows: list[dict], machine: dict) -> OptimizeResult:
        opts = self.opts
        ok = [r for r in rows if r["passes"]]
        measured = [r for r in ok if r.get("served") is not None]
        pool = measured or ok
        key = "served" if measured else "predicted"
        best = max(pool, key=lambda r: r[key]) if pool else None
        layout = opts.layout
        result = {
            "teacher": self.teacher, "machine": f"{machine['cpu']}, {machine['cores']} cores",
            "slo_ms": layout.slo_ms, "layout": f"{layout.workers} worker(s) × {layout.threads} thread(s)",
            "min_quality": opts.min_quality,
            "min_ood_quality": opts.min_ood_quality if self.manifest.task == "classify" else None,
            "quality_note": self.quality_note(), "budget_s": opts.budget_s, "verify": opts.verify,
            "seconds": time.monotonic() - self.started, "transfer": self.transfer,
            "candidates": rows, "best": best["name"] if best else None,
        }
        if best is not None:
            c = next(c for c in self.cands if c.name == best["name"])
            result["best_serve"] = shown(["serve", str(self.out / "best"), *c.serve_flags()])
            if opts.target_rate:
                result["replicas"] = math.ceil(opts.target_rate / max(best[key], 1e-9))
            self.write_best(c, best)
        else:
            floor = f"quality ≥ {opts.min_quality:g}"
            if result["min_ood_quality"]:
                floor += f" and out-of-domain ≥ {opts.min_ood_quality:g}"
            top = max(rows, key=lambda r: r["quality"]["value"])
            result["reason"] = (f"none of {len(rows)} reaches {floor}; the best quality was {top['name']}'s "
                                f"{top['quality']['value']:.4f}")
        path = report.write(self.out, result)
        self.say(f"[green]wrote[/green] {path}")
        if best is None:
            raise ConfigError(f"{result['reason']} (report: {path}); lower --min-quality or raise --budget")
        return OptimizeResult(self.out, best["name"], path, rows)

    def quality_note(self) -> str:
        if self.manifest.task == "classify":
            return ("accuracy on the Rotten Tomatoes test split as a share of the teacher's; out of domain: "
                    "the same on 2,000 labelled tweets (data.ood_sentiment)")
        return (f"recall@10 of the teacher's nearest neighbours over {self.opts.corpus_n} texts of a source "
                f"the students never saw ({self.transfer} is the transfer set)")

    def write_best(self, c: Candidate, row: dict) -> None:
        with staged_out(self.out / "best", overwrite=True) as tmp:
            shutil.copytree(self.artifact(c), tmp, dirs_exist_ok=True)
            _, manifest = load_manifest(tmp)
            provenance = {**manifest.provenance, "optimize": {
                "candidate": c.name, "serve_flags": c.serve_flags(), "quality": row["quality"],
                "predicted": row["predicted"], "served": row.get("served")}}
            save_manifest(tmp, manifest.model_copy(update={"provenance": provenance}))


def optimize(teacher: str | Path | None, out: str | Path,
             opts: OptimizeOptions | None = None) -> OptimizeResult:
    """Build, measure and choose; see the module doc. Raises ConfigError (after writing the
    report) when no candidate meets the quality floor."""
    opts = opts or OptimizeOptions()
    if not 0 < opts.min_quality <= 1:
        raise ConfigError(f"--min-quality must be in (0, 1], got {opts.min_quality}")
    return _Run(teacher, Path(out), opts).run()

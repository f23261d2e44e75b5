"""`bertserve optimize` as a user runs it: a Rotten Tomatoes classifier teacher and the MiniLM embedder.

Issue 25's acceptance run, with the CLI only (child processes, so what is measured is what a user
gets):

1. ``bertserve finetune WORK/rt-teacher`` (defaults: the bundled MiniLM, one epoch of the RT train
   split) unless it is already there (``WORK``: ``--work``, ``benchmarks/.work/optimize``);
2. ``bertserve optimize WORK/rt-teacher WORK/rt-opt --slo-ms 50 --min-quality 0.99`` (the
   out-of-domain floor is the default 0.97), then ``bertserve optimize default WORK/minilm-opt
   --min-quality 0.90`` (recall@10 of the teacher's neighbours), each with its ``--budget``;
3. each run's ``report.md``, ``report.json`` and ``pareto.png`` copied to ``--out``/{rt,minilm}/,
   and ``--out``/optimize.md: the command, machine, date and both candidate tables.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/optimize.py           # about 1.5 h
    .venv/bin/python benchmarks/optimize.py --budget 3m --embed-budget 2m --extra='--max-steps 2' \\
        --extra='--verify 0' --work /tmp/opt-smoke --out /tmp/opt-smoke/results       # a smoke run

(The smoke run still fine-tunes the teacher: about 5 minutes.)

A rerun resumes (``optimize`` skips finished candidates); delete ``--work`` to start over. Keep the
machine otherwise idle: the served capacities are measured on its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import header  # benchmarks/provenance.py, beside this script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
BERTSERVE = [str(Path(sys.executable).parent / "bertserve")]  # the console script beside python


def run(args: list[str]) -> int:
    """Run ``bertserve ARGS``, its output on this console; return its exit code."""
    print("$ bertserve " + shlex.join(args), flush=True)
    return subprocess.run([*BERTSERVE, *args]).returncode


def optimize(name: str, teacher: str, work: Path, out: Path, options: list[str]) -> dict:
    """One optimize run; its report files copied under ``out/name``; its summary."""
    folder = work / f"{name}-opt"
    argv = ["optimize", teacher, str(folder), *options]
    t0 = time.perf_counter()
    code = run(argv)  # exits 1 when no candidate meets the floor: the report is still written
    seconds = time.perf_counter() - t0
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", "report.json", "pareto.png"):
        if (folder / f).exists():
            shutil.copy2(folder / f, dest / f)
    report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").exists() else {}
    return {"name": name, "command": "bertserve " + shlex.join(argv), "exit": code,
            "seconds": round(seconds), "best": report.get("best"), "report": f"{name}/report.md"}


def candidates_table(report_md: Path) -> list[str]:
    """The candidate table of an optimize report, as it wrote it."""
    lines = report_md.read_text().splitlines() if report_md.exists() else []
    return [line for line in lines if line.startswith("|")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "optimize", help="teacher and runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "optimize")
    parser.add_argument("--budget", default="50m", help="the classifier run's --budget")
    parser.add_argument("--embed-budget", default="25m", help="the embedder run's --budget")
    parser.add_argument("--extra", action="append", default=[],
                        help="more optimize options for both runs (repeatable, e.g. '--verify 2')")
    parser.add_argument("--skip-embedder", action="store_true")
    args = parser.parse_args()

    head = header()  # the command as invoked, before any child runs
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [word for option in args.extra for word in shlex.split(option)]
    teacher = args.work / "rt-teacher"
    runs = []
    if not (teacher / "bertserve.json").exists():
        t0 = time.perf_counter()
        if run(["finetune", str(teacher)]) != 0:
            sys.exit("finetune failed")
        print(f"teacher fine-tuned in {time.perf_counter() - t0:.0f} s", flush=True)
    runs.append(optimize("rt", str(teacher), args.work, args.out,
                         ["--slo-ms", "50", "--min-quality", "0.99", "--budget", args.budget, *extra]))
    if not args.skip_embedder:
        runs.append(optimize("minilm", "default", args.work, args.out,
                             ["--slo-ms", "50", "--min-quality", "0.90", "--budget", args.embed_budget,
                              *extra]))
    lines = ["# bertserve optimize: a classifier teacher and an embedder", "", *head, ""]
    for r in runs:
        lines += [f"## {r['name']}", "", f"- Run: `{r['command']}` (exit {r['exit']}, {r['seconds']} s)",
                  f"- Chosen: {r['best'] or 'none'}; the full report: [{r['report']}]({r['report']})", "",
                  *candidates_table(args.out / r["report"]), ""]
    (args.out / "optimize.md").write_text("\n".join(lines))
    (args.out / "optimize.json").write_text(json.dumps({"header": head, "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out / 'optimize.md'}")


if __name__ == "__main__":
    main()

"""Where and how a benchmark ran, for the header of its raw results (issue 22: every figure from its run).

Every script under benchmarks/ writes, beside its figures, what :func:`header` returns (or the
fields of :func:`provenance` in its JSON): the command as this process was invoked, the machine
(CPU model and the instruction sets that change the numbers, read from ``/proc/cpuinfo``; GPU
if one is visible) and the date. Standard library only, so it costs nothing to import; it also
holds :func:`free_port`, which the scripts that start servers share.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# CPU flags that change what the backends run (INT8 dot products, bf16, AMX tiles)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# environment variables that change a run's figures, written before the command when set
ENV_PREFIXES = ("BERTSERVE_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ORT_", "CUDA_VISIBLE_DEVICES")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the architecture where there is none)."""
    return _cpuinfo()[0]


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`FLAGS` this CPU has."""
    flags = _cpuinfo()[1]
    return {f: f in flags for f in FLAGS}


def has_amx() -> bool:
    return any(v for k, v in cpu_flags().items() if k.startswith("amx_"))


def cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpus() -> list[str] | None:
    """Names of the visible NVIDIA GPUs ([] for none); None when that cannot be told.

    Asks torch if the script has imported it already (never imports it), else ``nvidia-smi -L``;
    no torch and no nvidia-smi on PATH gives None (the header then says nothing about a GPU).
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            cuda = torch.cuda
            if not cuda.is_available():
                return []
            return [cuda.get_device_name(i) for i in range(cuda.device_count())]
        except Exception:  # a broken CUDA install: fall back to nvidia-smi
            pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.splitlines()
            if line.startswith("GPU ") and ":" in line]


def machine() -> dict[str, object]:
    """The machine as JSON: CPU model and flags, usable and total cores, GPUs, Python, OS."""
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": cores(), "cpu_count": os.cpu_count(),
            "gpus": gpus(), "python": platform.python_version(), "platform": platform.platform()}


def describe_machine(m: dict[str, object] | None = None) -> str:
    """One line: ``Intel Xeon …, 2 cores (of 4); avx512f yes, …, amx_int8 no; no GPU visible; Python …``."""
    m = m or machine()  # a dict of an older result may lack the newer keys: those parts are left out
    total = m.get("cpu_count", m["cores"])
    parts = [f"{m['cpu']}, {m['cores']} cores" + (f" (of {total})" if total != m["cores"] else "")]
    flags = m.get("cpu_flags")
    if isinstance(flags, dict):
        parts.append(", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items() if k != "avx2"))
    if "gpus" in m:
        gpu = m["gpus"]
        names = [str(g) for g in gpu] if isinstance(gpu, list) else None
        parts.append("GPU not checked (no torch loaded, no nvidia-smi)" if names is None
                     else "GPU " + ", ".join(names) if names else "no GPU visible")
    return "; ".join([*parts, f"Python {m['python']}"])


def relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (a shorter, portable command)."""
    full = Path(path).absolute()  # not resolve(): .venv/bin/python is a link out of the repository
    if not Path(path).is_absolute() and not full.exists():  # "-c", "-m", a flag: not a path
        return path
    try:
        return str(full.relative_to(REPO))
    except ValueError:
        return path


def _launcher() -> list[str]:
    """The parent's command line when it is ``flock`` (the heavy-run lock), else nothing."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not args or Path(args[0]).name != "flock":
        return []
    # flock LOCK CMD ARGS…: keep flock, its options and the lock file, not the command it runs
    out, rest = [args[0]], iter(args[1:])
    for a in rest:
        out.append(a)
        if a in ("-w", "--wait", "--timeout", "-E", "--conflict-exit-code"):
            out.append(next(rest, ""))
        elif not a.startswith("-"):
            break
    return out


def command() -> str:
    """This process's command line as it was invoked: the environment variables that change the
    figures (when set), ``flock …`` when that started it, the interpreter and ``sys.argv``, with
    paths inside the repository written relative to its root (run from there)."""
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)]
    argv = [relative(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else list(sys.argv)
    words = [*_launcher(), *(["env", *env] if env else []), relative(sys.executable), *argv]
    return shlex.join(words)


def now() -> str:
    """The current UTC time, ``YYYY-MM-DD HH:MM UTC``."""
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def provenance() -> dict[str, object]:
    """``command``, ``date`` and ``machine`` for a JSON result."""
    return {"command": command(), "date": now(), "machine": machine()}


def header(prov: dict[str, object] | None = None) -> list[str]:
    """Markdown lines ``- Command: …``, ``- Machine: …``, ``- Date: …`` (from ``prov`` if given)."""
    p = prov or provenance()
    machine_info = p["machine"]
    assert isinstance(machine_info, dict)
    return [f"- Command: `{p['command']}`", f"- Machine: {describe_machine(machine_info)}",
            f"- Date: {p['date']}"]


def free_port() -> int:
    """A TCP port free on loopback now (for a server this script starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

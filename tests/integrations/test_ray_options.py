"""Ray placement options and artifact packing: pure functions, no Ray needed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from bertserve.config import ServerSettings
from bertserve.integrations.ray_serve import RayServeOptions, pack_folder, replica_settings, unpack_folder


def test_fixed_replicas_map_to_ray_deployment_options() -> None:
    opts = RayServeOptions(num_replicas=3, num_cpus=0.5, num_gpus=0.25).deployment_options()
    assert opts["num_replicas"] == 3
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert "autoscaling_config" not in opts


def test_no_fixed_count_means_autoscaling() -> None:
    opts = RayServeOptions(num_replicas=None, min_replicas=2, max_replicas=8,
                           target_ongoing_requests=4).deployment_options()
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 8,
                                          "target_ongoing_requests": 4}


def test_impossible_autoscaling_bounds_are_rejected() -> None:
    with pytest.raises(ValidationError, match="min_replicas"):
        RayServeOptions(num_replicas=None, min_replicas=5, max_replicas=2)


def test_replica_settings_leave_host_and_port_to_the_proxy() -> None:
    kept = replica_settings(ServerSettings(port=9999, threads=1, max_batch_size=8))
    assert "port" not in kept and "host" not in kept
    assert kept["threads"] == 1 and kept["max_batch_size"] == 8


def test_packed_artifact_unpacks_identically_and_once(tmp_path: Path) -> None:
    src = tmp_path / "art"
    (src / "tokenizer").mkdir(parents=True)
    (src / "bertserve.json").write_text('{"name": "x"}')
    (src / "tokenizer" / "tokenizer.json").write_bytes(b"\x00\x01tok")
    data = pack_folder(src)
    out = unpack_folder(data, tmp_path / "cache")
    assert (out / "bertserve.json").read_text() == '{"name": "x"}'
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == b"\x00\x01tok"
    assert unpack_folder(data, tmp_path / "cache") == out


def test_unpacking_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        unpack_folder(buf.getvalue(), tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()


def test_unset_workers_and_threads_follow_the_replicas_cpus() -> None:
    assert {k: replica_settings(ServerSettings(), 4)[k] for k in ("workers", "threads")} == \
        {"workers": 4, "threads": 1}
    assert {k: replica_settings(ServerSettings(workers=2), 4)[k] for k in ("workers", "threads")} == \
        {"workers": 2, "threads": 2}
    assert {k: replica_settings(ServerSettings(), 0.5)[k] for k in ("workers", "threads")} == \
        {"workers": 1, "threads": 1}


class _Engine:
    def __init__(self) -> None:
        self.ready = False
        self.error: str | None = None


async def _lifespan(gate, engine: _Engine, flip) -> list[dict]:  # type: ignore[no-untyped-def]
    import asyncio

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append({**message, "engine_ready": engine.ready})

    async def receive() -> dict:
        return {"type": "lifespan.startup"}

    async def flipper() -> None:
        await asyncio.sleep(0.05)
        flip(engine)

    await asyncio.gather(gate({"type": "lifespan"}, receive, send), flipper())
    return sent


async def _inner(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    await receive()
    await send({"type": "lifespan.startup.complete"})


async def test_ready_gate_holds_startup_until_the_engine_is_ready() -> None:
    from bertserve.integrations.ray_serve import ReadyGate

    engine = _Engine()
    sent = await _lifespan(ReadyGate(_inner, engine, poll_s=0.01), engine,
                           lambda e: setattr(e, "ready", True))
    assert sent == [{"type": "lifespan.startup.complete", "engine_ready": True}]


async def test_ready_gate_fails_startup_when_the_model_cannot_load() -> None:
    from bertserve.integrations.ray_serve import ReadyGate

    engine = _Engine()
    sent = await _lifespan(ReadyGate(_inner, engine, poll_s=0.01), engine,
                           lambda e: setattr(e, "error", "no such model"))
    assert sent[0]["type"] == "lifespan.startup.failed" and sent[0]["message"] == "no such model"

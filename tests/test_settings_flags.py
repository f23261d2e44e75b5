"""One settings source: every ServerSettings field is exactly one flag of ``serve`` and
``serve-ray`` and one BERTSERVE_* variable, with the field's default, and both reach the server."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

import bertserve.serving.http.server as http_server
from bertserve.cli import _register, app
from bertserve.config import ServerSettings

# A valid value for every field, none of them its default: a field added without one fails here.
SAMPLES: dict[str, object] = {
    "model": "some/artifact", "model_name": "m", "backend": "openvino", "precision": "int8",
    "device": "cuda:1", "auto_measure": False,
    "host": "0.0.0.0", "port": 9001, "log_level": "info", "workers": 3,
    "threads": 2, "student_threads": 2, "worker_spin_ms": 1.5, "hot_spin_ms": 2.5, "widen": True,
    "worker_nice": 5, "slo_ms": 42.0, "max_batch_size": 8, "max_batch_tokens": 1024, "bin_width": 8,
    "pipeline_depth": 3, "profile_max_tokens": 512, "profile_repeats": 2, "max_queue_requests": 10,
    "max_queue_tokens": 2000, "max_texts_per_request": 7, "max_tokens_per_request": 999,
    "max_chars_per_text": 500, "max_body_bytes": 4096, "truncate": False, "min_students": 2,
    "adaptive_students": False, "student_cut": 0.7, "student_restore": 0.3,
    "api_key": ["k1", "k2"], "api_key_file": "keys.txt", "keys_for_health": True, "request_log": "json",
}


def command(name: str):
    _register()
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def as_args(values: dict[str, object]) -> list[str]:
    args = [str(values["model"])] if "model" in values else []
    for name, value in values.items():
        flag = name.replace("_", "-")
        if name == "model":
            continue
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, list):  # a repeatable flag
            args += [a for v in value for a in (f"--{flag}", str(v))]
        else:
            args += [f"--{flag}", str(value)]
    return args


def test_every_field_has_a_sample() -> None:
    assert set(SAMPLES) == set(ServerSettings.model_fields)
    for name, value in SAMPLES.items():
        field = ServerSettings.model_fields[name]
        assert value != (field.default_factory() if field.default_factory else field.default), name


@pytest.mark.parametrize("name", ["serve", "serve-ray"])
def test_every_setting_is_one_flag_with_its_variable_and_default(name: str) -> None:
    params = command(name).params
    for field_name, field in ServerSettings.model_fields.items():
        found = [p for p in params if p.name == field_name]
        assert len(found) == 1, f"{field_name}: {len(found)} parameters"
        param = found[0]
        assert param.default is None  # not given → the variable, else the field's default
        assert f"BERTSERVE_{field_name.upper()}" in param.help
        assert field.description and field.description in param.help
        if field_name == "model":
            assert param.param_type_name == "argument"
            continue
        dashed = "--" + field_name.replace("_", "-")
        assert [o for o in param.opts if o.startswith("--")] == [dashed]
        if field.default is None or field.default_factory is not None:
            assert param.show_default is False
        elif isinstance(field.default, bool):
            assert param.show_default == ("on" if field.default else "off")
        else:
            assert param.show_default == str(field.default)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ServerSettings]:
    seen: list[ServerSettings] = []
    monkeypatch.setattr(http_server, "serve", seen.append)
    for name in ServerSettings.model_fields:
        monkeypatch.delenv(f"BERTSERVE_{name.upper()}", raising=False)
    return seen


def test_flags_reach_the_server(captured: list[ServerSettings]) -> None:
    result = CliRunner().invoke(app, ["serve", *as_args(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert {n: getattr(captured[0], n) for n in SAMPLES} == SAMPLES


def test_variables_reach_the_server_and_a_flag_wins(captured: list[ServerSettings],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SAMPLES.items():
        text = str(value).lower() if isinstance(value, bool) else ",".join(value) \
            if isinstance(value, list) else str(value)
        monkeypatch.setenv(f"BERTSERVE_{name.upper()}", text)
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert {n: getattr(captured[0], n) for n in SAMPLES} == SAMPLES
    assert CliRunner().invoke(app, ["serve", "--slo-ms", "100", "--truncate"]).exit_code == 0
    assert captured[1].slo_ms == 100.0 and captured[1].truncate is True  # the flag, even at the default


def test_nothing_given_is_the_field_defaults(captured: list[ServerSettings]) -> None:
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert captured[0] == ServerSettings()

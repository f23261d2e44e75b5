"""MkDocs hook: the parts of the docs that are generated from the code at build time.

A page asks for a generated block with a marker on a line of its own:

    <!-- bertserve:cli -->       every command, argument and flag of ``bertserve`` (the click tree)
    <!-- bertserve:settings -->  every ``ServerSettings`` field with its BERTSERVE_* variable
    <!-- bertserve:metrics -->   every Prometheus metric the server declares
    <!-- bertserve:layout -->    the source tree, one line per module from its docstring
    <!-- bertserve:layers -->    the import layers declared in pyproject.toml
    <!-- bertserve:errors -->    the exception tree and the HTTP status of each error class

Nothing here names a module path below ``bertserve`` except ``bertserve.cli``: the modules that
define ``ServerSettings`` and the metrics are found by reading the source, so moving them does
not break the docs. A marker that cannot be rendered fails the build (a silent gap would not).
"""

from __future__ import annotations

import ast
import html
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

MARKER = re.compile(r"^<!-- bertserve:([a-z]+) -->$", re.MULTILINE)


# -- helpers ----------------------------------------------------------------------------------


def package_dir() -> Path:
    spec = importlib.util.find_spec("bertserve")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bertserve is not importable: install it (pip install -e .) before mkdocs build")
    return Path(next(iter(spec.submodule_search_locations)))


def module_name(path: Path) -> str:
    rel = path.relative_to(package_dir().parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_class(name: str) -> str:
    """The dotted module that defines class ``name`` somewhere under bertserve (read, not imported)."""
    hits = []
    for path in sorted(package_dir().rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
            hits.append(module_name(path))
    if len(hits) != 1:
        raise RuntimeError(f"expected one class {name} under bertserve, found {hits or 'none'}")
    return hits[0]


def text(s: str) -> str:
    """Plain help text as Markdown: `code` spans kept, everything else escaped."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", s)):
        if i % 2:
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]])", r"\\\1", part))
    return "".join(out)


def cell(s: str) -> str:
    """Text for a table cell: no pipes, no line breaks."""
    return text(s).replace("|", "&#124;").replace("\n", " ")


def rst_to_md(s: str) -> str:
    s = re.sub(r":[a-z]+:`~?([^`]+)`", r"``\1``", s)  # :mod:`x` -> ``x``
    return s.replace("``", "`")


def first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return rst_to_md(" ".join(doc.strip().split("\n\n")[0].split()))


# -- the CLI reference ------------------------------------------------------------------------


def cli_group():
    import typer.main

    cli = importlib.import_module("bertserve.cli")
    register = getattr(cli, "_register", None)
    if register is not None:
        register()
    else:  # the commands register on import of their modules
        for name in getattr(cli, "COMMAND_MODULES", ()):
            importlib.import_module(name)
    return typer.main.get_command(cli.app)


def render_cli() -> str:
    root = cli_group()
    lines: list[str] = []
    root_ctx = root.make_context("bertserve", [], resilient_parsing=True)
    lines += [text(root.help or ""), ""]
    lines += ["| command | what it does |", "|---|---|"]
    for path, cmd, _ctx in walk(root, root_ctx, "bertserve"):
        if path != "bertserve":
            anchor = path.removeprefix("bertserve ").replace(" ", "-")
            lines.append(f"| [`{path}`](#{anchor}) | {cell(cmd.get_short_help_str(limit=200))} |")
    lines.append("")
    for path, cmd, ctx in walk(root, root_ctx, "bertserve"):
        if path == "bertserve":
            continue
        lines += render_command(path, cmd, ctx)
    return "\n".join(lines)


def walk(cmd, ctx, path):
    yield path, cmd, ctx
    for name in sorted(getattr(cmd, "commands", {})):
        sub = cmd.commands[name]
        if sub.hidden:
            continue
        sub_ctx = sub.make_context(name, [], resilient_parsing=True, parent=ctx)
        yield from walk(sub, sub_ctx, f"{path} {name}")


def render_command(path: str, cmd, ctx) -> list[str]:
    anchor = path.removeprefix("bertserve ").replace(" ", "-")
    lines = [f"## `{path}` {{ #{anchor} }}", ""]
    for para in (cmd.help or "").strip().split("\n\n"):
        para = " ".join(line for line in para.split("\n") if line.strip() != "\b")
        if para.strip():
            lines += [text(" ".join(para.split())), ""]
    lines += ["```text", cmd.get_usage(ctx), "```", ""]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]
    # typer groups options under rich_help_panel headings in --help; keep those groups
    groups: dict[str, list] = {}
    for p in params:
        default = "Arguments" if p.param_type_name == "argument" else "Options"
        groups.setdefault(getattr(p, "rich_help_panel", None) or default, []).append(p)
    for title, group in groups.items():
        lines += [f"**{text(title)}**", ""]
        for p in group:
            record = p.get_help_record(ctx)
            name, help_text = record if record else (p.name, p.help or "")
            lines.append(f"- `{name}`" + (f": {text(' '.join(help_text.split()))}" if help_text else ""))
        lines.append("")
    return lines


# -- settings, metrics, layout ---------------------------------------------------------------


def render_settings() -> str:
    module = importlib.import_module(find_class("ServerSettings"))
    settings = module.ServerSettings
    prefix = settings.model_config.get("env_prefix", "")
    serve_flags = {p.name: (p.opts[0] if p.param_type_name == "option" else (p.metavar or p.name).upper())
                   for p in cli_group().commands["serve"].params}
    lines = [f"Read by `{module.__name__}.ServerSettings`.", "",
             "| variable | default | `serve` flag | meaning |", "|---|---|---|---|"]
    for name, field in settings.model_fields.items():
        default = "—" if field.default is None else f"`{field.default!r}`"
        flag = f"`{serve_flags[name]}`" if name in serve_flags else "— (variable only)"
        lines.append(f"| `{prefix}{name.upper()}` | {default} | {flag} | {cell(field.description or '')} |")
    return "\n".join(lines)


METRIC_TYPES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
                "CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}


def render_metrics() -> str:
    module = find_class("Metrics")
    path = package_dir().parent.joinpath(*module.split(".")).with_suffix(".py")
    rows = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and len(node.args) >= 2):
            continue
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if func not in METRIC_TYPES or not all(isinstance(a, ast.Constant) for a in node.args[:2]):
            continue
        name, doc = node.args[0].value, node.args[1].value
        labels_node = node.args[2] if len(node.args) > 2 else next(
            (k.value for k in node.keywords if k.arg in ("labels", "labelnames")), None)
        labels = [e.value for e in labels_node.elts] if isinstance(labels_node, ast.List | ast.Tuple) else []
        kind = METRIC_TYPES[func]
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"  # prometheus_client exposes counters with this suffix
        rows.append((name, kind, labels, doc))
    if not rows:
        raise RuntimeError(f"no metrics found in {module}")
    lines = [f"Declared in `{module}`.", "", "| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, kind, labels, doc in sorted(rows):
        lines.append(f"| `{name}` | {kind} | {', '.join(f'`{x}`' for x in labels) or '—'} | {cell(doc)} |")
    return "\n".join(lines)


def docstring(path: Path) -> str:
    return first_paragraph(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))))


def render_layout() -> str:
    root = package_dir()
    lines = ["| path | what it holds |", "|---|---|"]

    def row(path: Path, label: str) -> None:
        lines.append(f"| `{label}` | {cell(docstring(path)) or '—'} |")

    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            row(entry / "__init__.py", f"{entry.name}/")
            for sub in sorted(entry.rglob("*.py")):
                rel = sub.relative_to(entry)
                if sub.name == "__init__.py":
                    if rel.parent != Path("."):
                        row(sub, f"{entry.name}/{rel.parent.as_posix()}/")
                    continue
                if sub.name != "__main__.py":
                    row(sub, f"{entry.name}/{rel.as_posix()}")
        elif entry.suffix == ".py" and entry.name != "__init__.py":
            row(entry, entry.name)
    return "\n".join(lines)


def render_layers(config) -> str:
    pyproject = Path(config["config_file_path"]).parent / "pyproject.toml"
    contracts = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get(
        "importlinter", {}).get("contracts", [])
    if not contracts:
        return "_No import contracts are declared in `pyproject.toml`._"
    lines = []
    for c in contracts:
        lines.append(f"- **{text(c.get('name', c.get('type', '')))}**")
        if c.get("type") == "layers":
            lines.append("  (top to bottom; a module imports only from layers below its own): "
                         + " → ".join(f"`{layer}`" for layer in c.get("layers", [])))
        elif c.get("type") == "forbidden":
            lines.append(f"  — {', '.join(f'`{m}`' for m in c.get('source_modules', []))} never import "
                         + ", ".join(f"`{m}`" for m in c.get("forbidden_modules", [])))
    return "\n".join(lines)


def render_errors() -> str:
    """Every error class, its parent, and the HTTP status and ``kind`` it carries in the code."""
    module = importlib.import_module(find_class("BertserveError"))
    base = module.BertserveError
    lines = ["| class | subclass of | HTTP status | `kind` | meaning |", "|---|---|---|---|---|"]
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, base):
            parent = obj.__mro__[1].__name__ if obj is not base else "Exception"
            doc = first_paragraph(obj.__doc__) if obj.__doc__ else ""
            lines.append(f"| `{obj.__name__}` | `{parent}` | {getattr(obj, 'status_code', '')} "
                         f"| `{getattr(obj, 'kind', '')}` | {cell(doc)} |")
    return "\n".join(lines)


# -- the hook ---------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page, config, files) -> str:
    renderers = {"cli": render_cli, "settings": render_settings, "metrics": render_metrics,
                 "layout": render_layout, "errors": render_errors, "layers": lambda: render_layers(config)}

    def replace(match: re.Match) -> str:
        kind = match.group(1)
        if kind not in renderers:
            raise ValueError(f"{page.file.src_path}: unknown marker bertserve:{kind}")
        return renderers[kind]()

    return MARKER.sub(replace, markdown)

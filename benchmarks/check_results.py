"""Check that every number in benchmarks/RESULTS.md's tables comes from a committed raw result.

    .venv/bin/python benchmarks/check_results.py          # prints the problems, exits 1 if any

Convention (RESULTS.md):

- Each ``## `` section after the summary belongs to one benchmark script and names it, and the raw
  files it wrote, in one line of this form (paths relative to ``benchmarks/``)::

      Script: `benchmarks/latency.py` · raw: `results/latency_1t.md`, `results/latency_2t.md`

  ``raw: none`` says the script's runs left no committed raw output; such a section may hold no
  table. A section also says how the script was invoked (a line or block with ``Command``), on
  which machine (``Machine``) and when (a ``YYYY-MM-DD`` date).
- The summary section (the first ``## `` section) holds no ``Script:`` line; its table has a
  ``script`` column whose code spans name scripts, and each row is checked against the raw files
  of every section of those scripts.

Rules of the check (what counts as a number, what is left out):

1. Tables are runs of lines starting with ``|`` outside fenced code blocks. The header row and
   the ``|---|`` row are not checked; nor are columns whose header is ``issue``, ``status``,
   ``script`` or contains ``target`` (they name goals and verdicts, not measurements).
2. In a checked cell, code spans (`` `...` ``, commands and test names) and link targets
   (``](...)``) are dropped, and ``*``/``_`` emphasis is ignored.
3. A number token is a run of ASCII digits with an optional decimal part and an optional
   exponent (``1.90``, ``13.6``, ``450``, ``1e-5``); thousands separators are dropped
   (``2,239`` is ``2239``); signs, ``%`` and ``×`` are not part of it. A token touching a letter
   or underscore is part of a name, not a figure (``p99``, ``2x1``, ``int8``, ``1L``, ``b16``),
   and is not checked. Every other token is checked, small integers included.
4. A token passes when the same string occurs as a number token in the text of one of the raw
   files of the row's section(s) (tokenised the same way, but letters may touch: ``13.0ms``
   holds ``13.0``). Raw text is the file as committed, minus the parts a person typed rather than
   the script wrote: in a Markdown raw file, a section headed ``Notes`` or ``Reading it`` (to the
   next heading of the same or a higher level), e.g. ``peers/run.py --note`` lines.
5. Every named raw file must exist, and every named script must exist (``bertserve bench`` is
   the CLI of ``src/bertserve/bench``). Every benchmark script in ``benchmarks/`` and
   ``benchmarks/peers/run.py`` has a section.
6. Outside the summary, each table is a copy of a table the section's raw Markdown files hold
   (after the typed parts are removed): the same header row, and every other row one of that
   table's rows (rows may be left out, none added or edited).
7. Derived tables (``results/*.md`` rendered from a raw JSON by ``benchmarks/tables.py``) must
   be what ``tables.py`` renders from that JSON now.

HISTORY.md is history and is not checked.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_MD = BENCH / "RESULTS.md"

# Scripts that are benchmarks (each needs a section); helpers are left out.
NOT_BENCHMARKS = {"check_results.py", "tables.py", "naive_server.py", "provenance.py"}
CLI_SCRIPTS = {"bertserve bench": ROOT / "src" / "bertserve" / "bench"}
UNCHECKED_HEADERS = ("issue", "status", "script")
# Parts of raw Markdown files that a person typed after the run (rule 4): `peers/run.py --note`
# lines, the "Reading it" appended to results/planner.md, the "Later runs" appended to bench.md.
TYPED_HEADINGS = ("notes", "reading it", "later runs")

# A figure in a table: digits not touching a letter, '_' or another digit/point.
_FIGURE = re.compile(
    r"(?<![A-Za-z0-9_.,])((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)(?![A-Za-z0-9_])"
)
# A number in raw text: letters may touch it.
_RAW_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?")
_THOUSANDS = re.compile(r"(?<![0-9,])[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9])")
_CODE = re.compile(r"`[^`]*`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_SCRIPT_LINE = re.compile(r"^Script:\s*`([^`]+)`\s*·\s*raw:\s*(.+)$")
_DATE = re.compile(r"\b20[0-9]{2}-[0-9]{2}-[0-9]{2}\b")


@dataclass
class Section:
    title: str
    line: int
    lines: list[tuple[int, str]] = field(default_factory=list)
    script: str | None = None
    raw: list[str] = field(default_factory=list)


def figures(cell: str) -> list[str]:
    """The number tokens of a table cell that must come from a raw file (rules 2 and 3)."""
    text = _LINK_TARGET.sub("]", _CODE.sub(" ", cell)).replace("*", "")
    return [m.replace(",", "") for m in _FIGURE.findall(text)]


def strip_typed(text: str) -> str:
    """Markdown raw text without the sections a person typed (rule 4)."""
    out, skip_level = [], 0
    for line in text.splitlines():
        m = re.match(r"^(#+)\s+(.*)", line)
        if m:
            level = len(m.group(1))
            if skip_level and level <= skip_level:
                skip_level = 0
            if not skip_level and m.group(2).strip().lower().startswith(TYPED_HEADINGS):
                skip_level = level
                continue
        if not skip_level:
            out.append(line)
    return "\n".join(out)


def raw_numbers(text: str) -> set[str]:
    """Every number token of a raw file's text, with and without thousands separators."""
    found = set(_RAW_NUMBER.findall(text))
    found |= {m.replace(",", "") for m in _THOUSANDS.findall(text)}
    return found


def split_sections(text: str) -> list[Section]:
    sections = [Section("(preamble)", 1)]
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append(Section(line[3:].strip(), n))
            continue
        sections[-1].lines.append((n, "" if fenced or line.startswith("```") else line))
    return sections


def tables(lines: list[tuple[int, str]]) -> list[list[tuple[int, list[str]]]]:
    found, current = [], []
    for n, line in lines:
        if line.lstrip().startswith("|"):
            current.append((n, [c.strip() for c in line.strip().strip("|").split("|")]))
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def _row(cells: list[str]) -> str:
    return " | ".join(cells)


def _script_path(script: str) -> Path:
    return CLI_SCRIPTS.get(script, ROOT / script)


def check(results_md: Path = RESULTS_MD, bench_dir: Path | None = None,
          require_all_scripts: bool = True) -> list[str]:
    """Problems with ``results_md``: each a ``RESULTS.md:LINE: ...`` string; empty when it passes."""
    bench_dir = bench_dir or results_md.parent
    name = results_md.name
    problems: list[str] = []
    sections = split_sections(results_md.read_text())
    raw_cache: dict[str, set[str] | None] = {}
    raw_tables: dict[str, list[list[str]]] = {}

    def tables_of(rel: str) -> list[list[str]]:
        if rel not in raw_tables:
            path = bench_dir / rel
            found: list[list[str]] = []
            if path.is_file() and path.suffix == ".md":
                lines = [(0, line) for line in strip_typed(path.read_text()).splitlines()]
                found = [[_row(cells) for _, cells in t] for t in tables(lines)]
            raw_tables[rel] = found
        return raw_tables[rel]

    def numbers_of(rel: str) -> set[str] | None:
        if rel not in raw_cache:
            path = bench_dir / rel
            if not path.is_file():
                raw_cache[rel] = None
            else:
                text = path.read_text(errors="replace")
                raw_cache[rel] = raw_numbers(strip_typed(text) if path.suffix == ".md" else text)
        return raw_cache[rel]

    for sec in sections:
        for n, line in sec.lines:
            m = _SCRIPT_LINE.match(line.strip())
            if line.strip().startswith("Script:") and not m:
                problems.append(f"{name}:{n}: malformed Script line (want Script: `S` · raw: `F`, ...)")
            if m:
                if sec.script is not None:
                    problems.append(f"{name}:{n}: a second Script line in section {sec.title!r}")
                sec.script = m.group(1)
                sec.raw = [] if m.group(2).strip() == "none" else _CODE.findall(m.group(2))
                sec.raw = [r.strip("`") for r in sec.raw]
                if not _script_path(sec.script).exists():
                    problems.append(f"{name}:{n}: script {sec.script!r} does not exist")
                for rel in sec.raw:
                    if numbers_of(rel) is None:
                        problems.append(f"{name}:{n}: raw file {rel!r} does not exist")

    by_script: dict[str, list[str]] = {}
    for sec in sections:
        if sec.script:
            by_script.setdefault(sec.script, []).extend(sec.raw)

    summary = sections[1] if len(sections) > 1 else None
    for sec in sections[1:]:
        body = "\n".join(line for _, line in sec.lines)
        if sec is not summary:
            if sec.script is None:
                problems.append(f"{name}:{sec.line}: section {sec.title!r} names no script (Script: line)")
                continue
            for word in ("Command", "Machine"):
                if word not in body:
                    problems.append(f"{name}:{sec.line}: section {sec.title!r} does not say its {word}")
            if not _DATE.search(body):
                problems.append(f"{name}:{sec.line}: section {sec.title!r} gives no date (YYYY-MM-DD)")
        elif sec.script is not None:
            problems.append(f"{name}:{sec.line}: the summary names a script; give a script column instead")
        for table in tables(sec.lines):
            header = [h.replace("*", "").strip().lower() for h in table[0][1]]
            checked = [not (h in UNCHECKED_HEADERS or "target" in h) for h in header]
            script_col = header.index("script") if "script" in header else None
            if sec is not summary and not sec.raw:
                problems.append(f"{name}:{table[0][0]}: a table in a section with no raw file")
                continue
            if sec is not summary:
                rows = [_row(cells) for _, cells in table]
                copies = [t for rel in sec.raw for t in tables_of(rel) if t and t[0] == rows[0]]
                if not copies:
                    problems.append(f"{name}:{table[0][0]}: no raw file of the section has a table "
                                    f"with this header")
                for (n, _), row in zip(table[2:], rows[2:], strict=True):
                    if copies and not any(row in t[2:] for t in copies):
                        problems.append(f"{name}:{n}: row {row[:60]!r} is in no raw table with this header")
            for n, cells in table[2:]:
                if sec is summary:
                    if script_col is None or script_col >= len(cells):
                        problems.append(f"{name}:{n}: a summary row without a script column")
                        continue
                    raws = []
                    for script in (s.strip("`") for s in _CODE.findall(cells[script_col])):
                        if script not in by_script:
                            problems.append(f"{name}:{n}: script {script!r} has no section")
                        raws += by_script.get(script, [])
                else:
                    raws = sec.raw
                pools = [p for p in (numbers_of(r) for r in raws) if p is not None]
                for i, cell in enumerate(cells):
                    if i < len(checked) and not checked[i]:
                        continue
                    for tok in figures(cell):
                        if not any(tok in pool for pool in pools):
                            col = header[i] if i < len(header) else f"column {i + 1}"
                            problems.append(f"{name}:{n}: {tok} ({col!r}, row {cells[0]!r}) "
                                            f"is in none of {', '.join(raws) or 'no raw file'}")

    if require_all_scripts:
        wanted = {f"benchmarks/{p.name}" for p in bench_dir.glob("*.py") if p.name not in NOT_BENCHMARKS}
        wanted |= {"benchmarks/peers/run.py", "bertserve bench"}
        for script in sorted(wanted - set(by_script)):
            problems.append(f"{name}: no section for {script}")
        problems += check_derived(bench_dir)
    return problems


def check_derived(bench_dir: Path) -> list[str]:
    """Rule 6: the derived tables are what benchmarks/tables.py renders from their JSON now."""
    path = bench_dir / "tables.py"
    spec = importlib.util.spec_from_file_location("bertserve_benchmarks_tables", path)
    derived = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derived)
    problems = []
    for out, text in derived.render_all(bench_dir / "results").items():
        path = bench_dir / "results" / out
        if not path.is_file() or path.read_text() != text:
            problems.append(f"results/{out} is not what benchmarks/tables.py renders (run it)")
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)" if problems else "every table figure is in its raw result")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

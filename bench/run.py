"""`make bench`: run the benchmark sections and write docs/benchmarks.md and docs/benchmarks.json.

Each section is a module in this package with `KEY`, `TITLE` and `run(options) -> SectionResult`
(a markdown body, raw numbers and the targets it checks). Adding a benchmark means adding a module
and one line to `SECTIONS`.

    python -m bench.run                      # every section, full counts → docs/
    python -m bench.run --only overhead      # one section; the others are kept from the last run
    python -m bench.run --quick              # smoke run with tiny counts → build/bench-quick/
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness import REPO_ROOT, BenchOptions, SectionResult, machine_info, md_table, verdict

SECTIONS: dict[str, str] = {
    "overhead": "bench.overhead",
    "embedded_model": "bench.embedded_model",
    "embedding_engines": "bench.embedding_engines",
    "guards": "bench.guards",
    "understanding": "bench.understanding",
    "retrieval": "bench.retrieval",
    "cache": "bench.cache",
    "embedding_batching": "bench.embedding_batching",
    "loadtest": "bench.loadtest",
}
"""Section key → module, in the order they appear in the report. Later issues add theirs here."""

DOC_NAME = "benchmarks.md"
JSON_NAME = "benchmarks.json"


def _section_keys(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    wanted = [k.strip().replace("-", "_") for item in only for k in item.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return [k for k in SECTIONS if k in wanted]


def _load_section(key: str) -> ModuleType:
    module = importlib.import_module(SECTIONS[key])
    if getattr(module, "KEY", None) != key or not callable(getattr(module, "run", None)):
        raise TypeError(f"{SECTIONS[key]} must define KEY = {key!r} and run(options) -> SectionResult")
    return module


def run_section(key: str, options: BenchOptions, plan: object | None = None) -> SectionResult:
    """Run one section; a failure becomes a section that says what went wrong instead of ending the run.

    `plan`: the section's own counts and limits (its `run(options, plan=...)`), from its command line.
    """
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    title = key
    try:
        module = _load_section(key)
        title = str(module.TITLE)
        result: SectionResult = module.run(options) if plan is None else module.run(options, plan=plan)
    except Exception as exc:
        headline = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        detail = traceback.format_exc(limit=8)
        result = SectionResult(
            key=key,
            title=title,
            markdown=f"**This section failed:** `{headline}`\n\n```\n{detail}```",
            error=headline,
        )
    result.seconds = round(time.perf_counter() - started, 1)
    result.load_average = (round(load_before, 2), round(os.getloadavg()[0], 2))
    return result


def _section_entry(
    result: SectionResult, run_id: str, measured_at: str, command: str, quick: bool, machine: dict[str, Any]
) -> dict[str, Any]:
    return {
        "title": result.title,
        "run_id": run_id,
        "measured_at": measured_at,
        "command": command,
        # kept with the section: a later run on another machine carries it over under its own machine table
        "machine": {k: machine.get(k) for k in ("cpu", "cores", "reference_workload_ms")},
        "quick": quick,
        "seconds": result.seconds,
        "load_average": result.load_average,
        "error": result.error,
        "targets": [t.as_dict() for t in result.targets],
        "data": result.data,
        "markdown": result.markdown,
    }


def _other_machine(then: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """Where a carried-over section was measured, when that is not (or may not be) the machine in the table."""
    if not then:
        return " on a machine this report did not record (the table above may not be it)"
    if then.get("cpu") == now.get("cpu") and then.get("cores") == now.get("cores"):
        return ""
    speed = then.get("reference_workload_ms")
    return f" on another machine ({then.get('cpu')}, {then.get('cores')} cores, reference workload {speed} ms)"


def _previous_sections(path: Path) -> dict[str, Any]:
    try:
        sections: dict[str, Any] = json.loads(path.read_text())["sections"]
        return sections
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def render_markdown(report: dict[str, Any]) -> str:
    """docs/benchmarks.md from the JSON report: header, machine, all targets, then one part per section."""
    machine = report["machine"]
    sections: dict[str, Any] = report["sections"]
    lines = [
        "# kefu benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); every run overwrites this file and `benchmarks.json` (raw "
        "numbers). Speed claims are differences or ratios against a baseline measured in the same run, because "
        "absolute numbers on a shared machine drift.",
        "",
        f"- Date: {report['generated_at']}",
        f"- Command: `{report['command']}` (took {report['seconds']:.0f} s)",
    ]
    if report["quick"]:
        lines.append("- **Quick smoke run** (`--quick`): tiny counts; do not quote these numbers.")
    lines += [
        "",
        "## Machine",
        "",
        md_table(
            ["CPU", "cores", "RAM", "OS", "Python", "load average at start", "reference workload"],
            [
                [
                    machine["cpu"],
                    f"{machine['cores']} ({machine['cores_usable']} usable)",
                    f"{machine['ram_gib']} GiB",
                    machine["os"],
                    machine["python"],
                    " / ".join(str(x) for x in machine.get("load_average_at_start") or []),
                    f"{machine.get('reference_workload_ms', '?')} ms",
                ]
            ],
        ),
        "",
        "Packages: " + ", ".join(f"{name} {v}" for name, v in machine["packages"].items()) + ".",
        "",
        "Reference workload: a fixed pure-Python loop on one core (best of 5), to compare the machine's speed between "
        "reports; absolute latencies scale with it.",
        "",
        "## Targets",
        "",
    ]
    rows = []
    for entry in sections.values():
        for t in entry["targets"]:
            status = "✅ pass" if t["passed"] else "❌ fail"
            rows.append([entry["title"], t["name"], f"{t['value']:g} {t['unit']}", f"{t['op']} {t['limit']:g}", status])
        if entry["error"]:
            rows.append([entry["title"], "(section failed)", entry["error"], "", "❌ error"])
    lines.append(md_table(["section", "target", "measured", "limit", "result"], rows) if rows else "No targets.")
    for number, (key, entry) in enumerate(sections.items(), start=1):
        lines += ["", f"## {number}. {entry['title']}", ""]
        carried = entry.get("run_id") != report["run_id"]
        origin = f"from an earlier run on {entry['measured_at']} (`{entry['command']}`)" if carried else "this run"
        if carried:
            origin += _other_machine(entry.get("machine"), report["machine"])
        load = entry.get("load_average")
        busy = f"; 1-minute load average {load[0]:g} before, {load[1]:g} after" if load else ""
        lines.append(f"_Section `{key}`, {origin}, took {entry['seconds']:.0f} s{busy}._")
        if entry.get("quick") and not report["quick"]:
            lines.append("_That earlier run was a quick smoke run._")
        lines += ["", entry["markdown"].rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="SECTION", help=f"sections to run: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny counts")
    parser.add_argument(
        "--output-dir", type=Path, help="where to write the report (default docs/, or build/bench-quick/)"
    )
    parser.add_argument(
        "--kefu-src",
        type=Path,
        metavar="DIR",
        help="serve kefu from another checkout's src/ (e.g. an older commit from `git archive`), to compare",
    )
    parser.add_argument("--keep-work-dir", action="store_true", help="keep the temp dir with data and server logs")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(args_list)
    if args.list:
        for key, module in SECTIONS.items():
            print(f"{key}\t{module}")
        return 0
    keys = _section_keys(args.only)
    command = " ".join(["python -m bench.run", *args_list])
    if os.environ.get("MAKELEVEL") and not args_list:
        command = "make bench"
    results = run_and_report(
        keys,
        quick=args.quick,
        output_dir=args.output_dir,
        command=command,
        kefu_src=args.kefu_src.resolve() if args.kefu_src else None,
        keep_work_dir=args.keep_work_dir,
    )
    return 1 if any(r.error for r in results) else 0


def run_and_report(
    keys: Sequence[str],
    *,
    quick: bool,
    output_dir: Path | None,
    command: str,
    kefu_src: Path | None = None,
    keep_work_dir: bool = False,
    plans: Mapping[str, object] | None = None,
) -> list[SectionResult]:
    """Run these sections and write the report, keeping the other sections from the last run.

    `plans`: section key → the plan to run it with (a section's own command line, e.g. `bench.loadtest`).
    """
    output_dir = output_dir or (REPO_ROOT / ("build/bench-quick" if quick else "docs"))
    generated_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    machine = machine_info()

    work_dir = Path(tempfile.mkdtemp(prefix="kefu-bench-"))
    results: list[SectionResult] = []
    try:
        options = BenchOptions(quick=quick, work_dir=work_dir, kefu_src=kefu_src)
        for key in keys:
            print(f"[bench] {key} …", flush=True)
            result = run_section(key, options, (plans or {}).get(key))
            results.append(result)
            status = f"FAILED: {result.error}" if result.error else "ok"
            summary = "; ".join(f"{t.name} = {t.value:g} {t.unit} ({verdict(t)})" for t in result.targets)
            print(f"[bench] {key} {status} in {result.seconds:.0f} s. {summary}", flush=True)
    finally:
        if keep_work_dir:
            print(f"[bench] work dir kept: {work_dir}")
        else:
            import shutil

            shutil.rmtree(work_dir, ignore_errors=True)

    previous = _previous_sections(output_dir / JSON_NAME)
    fresh = {r.key: _section_entry(r, run_id, generated_at, command, quick, machine) for r in results}
    sections = {k: fresh.get(k) or previous[k] for k in SECTIONS if k in fresh or k in previous}
    report = {
        "run_id": run_id,
        "generated_at": generated_at,
        "command": command,
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine,
        "sections": sections,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / JSON_NAME).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    (output_dir / DOC_NAME).write_text(render_markdown(report))
    print(f"[bench] wrote {output_dir / DOC_NAME} and {output_dir / JSON_NAME} in {report['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    sys.exit(main())

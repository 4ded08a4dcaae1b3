"""The benchmark harness runs end to end and writes a report of the right shape; its speed is not asserted."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from bench import ab, ab_load, loadtest, overhead, run
from bench.harness import BenchOptions, SectionResult, Target

# One kefu variant, the one that starts fastest (no embedding model to load): this is a smoke test.
TINY = overhead.OverheadPlan(
    warmup=2,
    sequential=4,
    rounds=2,
    concurrency=4,
    concurrent_requests=8,
    concurrent_max_s=20,
    only_variants=("no_embedding",),
)


def test_overhead_section_measures_stub_and_kefu_in_separate_processes(tmp_path: Path) -> None:
    result = overhead.run(BenchOptions(quick=True, work_dir=tmp_path), plan=TINY)

    assert result.key == "overhead" and result.error is None
    variants = result.data["variants"]
    assert len(variants) == 1 and len(result.targets) == 3
    label = next(iter(variants.values()))["label"]
    assert result.targets[0].name == f"kefu adds over its model calls at p50, concurrency 1 ({label})"
    assert result.targets[2].name == f"turns/s at concurrency 4, best of 2 runs ({label})"
    for measured in variants.values():
        c1, c4 = measured["c1"], measured["c4"]
        for side in ("stub", "kefu"):
            assert c1[side]["requests_ok"] == 4 and c1[side]["errors"] == 0, c1[side]["error_samples"]
            assert c4[side]["requests_ok"] == 8 and c4[side]["errors"] == 0, c4[side]["error_samples"]
            assert len(c4[side]["throughput_per_run"]) == 2
        assert set(c1["quantile_gap_ms"]) == set(c1["added_over_model_calls_ms"]) == {"p50", "p90", "p99"}
        by_calls = c1["turns_by_model_calls"]
        assert sum(row["turns"] for row in by_calls) == 4, "every turn's model calls were counted by the stub"
        assert any(row["calls"] >= 1 for row in by_calls), "the stub saw kefu's X-Request-ID on its calls"
        assert {"intake", "generate"} <= set(measured["stages_c1"])
    assert f"**{label}** | all | 4 | 100%" in result.markdown
    assert "| target | measured | limit | result |" in result.markdown


def _section_module(name: str, key: str, *, fails: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    module.KEY = key  # type: ignore[attr-defined]
    module.TITLE = f"Fake {key}"  # type: ignore[attr-defined]

    def run_section(options: BenchOptions) -> SectionResult:
        if fails:
            raise RuntimeError("the fake server did not start\nits log: …")
        return SectionResult(
            key=key,
            title=f"Fake {key}",
            markdown="| a | b |\n|---|---|\n| 1 | 2 |",
            data={"quick": options.quick},
            targets=[Target("answers per second", 12.0, 10.0, ">=", "1/s")],
        )

    module.run = run_section  # type: ignore[attr-defined]
    return module


def test_report_lists_sections_in_order_keeps_earlier_ones_and_shows_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fake_bench_first", _section_module("fake_bench_first", "first"))
    monkeypatch.setitem(sys.modules, "fake_bench_broken", _section_module("fake_bench_broken", "broken", fails=True))
    monkeypatch.setattr(run, "SECTIONS", {"first": "fake_bench_first", "broken": "fake_bench_broken"})

    assert run.main(["--quick", "--output-dir", str(tmp_path)]) == 1
    first_report = json.loads((tmp_path / "benchmarks.json").read_text())
    assert list(first_report["sections"]) == ["first", "broken"]
    assert first_report["sections"]["broken"]["error"] == "RuntimeError: the fake server did not start"

    assert run.main(["--only", "first", "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    doc = (tmp_path / "benchmarks.md").read_text()
    assert list(report["sections"]) == ["first", "broken"]
    assert report["sections"]["first"]["quick"] is False
    assert report["sections"]["broken"] == first_report["sections"]["broken"]
    assert "## 1. Fake first" in doc and "## 2. Fake broken" in doc
    assert "from an earlier run" in doc.split("## 2. Fake broken")[1]
    assert "| Fake first | answers per second | 12 1/s | >= 10 | ✅ pass |" in doc
    for heading in ("## Machine", "## Targets", "- Command: `python -m bench.run --only first"):
        assert heading in doc


def test_unknown_section_names_the_known_ones() -> None:
    with pytest.raises(SystemExit, match="known: overhead, embedded_model"):
        run.main(["--only", "overheed"])


def test_interleaved_ab_reports_both_sides_by_number_of_model_calls() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    no_model = {"KEFU_UNDERSTANDING__ENABLED": "false", "KEFU_GUARDS__EMBEDDING_CLASSIFIER": "false"}
    report = ab.compare(src, src, rounds=4, env=no_model, warmup=2)
    lines = report.splitlines()
    assert lines[0].startswith("stub LLM, direct: p50") and "(4 requests)" in lines[0]
    assert [line.split(" ", 1)[0] for line in lines[1:]] == ["A", "B"]
    # Without understanding every turn goes to the knowledge stage and the model: one call each, on both sides.
    assert all("1 call(s): 4 turns" in line for line in lines[1:]), report


def test_side_by_side_capacity_ab_reports_every_pair_and_the_medians(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    tiny = replace(
        loadtest.QUICK,
        workers=(1,),
        warmup_turns=6,
        turns=20,
        pair_duration_s=1.0,
        concurrency=4,
        kefu_env=(
            ("KEFU_UNDERSTANDING__EMBEDDER", "hashing"),
            ("KEFU_KNOWLEDGE__EMBEDDING__BACKEND", "hashing"),
            ("KEFU_GUARDS__EMBEDDING_CLASSIFIER", "false"),
        ),
    )
    pairs = ab_load.compare(src, src, tiny, pairs=2)
    assert len(pairs) == 2
    assert all(run.turns_per_s > 0 and run.cpu_ms_per_turn > 0 and run.cores > 0 for pair in pairs for run in pair)
    lines = ab_load.report(pairs).splitlines()
    assert [line.split(" | ", 1)[0] for line in lines[1:3]] == ["1", "2"]
    assert lines[-1].startswith("median B/A: turns/s ")

"""The load test runs end to end against real `kefu serve` processes and reports every turn; speed is not asserted."""

from __future__ import annotations

from pathlib import Path

from bench import loadtest
from bench.conversations import KINDS, ConversationMix
from bench.customers import TRANSPORTS
from bench.harness import BenchOptions

# Tiny counts, and the test embedders (no model to load, nothing to train for long): this is a smoke test.
TINY = loadtest.LoadTestPlan(
    workers=(1, 2),
    turns=12,
    duration_s=20,
    rate=10,
    concurrency=4,
    sequential_turns=6,
    warmup_turns=6,
    scaling_pairs=2,
    mix=(("curated", 0.3), ("knowledge", 0.2), ("flow", 0.3), ("handoff", 0.2)),
    transports=(("http", 0.4), ("sse", 0.3), ("ws", 0.3)),
    kefu_env=(
        ("KEFU_UNDERSTANDING__EMBEDDER", "hashing"),
        ("KEFU_KNOWLEDGE__EMBEDDING__BACKEND", "hashing"),
        ("KEFU_GUARDS__EMBEDDING_CLASSIFIER", "false"),
    ),
)


def test_mix_draws_every_kind_from_the_shop_data_and_repeats_with_its_seed() -> None:
    shares = {"curated": 1.0, "knowledge": 1.0, "flow": 1.0, "handoff": 1.0}
    mix = ConversationMix(loadtest.DEMO_SHOP, shares, seed=3)
    drawn = [mix.next() for _ in range(200)]

    again = ConversationMix(loadtest.DEMO_SHOP, shares, seed=3)
    assert drawn == [again.next() for _ in range(200)]
    assert {c.kind for c in drawn} == set(KINDS) and {c.language for c in drawn} == {"zh", "en"}
    assert all(len(c.turns) >= 2 and c.expect_text for c in drawn if c.kind == "flow")
    assert all(c.expect_handoff for c in drawn if c.kind == "handoff")
    assert 1.0 < mix.mean_turns() < 2.0


def test_load_test_measures_one_and_two_workers_over_every_transport(tmp_path: Path) -> None:
    result = loadtest.run(BenchOptions(quick=True, work_dir=tmp_path), plan=TINY)

    assert result.key == "loadtest" and result.error is None
    runs = {(r["workers"], r["phase"]): r for r in result.data["runs"]}
    assert set(runs) == {(w, p) for w in (1, 2) for p in ("warm-up", "sequential", "capacity", "rate")}
    for (workers, phase), measured in runs.items():
        overall, groups = measured["overall"], measured["groups"]
        assert overall["errors"] == 0, (workers, phase, measured["error_samples"])
        assert overall["unexpected"] == 0, (workers, phase)
        sent = {"warm-up": 6, "sequential": 6, "capacity": 12, "rate": 12 - measured["not_sent"]}[phase]
        assert overall["turns"] == overall["ok"] == sent, (workers, phase)
        # Every reply was found in kefu's store, so every turn has kefu's route.
        assert loadtest.NO_REPLY not in groups["route"]
        assert sum(g["turns"] for g in groups["route"].values()) == sent
        assert set(groups["kind"]) <= set(KINDS) and set(groups["transport"]) <= set(TRANSPORTS)
        # Stage times come from kefu's /metrics, read before and after the phase.
        assert {"intake", "understand", "persist"} <= set(measured["stage_mean_ms"])
        assert measured["cpu_s"]["kefu"] > 0
    assert runs[(1, "rate")]["offered"] == 12
    every_run = [r["groups"] for r in result.data["runs"]]
    assert set().union(*(g["transport"] for g in every_run)) == set(TRANSPORTS)
    assert set().union(*(g["kind"] for g in every_run)) == set(KINDS)

    names = [t.name for t in result.targets]
    assert names == [
        "1 worker(s), 10 turns/s offered: turns/s answered",
        "1 worker(s), 10 turns/s offered: p99",
        "capacity, 2 workers over 1 (concurrency 4, median of 2 side-by-side pairs)",
        "failed turns, all measured phases",
    ]
    assert result.targets[-1].value == 0 and result.targets[-1].passed
    # The scaling ratio comes from capacity runs of both servers side by side, after the phases.
    pairs = result.data["paired_capacity"]
    assert [(p["base"]["workers"], p["top"]["workers"]) for p in pairs] == [(1, 2), (1, 2)]
    for pair in pairs:
        for measured in pair.values():
            assert measured["overall"]["ok"] == 12 and measured["overall"]["errors"] == 0
    ratios = [p["top"]["overall"]["turns_per_s"] / p["base"]["overall"]["turns_per_s"] for p in pairs]
    assert min(ratios) - 0.02 <= result.targets[2].value <= max(ratios) + 0.02  # their median (rounded rates)
    headings = ("| target | measured | limit | result |", "**Where the time goes**", "**CPU per process**")
    for heading in (*headings, "**Scaling, side by side**"):
        assert heading in result.markdown

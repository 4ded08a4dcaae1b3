"""Side-by-side A/B of capacity: turns/s and CPU per turn of two kefu source trees under the load test's mix.

For changes to throughput (what several workers share, what a turn costs under load) that one load test cannot
show: its runs minutes apart differ by a third on a shared machine. Here both kefu servers (N workers each, one
prepared data dir) stay up on one stub LLM and one shop backend, and short closed-loop capacity runs alternate
between them, A-B then B-A, each pair with the same conversations.

    git worktree add /tmp/kefu-base HEAD~1
    python -m bench.ab_load /tmp/kefu-base/src src --workers 2 --pairs 4

The report gives each pair's turns/s and kefu CPU per turn, and the medians of B over A.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from bench.ab import settings_of, source_trees_parser
from bench.harness import (
    ServerProcess,
    free_port,
    kefu_process,
)
from bench.loadgen import run_event_loop
from bench.loadtest import (
    FULL,
    PAIRED,
    LoadTestPlan,
    Stack,
    _cores,
    _cpu_ms_per_turn,
    _env,
    _helpers,
    _mix,
    _phase,
    _prepare_data_dir,
)


@dataclass(frozen=True, slots=True)
class PairRun:
    turns_per_s: float
    cpu_ms_per_turn: float
    cores: float


def _start(
    stack: ExitStack, plan: LoadTestPlan, prepared: Path, name: str, src: Path, helpers: tuple[ServerProcess, ...]
) -> Stack:
    """A kefu server of source tree `src` on a copy of the `prepared` data dir."""
    stub, shop = helpers
    data_dir, port = prepared.parent / f"kefu-{name}", free_port()
    shutil.copytree(prepared, data_dir)
    env = _env(plan, data_dir, port, stub, shop)
    env["KEFU_SERVER__WORKERS"] = str(plan.workers[0])
    env["PYTHONPATH"] = str(src)
    kefu = stack.enter_context(
        kefu_process(
            port=port,
            log_path=prepared.parent / f"kefu-{name}.log",
            env=env,
            startup_timeout_s=300,
        )
    )
    return Stack(stub=stub, shop=shop, kefu=kefu, data_dir=data_dir, workers=plan.workers[0])


def compare(src_a: Path, src_b: Path, plan: LoadTestPlan, pairs: int) -> list[tuple[PairRun, PairRun]]:
    """Warm both servers up, then `pairs` pairs of capacity runs (A-B, B-A, ...); each pair's (A, B)."""
    with tempfile.TemporaryDirectory(prefix="kefu-ab-load-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        helpers = stack.enter_context(_helpers(plan, work))
        prepared = _prepare_data_dir(plan, work, *helpers)
        sides = [_start(stack, plan, prepared, name, src, helpers) for name, src in (("a", src_a), ("b", src_b))]
        mix = _mix(plan)

        async def measure() -> list[tuple[PairRun, PairRun]]:
            for side in sides:
                await _phase(side, plan, mix, "warm-up", plan.seed)
                await _phase(side, plan, mix, PAIRED, plan.seed + 1)
            results = []
            for index in range(pairs):
                done: dict[int, PairRun] = {}
                for j in (0, 1) if index % 2 == 0 else (1, 0):
                    run = await _phase(sides[j], plan, mix, PAIRED, plan.seed + 100 + index)
                    turns_per_s = len(run.records) / run.wall_s if run.wall_s > 0 else float("nan")
                    done[j] = PairRun(turns_per_s, _cpu_ms_per_turn(run), _cores(run, "kefu"))
                results.append((done[0], done[1]))
            return results

        return run_event_loop(measure)


def report(pairs: Sequence[tuple[PairRun, PairRun]]) -> str:
    lines = ["pair | A turns/s · CPU ms/turn · cores | B turns/s · CPU ms/turn · cores | B/A turns/s | B/A CPU/turn"]
    for index, (a, b) in enumerate(pairs, 1):
        lines.append(
            f"{index} | {a.turns_per_s:.1f} · {a.cpu_ms_per_turn:.2f} · {a.cores:.2f} | "
            f"{b.turns_per_s:.1f} · {b.cpu_ms_per_turn:.2f} · {b.cores:.2f} | "
            f"{b.turns_per_s / a.turns_per_s:.3f} | {b.cpu_ms_per_turn / a.cpu_ms_per_turn:.3f}"
        )
    speed = statistics.median(b.turns_per_s / a.turns_per_s for a, b in pairs)
    cpu = statistics.median(b.cpu_ms_per_turn / a.cpu_ms_per_turn for a, b in pairs)
    lines.append(f"median B/A: turns/s {speed:.3f}, CPU per turn {cpu:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = source_trees_parser(__doc__)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each kefu (default 1)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs of capacity runs (default 4)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per capacity run (default 12)")
    args = parser.parse_args(argv)
    env = tuple(settings_of(args).items())
    plan = replace(FULL, workers=(args.workers,), pair_duration_s=args.duration, kefu_env=(*FULL.kefu_env, *env))
    print(report(compare(args.src_a.resolve(), args.src_b.resolve(), plan, args.pairs)))


if __name__ == "__main__":
    main()

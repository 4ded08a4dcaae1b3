"""Interleaved A/B of kefu's added latency at concurrency 1, for changes too small for `bench.run` to show.

Two runs of the overhead section, one after the other, differ by about ±0.4 ms at p50 on a shared machine. Here
both kefu servers run at the same time on one stub LLM, and each round sends the same question to A and to B
(in turn order A-B, then B-A) and one request to the stub: drift in the machine's load hits both sides alike.

    git worktree add /tmp/kefu-base HEAD~1
    python -m bench.ab /tmp/kefu-base/src src --rounds 600

Each turn's added time is its latency minus the stub's p50 for each model call it made (the stub counts them by
the `X-Request-ID` kefu forwards), as in the overhead section; the output splits turns by number of calls.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import overhead
from bench.harness import DEMO_SHOP, ServerProcess, free_port, percentile, server_process
from bench.loadgen import HTTPConnection, run_event_loop

WARMUP_ROUNDS = 150


@dataclass(slots=True)
class Side:
    """One kefu under test: its source tree, server and the latency (seconds) of each measured turn by request id."""

    label: str
    src: Path
    server: ServerProcess
    latency_s: dict[str, float] = field(default_factory=dict)


def _start(stack: ExitStack, label: str, src: Path, stub: ServerProcess, work: Path, env: dict[str, str]) -> Side:
    fields = overhead._settings_fields(overhead._kefu_env(work, stub.base_url, 0, DEMO_SHOP, src))
    server_env = {"KEFU_SERVER__WORKERS": "1", **env}
    server = stack.enter_context(overhead.serve_kefu(work / label, stub, DEMO_SHOP, src, fields, server_env))
    return Side(label, src, server)


async def _measure(
    sides: Sequence[Side], stub: ServerProcess, rounds: int, warmup: int
) -> tuple[dict[str, int], list[float]]:
    conns = [HTTPConnection("127.0.0.1", side.server.port) for side in sides]
    stub_conn = HTTPConnection("127.0.0.1", stub.port)
    stub_load = overhead.StubWorkload(overhead._system_prompts(DEMO_SHOP), seed=1)
    stub_ms: list[float] = []
    try:
        for phase, count, record in (("warmup", warmup, False), ("c1", rounds, True)):
            # The same seed on both sides: round i asks A and B the same question.
            loads = [overhead.ChatWorkload(phase, seed=3) for _ in sides]
            for index in range(count):
                order = range(len(sides)) if index % 2 == 0 else reversed(range(len(sides)))
                for j in order:
                    path, body = loads[j].request(index)
                    ident = loads[j].request_id(index)
                    sent = time.perf_counter()
                    status, payload = await conns[j].request("POST", path, body, {"X-Request-ID": ident})
                    elapsed = time.perf_counter() - sent
                    problem = loads[j].check(index, status, payload)
                    if problem is not None:
                        raise RuntimeError(f"{sides[j].label}: {problem}")
                    if record:
                        sides[j].latency_s[ident] = elapsed
                path, body = stub_load.request(index)
                sent = time.perf_counter()
                await stub_conn.request("POST", path, body)
                if record:
                    stub_ms.append((time.perf_counter() - sent) * 1000)
        return await overhead._stub_calls(stub), sorted(stub_ms)
    finally:
        for conn in (*conns, stub_conn):
            await conn.close()


def compare(
    src_a: Path, src_b: Path, *, rounds: int, env: dict[str, str] | None = None, warmup: int = WARMUP_ROUNDS
) -> str:
    """Run the interleaved A/B and return the report (plain text)."""
    with tempfile.TemporaryDirectory(prefix="kefu-ab-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        stub_port = free_port()
        stub = stack.enter_context(
            server_process(
                ["-m", "bench.stub_llm", "--port", str(stub_port), "--latency-ms", "20"],
                port=stub_port,
                ready_path="/v1/models",
                log_path=work / "stub.log",
            )
        )
        sides = [_start(stack, label, src, stub, work, env or {}) for label, src in (("A", src_a), ("B", src_b))]
        calls, stub_ms = run_event_loop(lambda: _measure(sides, stub, rounds, warmup))
    stub_p50 = percentile(stub_ms, 50)
    lines = [f"stub LLM, direct: p50 {stub_p50:.2f} ms, p99 {percentile(stub_ms, 99):.2f} ms ({len(stub_ms)} requests)"]
    for side in sides:
        per_turn = overhead.PerTurn.attribute(side.latency_s, calls, stub_p50)
        if per_turn is None:
            raise RuntimeError(f"the stub saw no X-Request-ID of {side.src}: it does not forward it (before 76bb444)")
        parts = [
            f"{n} call(s): {turns} turns, adds p50 {a50:.2f}, p99 {a99:.2f}"
            for n, turns, _p50, _p99, a50, a99 in per_turn.rows()
        ]
        lines.append(
            f"{side.label} ({side.src}): adds p50 {per_turn.ms(50):.2f} ms, p90 {per_turn.ms(90):.2f}, "
            f"p99 {per_turn.ms(99):.2f} | " + "; ".join(parts)
        )
    return "\n".join(lines)


def source_trees_parser(description: str | None) -> argparse.ArgumentParser:
    """The command line of an A/B of two kefu source trees: `src_a`, `src_b`, and `--env` settings for both."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src_a", type=Path, help="kefu source tree A (its src/ directory)")
    parser.add_argument("src_b", type=Path, help="kefu source tree B (its src/ directory)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a KEFU_* setting for both servers"
    )
    return parser


def settings_of(args: argparse.Namespace) -> dict[str, str]:
    """The `--env` settings given."""
    return dict(item.split("=", 1) for item in args.env)


def main(argv: Sequence[str] | None = None) -> None:
    parser = source_trees_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=600, help="measured rounds (default 600)")
    args = parser.parse_args(argv)
    print(compare(args.src_a.resolve(), args.src_b.resolve(), rounds=args.rounds, env=settings_of(args)))


if __name__ == "__main__":
    main()

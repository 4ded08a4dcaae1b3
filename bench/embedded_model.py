"""Section "embedded model": the bundled model on llama.cpp in process — load time, prompt and generation speed.

Two turns with kefu's real Chinese system prompt: a first question on a fresh model (the whole prompt
is processed), then a follow-up with the same system prompt, whose KV prefix llama.cpp reuses. The
follow-up's time to first token against the first turn's is the ratio that matters for customers.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import DEMO_SHOP, REPO_ROOT, BenchOptions, SectionResult, md_table, progress

KEY = "embedded_model"
TITLE = "Embedded model (llama.cpp in process)"

DATA_DIR = REPO_ROOT / ".kefu"
"""Where `make demo` caches the joined bundled model, so the benchmark does not join it again."""

FIRST_QUESTION = "我买的鞋子尺码不合适，可以换货吗？"
FOLLOW_UP = "换货的运费由谁承担？"
WARM_UP = "你好"
REFERENCE = {"prompt_tok_per_s": 64.0, "gen_tok_per_s": 21.0}
"""Speeds the architecture notes record for this model on a 2-core CPU machine (2026-11)."""


@dataclass(frozen=True, slots=True)
class EmbeddedPlan:
    max_tokens: int = 64


FULL = EmbeddedPlan()
QUICK = EmbeddedPlan(max_tokens=12)


def _system_prompt() -> str:
    from kefu.prompts import PromptLibrary
    from kefu.shop import load_shop

    shop = load_shop(DEMO_SHOP if (DEMO_SHOP / "shop.yaml").is_file() else None)
    return PromptLibrary().render("system", shop=shop, language="zh")


async def _measure_turns(backend: Any, system: str, plan: EmbeddedPlan) -> dict[str, dict[str, float]]:
    from kefu.llm.bench_embedded import measure

    # A first request of another prompt: one-off start-up work (threads, buffers) stays out of the numbers.
    await measure(backend, WARM_UP, max_tokens=1)
    progress("embedded model: first question, then a follow-up on the same system prompt")
    first = await measure(backend, FIRST_QUESTION, system=system, max_tokens=plan.max_tokens)
    follow_up = await measure(backend, FOLLOW_UP, system=system, max_tokens=plan.max_tokens)
    return {"first_turn": first, "follow_up": follow_up}


def run(options: BenchOptions, plan: EmbeddedPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    from kefu.config import LLMBackendSettings
    from kefu.llm.embedded import EmbeddedLLM

    settings = LLMBackendSettings(backend="embedded")
    progress("embedded model: loading the bundled model")
    started = time.perf_counter()
    backend = EmbeddedLLM.from_settings(settings, DATA_DIR)
    ready_s = time.perf_counter() - started
    try:
        turns = asyncio.run(_measure_turns(backend, _system_prompt(), plan))
    finally:
        asyncio.run(backend.aclose())
    return _report(plan, settings, backend, ready_s, turns, quick=options.quick)


def _report(
    plan: EmbeddedPlan,
    settings: Any,
    backend: Any,
    ready_s: float,
    turns: dict[str, dict[str, float]],
    *,
    quick: bool,
) -> SectionResult:
    first, follow = turns["first_turn"], turns["follow_up"]
    speedup = first["ttft_s"] / follow["ttft_s"] if follow["ttft_s"] > 0 else float("nan")

    def row(label: str, m: dict[str, float]) -> list[str]:
        return [
            label,
            f"{m['prompt_tokens']:.0f}",
            f"{m['ttft_s']:.2f}",
            f"{m['prompt_tok_per_s']:.1f}",
            f"{m['completion_tokens']:.0f}",
            f"{m['gen_tok_per_s']:.1f}",
            f"{m['total_s']:.2f}",
        ]

    threads = settings.n_threads or os.cpu_count()
    lines = [
        f"The bundled model `{backend.model}` on llama.cpp in process (`kefu.llm.embedded.EmbeddedLLM`, "
        f"{settings.n_parallel} slots, n_ctx {settings.n_ctx}, {threads} threads), measured from the caller's side "
        "with `kefu.llm.bench_embedded.measure` (streamed, temperature 0, "
        f"at most {plan.max_tokens} new tokens). Both turns use kefu's Chinese system prompt; the follow-up "
        "reuses its KV prefix.",
        "",
        md_table(
            [
                "turn",
                "prompt tokens",
                "time to first token s",
                "prompt tok/s",
                "new tokens",
                "generation tok/s",
                "total s",
            ],
            [row(f"first question: {FIRST_QUESTION}", first), row(f"follow-up: {FOLLOW_UP}", follow)],
        ),
        "",
        f"- Follow-up time to first token is **{speedup:.1f}×** faster than the first turn's (KV prefix reuse).",
        f"- Model ready in {ready_s:.1f} s (join-and-verify of the bundled model is cached in `.kefu/models`; "
        f"llama.cpp load {backend.load_seconds:.1f} s).",
        f"- Reference for this model on a 2-core CPU machine (architecture notes, 2026-11): prompt "
        f"~{REFERENCE['prompt_tok_per_s']:.0f} tok/s, generation ~{REFERENCE['gen_tok_per_s']:.0f} tok/s. "
        "Prompt tok/s is prompt tokens over time to first token, so it includes the first decode step; for the "
        "follow-up it counts cached tokens too and is not a processing speed.",
    ]
    if quick:
        lines.append("- **Quick smoke run**: very few tokens generated; speeds are rough.")
    data = {
        "model": backend.model,
        "n_parallel": settings.n_parallel,
        "n_ctx": settings.n_ctx,
        "threads": threads,
        "max_tokens": plan.max_tokens,
        "ready_s": round(ready_s, 3),
        "llama_load_s": round(backend.load_seconds, 3),
        "first_turn": {k: round(v, 4) for k, v in first.items()},
        "follow_up": {k: round(v, 4) for k, v in follow.items()},
        "follow_up_ttft_speedup": round(speedup, 2),
        "questions": {"first_turn": FIRST_QUESTION, "follow_up": FOLLOW_UP},
        "reference": REFERENCE,
    }
    return SectionResult(key=KEY, title=TITLE, markdown="\n".join(lines), data=data)

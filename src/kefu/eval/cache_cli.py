"""`kefu eval cache`: calibrate the semantic answer cache's similarity threshold on labelled question pairs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from kefu.errors import KefuError


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def cache_command(
    pairs: Annotated[
        Path, typer.Option("--pairs", help="JSONL: {cached, asked, same: true (paraphrase) | false (near-miss)}.")
    ],
    corpus: Annotated[Path, typer.Option("--corpus", help="The knowledge directory the answers come from.")],
    shop_dir: Annotated[
        Path | None, typer.Option("--shop-dir", help="The shop (its intents.yaml); default: the configured one.")
    ] = None,
    output: Annotated[Path, typer.Option(help="Where to write the results as JSON.")] = Path("eval-cache.json"),
) -> None:
    """Paraphrases served and near-misses served per similarity threshold, and the threshold to use. 缓存阈值校准。"""
    from kefu.config import load_settings
    from kefu.embeddings.shared import SharedEmbedders
    from kefu.eval.cache import load_pairs, observe, suggest_threshold, threshold_table
    from kefu.eval.retrieval import ingest_corpus, scratch_service
    from kefu.prompts import PromptLibrary
    from kefu.understanding.service import build_understanding

    overrides: dict[str, Any] = {"understanding": {"llm_fallback": False}}
    if shop_dir is not None:
        overrides["shop"] = {"dir": shop_dir}
    try:
        settings = load_settings(**overrides)
    except KefuError as exc:
        raise _fail(str(exc)) from None
    embedders = SharedEmbedders.for_settings(settings.knowledge.embedding)
    try:
        labelled = load_pairs(pairs)
        understanding = build_understanding(
            settings, PromptLibrary(settings.chat.prompt_version), embedders.local(settings.understanding.embedder)
        )
        if understanding is None or understanding.catalogue is None:
            raise _fail("needs an intent catalogue: pass --shop-dir (a shop with intents.yaml)")

        async def main() -> list[Any]:
            embedder = embedders.get(settings.knowledge.embedding)
            async with scratch_service(settings.knowledge, embedder=embedder) as service:
                await ingest_corpus(service, corpus)
                return await observe(labelled, understanding, service)

        results = asyncio.run(main())
    except KefuError as exc:
        raise _fail(str(exc)) from None
    finally:
        embedders.close()
    rows = threshold_table(results)
    configured = settings.answer_cache.semantic_threshold
    typer.echo("threshold · paraphrases served · near-misses served")
    for row in rows:
        mark = "  ← configured" if abs(row["threshold"] - configured) < 1e-9 else ""
        typer.echo(
            f"  {row['threshold']:.3f}  {row['paraphrases_served']:>3}/{row['paraphrases']}"
            f"  {row['near_misses_served']:>3}/{row['near_misses']}{mark}"
        )
    suggested = suggest_threshold(results)
    served = [r for r in results if r.pair.same and (r.served_at or 0.0) >= configured]
    wrong = [r for r in results if not r.pair.same and (r.served_at or 0.0) >= configured]
    typer.echo("\nwhy pairs are not compared (besides the threshold):")
    for label, same in (("paraphrases", True), ("near-misses", False)):
        notes = Counter(r.note.split(" (")[0] or "compared" for r in results if r.pair.same is same)
        typer.echo(f"  {label}: " + ", ".join(f"{note} {n}" for note, n in notes.most_common()))
    typer.echo(f"\nsuggested threshold: {suggested:.3f} (above the closest near-miss that passes every other check)")
    typer.echo(f"configured {configured:.3f}: {len(served)} paraphrases served, {len(wrong)} near-misses served")
    for r in wrong:
        typer.echo(f"  ✗ {r.pair.cached} → {r.pair.asked} ({r.similarity:.3f}) {r.pair.why}")
    output.write_text(
        json.dumps(
            {"configured": configured, "suggested": suggested, "table": rows, "pairs": [r.as_dict() for r in results]},
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    typer.echo(f"written to {output}")

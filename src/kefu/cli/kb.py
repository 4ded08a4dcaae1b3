"""`kefu kb add | sync | remove | list | gaps | status | reindex | search`: the knowledge base from the terminal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from kefu.config import Settings, load_settings
from kefu.errors import KefuError
from kefu.knowledge.service import DEFAULT_COLLECTION, UPLOADS_COLLECTION, IngestReport, KnowledgeService
from kefu.language import detect_language

kb_app = typer.Typer(
    name="kb",
    help="Manage the knowledge base: documents, sync, gaps. 知识库：文档、同步、未解答问题。",
    no_args_is_help=True,
)
T = TypeVar("T")

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant whose knowledge base to use.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _settings() -> Settings:
    try:
        return load_settings()
    except KefuError as exc:
        raise _fail(str(exc)) from None


@asynccontextmanager
async def _knowledge(settings: Settings) -> AsyncIterator[KnowledgeService]:
    from kefu.store.database import create_engine, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        # The configured source_dir is the server's business; a CLI command does only what it was asked.
        quiet = settings.knowledge.model_copy(update={"source_dir": None})
        service = await KnowledgeService.open(quiet, engine, settings.data_dir)
        try:
            yield service
        finally:
            await service.aclose()
    finally:
        await engine.dispose()


def _run(action: Callable[[KnowledgeService], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        async with _knowledge(settings) as service:
            return await action(service)

    try:
        return asyncio.run(main())
    except KefuError as exc:
        raise _fail(str(exc)) from None


def _print_report(report: IngestReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for label, items, colour in (
            ("added", report.added, typer.colors.GREEN),
            ("updated", report.updated, typer.colors.GREEN),
            ("removed", report.removed, typer.colors.YELLOW),
        ):
            for source in items:
                typer.secho(f"  {label:<9} {source}", fg=colour)
        typer.echo(
            f"{len(report.added)} added, {len(report.updated)} updated, {len(report.removed)} removed, "
            f"{len(report.unchanged)} unchanged; {report.chunks} chunks, {report.embedded} texts embedded "
            f"in {report.seconds:.1f}s (knowledge version {report.version})"
        )
    for _, error in report.failed:
        typer.secho(f"  failed    {error}", fg=typer.colors.RED, err=True)
    if report.failed:
        raise typer.Exit(code=1)


@kb_app.command()
def add(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to index.")],
    collection: Annotated[str, typer.Option(help="Collection to add them to.")] = UPLOADS_COLLECTION,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
) -> None:
    """Index files (Markdown, text, HTML, PDF, DOCX; FAQ as CSV/XLSX/JSONL). 添加文档。"""
    report = _run(lambda s: s.add_paths(paths, collection=collection, tenant_id=tenant))
    _print_report(report, as_json)


@kb_app.command()
def sync(
    directory: Annotated[Path, typer.Argument(help="Directory the collection should mirror.")],
    collection: Annotated[str, typer.Option(help="Collection that mirrors the directory.")] = DEFAULT_COLLECTION,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
) -> None:
    """Mirror a directory: new and changed files are indexed, deleted ones removed, the rest skipped. 同步目录。"""
    report = _run(lambda s: s.sync_directory(directory, collection=collection, tenant_id=tenant))
    _print_report(report, as_json)


@kb_app.command()
def remove(
    documents: Annotated[list[str], typer.Argument(help="Document ids or source paths (see `kefu kb list`).")],
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
) -> None:
    """Remove documents; no answer cites them from the next turn on. 删除文档。"""
    report = _run(lambda s: s.remove(documents, tenant_id=tenant))
    _print_report(report, as_json)


@kb_app.command("list")
def list_documents(tenant: TenantOption = "default", as_json: JsonOption = False) -> None:
    """List the indexed documents. 列出文档。"""
    docs = _run(lambda s: s.documents(tenant))
    if as_json:
        typer.echo(json.dumps([d.as_dict() for d in docs], ensure_ascii=False, indent=2))
        return
    if not docs:
        typer.echo("The knowledge base is empty: `kefu kb sync DIR` or `kefu kb add FILE…`.")
        return
    for d in docs:
        typer.echo(
            f"{d.id}  {d.collection}/{d.source}  v{d.version}  {d.chunk_count} chunks  "
            f"{d.lang or '-'}  {d.updated_at:%Y-%m-%d %H:%M}  {d.title}"
        )


@kb_app.command()
def gaps(
    tenant: TenantOption = "default",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Questions the knowledge base could not answer, most asked first. 未解答的问题。"""
    rows = _run(lambda s: s.repository.gaps(tenant, limit=limit))
    if as_json:
        typer.echo(json.dumps([g.as_dict() for g in rows], ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("No unanswered questions recorded.")
        return
    for g in rows:
        typer.echo(f"{g.count:>5}×  {g.last_seen:%Y-%m-%d}  {g.lang or '-'}  {g.reason:<14} {g.question}")


@kb_app.command()
def status(as_json: JsonOption = False) -> None:
    """Knowledge version, document and chunk counts, index and embedder. 状态。"""
    info: dict[str, Any] = _run(lambda s: s.status())
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    for key, value in info.items():
        typer.echo(f"{key}: {value}")


@kb_app.command()
def reindex(as_json: JsonOption = False) -> None:
    """Re-embed every chunk with the configured embedder and rebuild the index. 重建索引。"""
    report = _run(lambda s: s.reindex())
    _print_report(report, as_json)


@kb_app.command()
def search(
    query: Annotated[str, typer.Argument(help="A customer question.")],
    k: Annotated[int, typer.Option(min=1, max=50)] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    tenant: TenantOption = "default",
) -> None:
    """Show what retrieval finds for a question (and the closest curated question). 检索调试。"""
    if mode not in ("hybrid", "dense", "bm25"):
        raise _fail("--mode must be hybrid, dense or bm25")

    async def run(service: KnowledgeService) -> list[str]:
        language = detect_language(query)
        vector = await service.embed_query(query)
        lines = []
        match = service.best_curated(query, vector, tenant_id=tenant, language=language)
        if match is not None:
            verdict = "answers verbatim" if service.curated_answer(query, match) else "below threshold"
            lines.append(f"curated: {match.score:.3f} ({verdict}) {match.variant}")
        hits = await service.search(query, tenant_id=tenant, language=language, k=k, mode=mode, vector=vector)  # type: ignore[arg-type]
        coverage = service.coverage(query, hits)
        lines.append(
            f"covered: {coverage.answerable} (best dense {coverage.best_dense:.3f}, words {coverage.lexical:.2f})"
        )
        for hit in hits:
            lines.append(f"{hit.score:.4f}  dense {hit.dense or 0:.3f}  {hit.chunk.ref}")
        return lines

    for line in _run(run):
        typer.echo(line)


async def doctor_check(settings: Settings) -> tuple[str, bool, str]:
    """`kefu doctor`'s line about the knowledge base: index, embedder, documents, or why it cannot be opened."""
    try:
        async with _knowledge(settings) as service:
            info = await service.status()
    except Exception as exc:
        return "knowledge", False, f"{type(exc).__name__}: {exc}"
    if not info["documents"]:
        source = settings.knowledge.source_dir
        hint = f"{source} is synced at start-up" if source else "empty: `kefu kb sync DIR` to add documents"
        return "knowledge", True, f"{info['index']} index, {info['embedder']}; {hint}"
    return (
        "knowledge",
        True,
        f"{info['documents']} documents, {info['chunks']} chunks, {info['curated_questions']} curated questions "
        f"(version {info['version']}, {info['index']} index, {info['embedder']})",
    )

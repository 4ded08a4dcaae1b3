"""Admin endpoints of the knowledge base under /v1/admin/kb: upload, list, delete, re-index, sync, status, gaps.

Reads need the viewer role and changes the admin role (see docs/knowledge.md); every call is scoped to the
operator's tenant. The routes only translate HTTP to `KnowledgeService` calls and back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from pydantic import BaseModel, Field

from kefu.api.dependencies import ServicesDep
from kefu.api.security import Operator, require_role
from kefu.errors import ConfigError, UserError
from kefu.knowledge.repository import DocumentRecord, GapRecord
from kefu.knowledge.service import UPLOADS_COLLECTION, IngestItem, IngestReport, KnowledgeService
from kefu.language import detect_language
from kefu.services import Services

router = APIRouter(prefix="/v1/admin/kb", tags=["admin: knowledge"])
AdminOp = Annotated[Operator, Depends(require_role("admin"))]
ViewerOp = Annotated[Operator, Depends(require_role("viewer"))]
_DOC_ID = r"^[0-9a-f]{24}$"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the needed role"},
    404: {"description": "No such document in your tenant"},
    413: {"description": "A file is larger than the upload limit"},
    422: {"description": "Malformed request"},
}


class DocumentOut(BaseModel):
    id: str
    collection: str
    source: str
    title: str
    format: str
    lang: str | None
    category: str | None
    product: str | None
    version: int
    chunk_count: int
    size_bytes: int
    content_hash: str
    created_at: datetime
    updated_at: datetime
    url: str = Field(description="The rendered document, where citations link to.")

    @classmethod
    def of(cls, d: DocumentRecord) -> DocumentOut:
        return cls(
            id=d.id,
            collection=d.collection,
            source=d.source,
            title=d.title,
            format=d.format,
            lang=d.lang,
            category=d.category,
            product=d.product,
            version=d.version,
            chunk_count=d.chunk_count,
            size_bytes=d.size_bytes,
            content_hash=d.content_hash,
            created_at=d.created_at,
            updated_at=d.updated_at,
            url=f"/kb/doc/{d.id}",
        )


class DocumentDetail(DocumentOut):
    text: str = Field(description="The document as Markdown, as shown on its page.")


class FailedFile(BaseModel):
    source: str
    error: str


class IngestOut(BaseModel):
    """What an upload, sync, removal or re-index did; failed files are listed, the others went in."""

    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    failed: list[FailedFile]
    chunks: int
    embedded: int
    version: int
    seconds: float

    @classmethod
    def of(cls, r: IngestReport) -> IngestOut:
        return cls(
            added=r.added,
            updated=r.updated,
            unchanged=r.unchanged,
            removed=r.removed,
            failed=[FailedFile(source=s, error=e) for s, e in r.failed],
            chunks=r.chunks,
            embedded=r.embedded,
            version=r.version,
            seconds=round(r.seconds, 3),
        )


class StatusOut(BaseModel):
    version: int
    documents: int
    chunks: int
    curated_questions: int
    index: str
    indexed_chunks: int
    embedder: str
    languages: list[str]
    source_dir: str | None


class GapOut(BaseModel):
    id: str
    question: str
    lang: str | None
    reason: str
    count: int
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, g: GapRecord) -> GapOut:
        return cls(
            id=g.id,
            question=g.question,
            lang=g.lang,
            reason=g.reason,
            count=g.count,
            first_seen=g.first_seen,
            last_seen=g.last_seen,
        )


class SearchHitOut(BaseModel):
    ref: str
    title: str
    section: str
    score: float
    dense: float | None
    text: str
    url: str


class SearchOut(BaseModel):
    query: str
    curated: dict[str, Any] | None
    covered: bool
    best_dense: float
    hits: list[SearchHitOut]


def knowledge_of(services: Services) -> KnowledgeService:
    if services.knowledge is None:
        raise ConfigError("this server runs without a knowledge base")
    return services.knowledge


async def _own_document(knowledge: KnowledgeService, doc_id: str, tenant_id: str) -> tuple[DocumentRecord, str]:
    doc, text = await knowledge.document(doc_id)
    if doc.tenant_id != tenant_id:
        # Another tenant's document is reported exactly like a missing one.
        from kefu.errors import NotFoundError

        raise NotFoundError(f"no knowledge document {doc_id!r}")
    return doc, text


@router.get("/status", response_model=StatusOut, responses=_ERRORS)
async def status(services: ServicesDep, _: ViewerOp) -> StatusOut:
    """Knowledge version, counts, index and embedder."""
    knowledge = knowledge_of(services)
    info = await knowledge.status()
    source = knowledge.settings.source_dir
    return StatusOut(**info, source_dir=str(source) if source else None)


@router.get("/documents", response_model=list[DocumentOut], responses=_ERRORS)
async def list_documents(services: ServicesDep, operator: ViewerOp) -> list[DocumentOut]:
    """Every document of your tenant."""
    return [DocumentOut.of(d) for d in await knowledge_of(services).documents(operator.tenant_id)]


@router.get("/documents/{doc_id}", response_model=DocumentDetail, responses=_ERRORS)
async def get_document(
    doc_id: Annotated[str, Path(pattern=_DOC_ID)], services: ServicesDep, operator: ViewerOp
) -> DocumentDetail:
    """One document with its text."""
    doc, text = await _own_document(knowledge_of(services), doc_id, operator.tenant_id)
    return DocumentDetail(**DocumentOut.of(doc).model_dump(), text=text)


@router.post("/documents", response_model=IngestOut, responses=_ERRORS)
async def upload(
    services: ServicesDep,
    operator: AdminOp,
    files: Annotated[list[UploadFile], File(description="Markdown, text, HTML, PDF, DOCX, or FAQ CSV/XLSX/JSONL.")],
    collection: Annotated[str, Form(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = UPLOADS_COLLECTION,
) -> IngestOut:
    """Upload files; a file with the same name in the collection is replaced (unchanged content is skipped)."""
    items = []
    for upload_file in files:
        name = (upload_file.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or name.startswith("."):
            raise UserError("every uploaded file needs a file name (e.g. returns.md)")
        data = await upload_file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise UserError(f"{name} is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        items.append(IngestItem(name, data))
    report = await knowledge_of(services).ingest(items, collection=collection, tenant_id=operator.tenant_id)
    return IngestOut.of(report)


@router.delete("/documents/{doc_id}", response_model=IngestOut, responses=_ERRORS)
async def delete_document(
    doc_id: Annotated[str, Path(pattern=_DOC_ID)], services: ServicesDep, operator: AdminOp
) -> IngestOut:
    """Remove a document: from the next customer turn on, on every worker, nothing cites it."""
    knowledge = knowledge_of(services)
    await _own_document(knowledge, doc_id, operator.tenant_id)
    return IngestOut.of(await knowledge.remove([doc_id], tenant_id=operator.tenant_id))


@router.post("/sync", response_model=IngestOut, responses=_ERRORS)
async def sync(services: ServicesDep, operator: AdminOp) -> IngestOut:
    """Re-sync the configured source directory (KEFU_KNOWLEDGE__SOURCE_DIR) after editing its files."""
    knowledge = knowledge_of(services)
    source = knowledge.settings.source_dir
    if source is None:
        raise UserError("no source directory is configured (KEFU_KNOWLEDGE__SOURCE_DIR); upload files instead")
    return IngestOut.of(await knowledge.sync_directory(source, tenant_id=operator.tenant_id))


@router.post("/reindex", response_model=IngestOut, responses=_ERRORS)
async def reindex(services: ServicesDep, _: AdminOp) -> IngestOut:
    """Re-embed every chunk with the configured embedder and rebuild the index."""
    return IngestOut.of(await knowledge_of(services).reindex())


@router.get("/gaps", response_model=list[GapOut], responses=_ERRORS)
async def list_gaps(
    services: ServicesDep, operator: ViewerOp, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[GapOut]:
    """Questions the knowledge base could not answer, most asked first."""
    rows = await knowledge_of(services).repository.gaps(operator.tenant_id, limit=limit)
    return [GapOut.of(g) for g in rows]


@router.delete("/gaps", responses=_ERRORS)
async def clear_gaps(
    services: ServicesDep, operator: AdminOp, ids: Annotated[list[str] | None, Query()] = None
) -> dict[Literal["deleted"], int]:
    """Forget answered gaps (all of them when no `ids` are given)."""
    return {"deleted": await knowledge_of(services).repository.delete_gaps(operator.tenant_id, ids)}


@router.get("/search", response_model=SearchOut, responses=_ERRORS)
async def search(
    services: ServicesDep,
    operator: ViewerOp,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> SearchOut:
    """What retrieval finds for a question, and the closest curated question: for tuning the knowledge."""
    knowledge = knowledge_of(services)
    await knowledge.refresh()
    language = detect_language(q)
    vector = await knowledge.embed_query(q)
    match = knowledge.best_curated(q, vector, tenant_id=operator.tenant_id, language=language)
    hits = await knowledge.search(q, tenant_id=operator.tenant_id, language=language, k=k, vector=vector)
    coverage = knowledge.coverage(q, hits)
    curated = None
    if match is not None:
        curated = {
            "question": match.row.question,
            "variant": match.variant,
            "score": round(match.score, 4),
            "answers_verbatim": knowledge.curated_answer(q, match),
        }
    return SearchOut(
        query=q,
        curated=curated,
        covered=coverage.answerable,
        best_dense=round(coverage.best_dense, 4),
        hits=[
            SearchHitOut(
                ref=h.chunk.ref,
                title=h.chunk.title,
                section=h.chunk.section,
                score=round(h.score, 5),
                dense=None if h.dense is None else round(h.dense, 4),
                text=h.chunk.text,
                url=KnowledgeService.source_url(h.chunk),
            )
            for h in hits
        ],
    )

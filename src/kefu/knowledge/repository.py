"""Knowledge tables behind one async API: documents, chunks, the shared version and the gaps.

Reads that must agree with a version (the registry, a full snapshot) are single statements joined with
`kb_state`, so they are consistent on SQLite and on PostgreSQL without an explicit isolation level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import numpy as np
from sqlalchemy import ColumnElement, Connection, Row, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kefu.knowledge.text import normalize_question
from kefu.knowledge.types import ChunkDraft, ChunkInfo, IndexedChunk, Vector
from kefu.store.knowledge_models import KnowledgeChunk, KnowledgeDocument, KnowledgeGap, KnowledgeState
from kefu.store.models import new_id, utcnow
from kefu.store.prepared import PreparedRead, PreparedWrite
from kefu.store.repository import aware
from kefu.store.sqlite_thread import SQLiteThread, is_sqlite_file

T = TypeVar("T")

_DOCS = cast(Table, KnowledgeDocument.__table__)
_CHUNKS = cast(Table, KnowledgeChunk.__table__)
_STATE = cast(Table, KnowledgeState.__table__)
_GAPS = cast(Table, KnowledgeGap.__table__)
_STATE_ID = "global"
_CURRENT_VERSION = PreparedRead(select(_STATE.c.version).where(_STATE.c.id == _STATE_ID))
# An unanswered question is counted on the turn that could not answer it: built once (store/prepared.py).
_GAP = (_GAPS.c.tenant_id == bindparam("b_tenant_id")) & (_GAPS.c.question_key == bindparam("b_key"))
_COUNT_GAP = PreparedWrite(
    update(_GAPS)
    .where(_GAP)
    .values(
        count=_GAPS.c.count + 1,
        last_seen=bindparam("b_now"),
        question=bindparam("b_question"),
        reason=bindparam("b_reason"),
        last_session_id=bindparam("b_session_id"),
    )
)
_INSERT_GAP = PreparedWrite(insert(_GAPS))
_GAP_COUNT = PreparedRead(select(_GAPS.c.count).where(_GAP))
_MAX_GAP_CHARS = 500


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document in the registry, as operators and the index see it."""

    id: str
    tenant_id: str
    collection: str
    source: str
    title: str
    format: str
    lang: str | None
    category: str | None
    product: str | None
    content_hash: str
    version: int
    chunk_count: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "collection": self.collection,
            "source": self.source,
            "title": self.title,
            "format": self.format,
            "lang": self.lang,
            "category": self.category,
            "product": self.product,
            "content_hash": self.content_hash,
            "version": self.version,
            "chunk_count": self.chunk_count,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk ready to be written: the cut text plus its vectors."""

    draft: ChunkDraft
    terms: Sequence[str]
    vector: Vector
    question_vectors: Vector | None = None


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """A new or changed document with all of its chunks, written in one transaction."""

    tenant_id: str
    collection: str
    source: str
    title: str
    format: str
    lang: str | None
    category: str | None
    product: str | None
    content_hash: str
    size_bytes: int
    display_text: str
    chunks: Sequence[StoredChunk]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return document_id(self.tenant_id, self.collection, self.source)


@dataclass(frozen=True, slots=True)
class FaqRow:
    """A curated FAQ chunk with one vector per phrasing of its question."""

    info: ChunkInfo
    question: str
    answer: str
    variants: tuple[str, ...]
    vectors: Vector


@dataclass(frozen=True, slots=True)
class ChunkText:
    """What re-embedding a stored chunk needs."""

    id: str
    search_text: str
    questions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GapRecord:
    """A question customers asked that the knowledge base could not answer."""

    id: str
    tenant_id: str
    question: str
    lang: str | None
    reason: str
    count: int
    first_seen: datetime
    last_seen: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "lang": self.lang,
            "reason": self.reason,
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


def chunk_id(doc_id: str, version: int, ordinal: int) -> str:
    return f"{doc_id}:{version}:{ordinal}"


def document_id(tenant_id: str, collection: str, source: str) -> str:
    """Stable across versions, so citations and admin URLs keep working after a document is updated."""
    return hashlib.sha256(f"{tenant_id}\0{collection}\0{source}".encode()).hexdigest()[:24]


def _vector_bytes(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _vectors(data: bytes, dim: int) -> Vector:
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim).astype(np.float32)


def _document(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        collection=row.collection,
        source=row.source,
        title=row.title,
        format=row.format,
        lang=row.lang,
        category=row.category,
        product=row.product,
        content_hash=row.content_hash,
        version=row.version,
        chunk_count=row.chunk_count,
        size_bytes=row.size_bytes,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        meta=dict(row._mapping["metadata"] or {}),
    )


_DOC_COLUMNS = tuple(c for c in _DOCS.c if c.key != "display_text")


def _chunk_info(row: Any) -> ChunkInfo:
    meta = row._mapping["metadata"] or {}
    return ChunkInfo(
        id=row.id,
        doc_id=row.doc_id,
        doc_version=row.doc_version,
        kind=row.kind,
        text=row.text,
        title=row.title,
        source=row.source,
        section=row.section,
        anchor=row.anchor,
        ref=meta.get("ref", row.source),
        lang=row.lang,
        category=meta.get("category") or row.category,
        product=meta.get("product") or row.product,
        tenant_id=row.tenant_id,
    )


class KnowledgeRepository:
    """Reads and writes the knowledge tables; one instance per process, over the shared engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # The per-turn version read on a SQLite file: one round trip to a thread of its own instead of aiosqlite's
        # several (connect, execute, fetch, close: each a hop between the event loop and its connection thread).
        self._sqlite = SQLiteThread(engine.url) if is_sqlite_file(engine.url) else None

    async def aclose(self) -> None:
        """Release the SQLite thread, if any; the engine is the caller's."""
        if self._sqlite is not None:
            await self._sqlite.aclose()

    @staticmethod
    def read_version(conn: Connection) -> int:
        """The shared knowledge version, read inside another transaction on the same database (the turn's intake
        reads it with the customer's message: one round trip less per turn)."""
        return int(_CURRENT_VERSION.scalar(conn) or 0)

    async def current_version(self) -> int:
        """The shared knowledge version: one indexed single-row read."""
        if self._sqlite is not None:
            return await self._sqlite.run(self.read_version, write=False, brief=True)
        async with self._engine.connect() as conn:
            return await conn.run_sync(self.read_version)

    async def embedder(self) -> tuple[str, int]:
        """(name, dim) of the embedder the stored vectors were made with; ("", 0) before the first ingestion."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_STATE.c.embedder, _STATE.c.dim).where(_STATE.c.id == _STATE_ID))).first()
        return (row.embedder, row.dim) if row else ("", 0)

    async def registry(self, tenant_id: str | None = None) -> tuple[int, list[DocumentRecord]]:
        """(version, documents) read together, so the list is exactly that version's."""
        query = select(_STATE.c.version.label("kb_version"), *_DOC_COLUMNS).select_from(
            _DOCS.join(_STATE, _STATE.c.id == _STATE_ID, isouter=False)
        )
        if tenant_id is not None:
            query = query.where(_DOCS.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_DOCS.c.collection, _DOCS.c.source))).all()
            version = rows[0].kb_version if rows else await self._version(conn)
        return int(version), [_document(r) for r in rows]

    async def _version(self, conn: AsyncConnection) -> int:
        return int(await conn.scalar(_CURRENT_VERSION.statement) or 0)

    async def document(self, doc_id: str) -> tuple[DocumentRecord, str] | None:
        """A document and its display text (Markdown), or None."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_DOC_COLUMNS, _DOCS.c.display_text).where(_DOCS.c.id == doc_id))).first()
        return (_document(row), row.display_text) if row else None

    async def _versioned_chunks(self, *where: ColumnElement[bool]) -> tuple[int, Sequence[Row[Any]]]:
        """(version, chunks with their document's fields) read in one statement, so the two always agree."""
        query = (
            select(
                _STATE.c.version.label("kb_version"),
                _CHUNKS,
                _DOCS.c.title,
                _DOCS.c.source,
                _DOCS.c.category,
                _DOCS.c.product,
            )
            .select_from(_CHUNKS.join(_DOCS, _DOCS.c.id == _CHUNKS.c.doc_id).join(_STATE, _STATE.c.id == _STATE_ID))
            .where(*where)
            .order_by(_CHUNKS.c.doc_id, _CHUNKS.c.ordinal)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            version = rows[0].kb_version if rows else await self._version(conn)
        return int(version), rows

    async def snapshot(self, dim: int) -> tuple[int, list[IndexedChunk]]:
        """(version, every chunk with its vector) in one statement, for rebuilding an index."""
        version, rows = await self._versioned_chunks()
        chunks = [
            IndexedChunk(
                info=_chunk_info(r),
                search_text=r.search_text,
                tokens=tuple(r.tokens.split()),
                vector=_vectors(r.vector, dim)[0],
            )
            for r in rows
        ]
        return version, chunks

    async def faq_rows(self, dim: int) -> tuple[int, list[FaqRow]]:
        """(version, curated FAQ chunks with their question vectors), for the curated-answer matcher."""
        version, rows = await self._versioned_chunks(_CHUNKS.c.kind == "faq")
        faq = []
        for r in rows:
            meta = r._mapping["metadata"] or {}
            if r.question_vectors is None:
                continue
            faq.append(
                FaqRow(
                    info=_chunk_info(r),
                    question=meta.get("question", ""),
                    answer=meta.get("answer", ""),
                    variants=tuple(meta.get("questions", [])),
                    vectors=_vectors(r.question_vectors, dim),
                )
            )
        return version, faq

    async def chunk_vectors(self, doc_id: str, dim: int) -> dict[str, Vector]:
        """search_text → vector of a document's current chunks, so unchanged chunks are not embedded again."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(select(_CHUNKS.c.search_text, _CHUNKS.c.vector).where(_CHUNKS.c.doc_id == doc_id))
            ).all()
        return {r.search_text: _vectors(r.vector, dim)[0] for r in rows}

    async def _write(self, fn: Callable[[Connection], T], *, brief: bool = False) -> T:
        """`fn(connection)` as one write transaction: on a SQLite file through the store's writing connection, which
        takes turns with every other writer of the file (the conversation store's, other workers'), else on the async
        driver. `brief` (a few rows) may run on the event loop (`SQLiteThread.run`)."""
        if self._sqlite is not None:
            return await self._sqlite.run(fn, write=True, brief=brief)
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def commit(
        self, writes: Sequence[DocumentWrite], removals: Sequence[str], *, embedder: str, dim: int
    ) -> tuple[int, dict[str, int]]:
        """Write documents and remove others in one transaction; returns (new version, doc id → doc version)."""
        now = utcnow()

        def transaction(conn: Connection) -> tuple[int, dict[str, int]]:
            versions: dict[str, int] = {}
            for write in writes:
                doc_id = write.doc_id
                previous = conn.scalar(select(_DOCS.c.version).where(_DOCS.c.id == doc_id))
                version = (previous or 0) + 1
                values = {
                    "tenant_id": write.tenant_id,
                    "collection": write.collection,
                    "source": write.source,
                    "title": write.title,
                    "format": write.format,
                    "lang": write.lang,
                    "category": write.category,
                    "product": write.product,
                    "content_hash": write.content_hash,
                    "version": version,
                    "chunk_count": len(write.chunks),
                    "size_bytes": write.size_bytes,
                    "display_text": write.display_text,
                    "metadata": write.meta,
                    "updated_at": now,
                }
                conn.execute(delete(_CHUNKS).where(_CHUNKS.c.doc_id == doc_id))
                if previous is None:
                    conn.execute(insert(_DOCS).values(id=doc_id, created_at=now, **values))
                else:
                    conn.execute(update(_DOCS).where(_DOCS.c.id == doc_id).values(**values))
                if write.chunks:
                    conn.execute(insert(_CHUNKS), [_chunk_row(write, doc_id, version, c) for c in write.chunks])
                versions[doc_id] = version
            if removals:
                conn.execute(delete(_CHUNKS).where(_CHUNKS.c.doc_id.in_(removals)))
                conn.execute(delete(_DOCS).where(_DOCS.c.id.in_(removals)))
            conn.execute(
                update(_STATE)
                .where(_STATE.c.id == _STATE_ID)
                .values(version=_STATE.c.version + 1, embedder=embedder, dim=dim, updated_at=now)
            )
            return self.read_version(conn), versions

        return await self._write(transaction)

    async def chunk_texts(self) -> list[ChunkText]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(_CHUNKS.c.id, _CHUNKS.c.search_text, _CHUNKS.c.metadata))).all()
        return [ChunkText(r.id, r.search_text, tuple((r.metadata or {}).get("questions", []))) for r in rows]

    async def replace_vectors(
        self, updates: Sequence[tuple[str, Vector, Vector | None]], *, embedder: str, dim: int
    ) -> int:
        """Store new vectors for existing chunks (another embedder) as one change; returns the new version."""

        def transaction(conn: Connection) -> int:
            for chunk, vector, questions in updates:
                conn.execute(
                    update(_CHUNKS)
                    .where(_CHUNKS.c.id == chunk)
                    .values(
                        vector=_vector_bytes(vector),
                        question_vectors=_vector_bytes(questions) if questions is not None else None,
                    )
                )
            conn.execute(
                update(_STATE)
                .where(_STATE.c.id == _STATE_ID)
                .values(version=_STATE.c.version + 1, embedder=embedder, dim=dim, updated_at=utcnow())
            )
            return self.read_version(conn)

        return await self._write(transaction)

    async def record_gap(
        self, *, tenant_id: str, question: str, lang: str | None, reason: str, session_id: str | None
    ) -> int:
        """Count one unanswered question; returns how often it has been asked."""
        key = hashlib.sha256(normalize_question(question).encode()).hexdigest()[:32]
        text = question.strip()[:_MAX_GAP_CHARS]
        now = utcnow()
        found = {"b_tenant_id": tenant_id, "b_key": key}

        def transaction(conn: Connection) -> int:
            changed = _COUNT_GAP.execute(
                conn, {**found, "b_now": now, "b_question": text, "b_reason": reason, "b_session_id": session_id}
            )
            if changed == 0:
                _INSERT_GAP.execute(
                    conn,
                    {
                        "id": new_id(),
                        "tenant_id": tenant_id,
                        "question_key": key,
                        "question": text,
                        "lang": lang,
                        "reason": reason,
                        "count": 1,
                        "first_seen": now,
                        "last_seen": now,
                        "last_session_id": session_id,
                    },
                )
            return int(_GAP_COUNT.scalar(conn, found) or 1)

        for _ in range(2):
            try:
                return await self._write(transaction, brief=True)
            except IntegrityError:
                continue  # another worker inserted the same question first: count it as an update
        return 1

    async def gaps(self, tenant_id: str, *, limit: int = 100) -> list[GapRecord]:
        """The most frequent unanswered questions first."""
        query = (
            select(_GAPS)
            .where(_GAPS.c.tenant_id == tenant_id)
            .order_by(_GAPS.c.count.desc(), _GAPS.c.last_seen.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            GapRecord(
                id=r.id,
                tenant_id=r.tenant_id,
                question=r.question,
                lang=r.lang,
                reason=r.reason,
                count=r._mapping["count"],
                first_seen=aware(r.first_seen),
                last_seen=aware(r.last_seen),
            )
            for r in rows
        ]

    async def delete_gaps(self, tenant_id: str, ids: Sequence[str] | None = None) -> int:
        """Forget answered gaps (all of the tenant's when `ids` is None); returns how many were removed."""
        query = delete(_GAPS).where(_GAPS.c.tenant_id == tenant_id)
        if ids is not None:
            query = query.where(_GAPS.c.id.in_(list(ids)))
        return await self._write(lambda conn: int(conn.execute(query).rowcount or 0))

    async def chunk_total(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(_CHUNKS)) or 0)


def _chunk_row(write: DocumentWrite, doc_id: str, version: int, chunk: StoredChunk) -> dict[str, Any]:
    draft = chunk.draft
    meta = {k: v for k, v in draft.meta.items() if v not in (None, [], "")}
    meta["ref"] = draft.ref
    if draft.questions:
        meta["questions"] = list(draft.questions)
    return {
        "id": chunk_id(doc_id, version, draft.ordinal),
        "doc_id": doc_id,
        "tenant_id": write.tenant_id,
        "doc_version": version,
        "ordinal": draft.ordinal,
        "kind": draft.kind,
        "text": draft.text,
        "search_text": draft.search_text,
        "tokens": " ".join(chunk.terms),
        "lang": draft.lang,
        "section": " › ".join(draft.section),
        "anchor": draft.anchor,
        "metadata": meta,
        "vector": _vector_bytes(chunk.vector),
        "question_vectors": _vector_bytes(chunk.question_vectors) if chunk.question_vectors is not None else None,
    }

"""The knowledge service: ingestion and sync, the shared version every worker follows, search and curated answers.

The relational store is the source of truth. A change is one transaction that also bumps `kb_state.version`;
every turn reads that version (one row) and, when it moved, the worker reloads its registry, its curated
answers and (for the in-process index) its index, so the very next turn on any worker sees the change and
no hit from a removed or superseded document version is ever returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.config import KnowledgeSettings
from kefu.embeddings.base import Embedder
from kefu.embeddings.registry import build_embedder, close_embedder
from kefu.embeddings.shared import embed_query
from kefu.errors import ConflictError, DataFileError, NotFoundError, UserError
from kefu.knowledge.curated import CuratedAnswers, CuratedMatch
from kefu.knowledge.index.base import IndexChanges, KnowledgeIndex
from kefu.knowledge.ingest import SUPPORTED_SUFFIXES, chunk_document, parse_document
from kefu.knowledge.repository import (
    DocumentRecord,
    DocumentWrite,
    KnowledgeRepository,
    StoredChunk,
    chunk_id,
)
from kefu.knowledge.text import estimate_tokens
from kefu.knowledge.tokenizer import Tokenizer
from kefu.knowledge.types import (
    ChunkDraft,
    ChunkInfo,
    IndexedChunk,
    ParsedDocument,
    SearchFilters,
    SearchHit,
    SearchMode,
    Vector,
)

log = logging.getLogger(__name__)
CHUNKER_VERSION = 1
"""Part of every content hash: a new chunking scheme re-indexes unchanged files on the next sync."""
DEFAULT_COLLECTION = "default"
UPLOADS_COLLECTION = "uploads"


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One file to ingest: its name in the knowledge base and its bytes."""

    source: str
    data: bytes


@dataclass(slots=True)
class IngestReport:
    """What an ingestion did, file by file; failures name the file and the reason."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    """Chunks written (of added and updated documents)."""
    embedded: int = 0
    """Texts sent to the embedder (chunks whose text did not change reuse their vectors)."""
    version: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"source": s, "error": e} for s, e in self.failed],
            "chunks": self.chunks,
            "embedded": self.embedded,
            "version": self.version,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Coverage:
    """Whether retrieval found something that answers the question, with the evidence."""

    answerable: bool
    best_dense: float
    lexical: float

    def as_trace(self) -> dict[str, Any]:
        return {
            "answerable": self.answerable,
            "best_dense": round(self.best_dense, 4),
            "lexical": round(self.lexical, 3),
        }


@dataclass(frozen=True, slots=True)
class _Loaded:
    """The knowledge version this worker serves: registry, curated answers, languages per tenant."""

    version: int
    docs: dict[str, DocumentRecord]
    curated: CuratedAnswers
    languages: dict[str, set[str]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    item: IngestItem
    content_hash: str
    parsed: ParsedDocument
    drafts: list[ChunkDraft]
    terms: list[list[str]]
    existing: DocumentRecord | None


def content_hash(data: bytes, chunk_tokens: int) -> str:
    """Hash of a file plus the chunking settings: either changing means the document must be re-indexed."""
    digest = hashlib.sha256(data)
    digest.update(f"\0chunker:{CHUNKER_VERSION}:{chunk_tokens}".encode())
    return digest.hexdigest()


def build_index(settings: KnowledgeSettings, data_dir: Path, dim: int) -> KnowledgeIndex:
    if settings.index == "milvus":
        from kefu.knowledge.index.milvus import MilvusIndex

        uri = settings.milvus_uri or str((data_dir / "knowledge" / "milvus.db").resolve())
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return MilvusIndex(
            uri=uri,
            token=token,
            collection=settings.milvus_collection,
            dim=dim,
            rrf_k=settings.rrf_k,
            bm25_weight=settings.bm25_weight,
        )
    from kefu.knowledge.index.embedded import EmbeddedIndex

    return EmbeddedIndex(
        data_dir / "knowledge" / "embedded", dim, rrf_k=settings.rrf_k, bm25_weight=settings.bm25_weight
    )


class KnowledgeService:
    """Owns the knowledge base of one kefu process; built once at start-up, closed at shutdown."""

    def __init__(
        self,
        settings: KnowledgeSettings,
        repository: KnowledgeRepository,
        embedder: Embedder,
        *,
        data_dir: Path,
        tokenizer: Tokenizer | None = None,
        owns_embedder: bool = True,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.embedder = embedder
        self._owns_embedder = owns_embedder
        self.tokenizer = tokenizer or Tokenizer(cache_dir=data_dir / "knowledge")
        self._data_dir = data_dir
        self._index: KnowledgeIndex | None = None
        self._loaded = _Loaded(version=-1, docs={}, curated=CuratedAnswers([]), languages={})
        self._reload_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._warm_up_task: asyncio.Task[None] | None = None
        self._fingerprinted: tuple[_Loaded, str] | None = None

    @classmethod
    async def open(
        cls, settings: KnowledgeSettings, engine: AsyncEngine, data_dir: Path, *, embedder: Embedder | None = None
    ) -> KnowledgeService:
        """Build the service, load the current knowledge and sync `source_dir` if one is configured.

        `embedder`: one shared with other stages (the caller closes it); default: built from the settings.
        """
        owns = embedder is None
        if embedder is None:
            embedder = build_embedder(settings.embedding)
        service = cls(settings, KnowledgeRepository(engine), embedder, data_dir=data_dir, owns_embedder=owns)
        try:
            await service.start()
        except BaseException:
            await service.aclose()
            raise
        return service

    async def start(self) -> None:
        stored, _ = await self.repository.embedder()
        if stored and stored != self.embedder.name:
            log.warning("knowledge was embedded with %s; re-embedding it with %s", stored, self.embedder.name)
            await self.reindex()
        await self.refresh(force=True)
        if self._index is not None and self._index.shared:
            await self._repair_shared_index()
        if self.settings.source_dir is not None:
            report = await self.sync_directory(self.settings.source_dir)
            for source, error in report.failed:
                log.error("knowledge file not ingested: %s", error or source)
            if report.changed:
                log.info(
                    "knowledge synced from %s: %d added, %d updated, %d removed, %d unchanged",
                    self.settings.source_dir,
                    len(report.added),
                    len(report.updated),
                    len(report.removed),
                    len(report.unchanged),
                )
        if self.has_documents:
            # Loading jieba's dictionary and the embedder takes seconds: done in the background, so the server is
            # ready sooner and the first customer question (which waits for it if it comes early) pays less.
            self._warm_up_task = asyncio.create_task(asyncio.to_thread(self._warm_up))

    def _warm_up(self) -> None:
        try:
            self.tokenizer.warm_up()
            self.embedder.embed_queries(["warm-up"])
        except Exception as exc:  # the first real question will report it properly
            log.warning("knowledge warm-up failed: %s: %s", type(exc).__name__, exc)

    async def aclose(self) -> None:
        if self._warm_up_task is not None:
            await asyncio.gather(self._warm_up_task, return_exceptions=True)
        if self._index is not None:
            await asyncio.to_thread(self._index.close)
        if self._owns_embedder:
            close_embedder(self.embedder)
        await self.repository.aclose()

    # --- what a turn asks -------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._loaded.version

    @property
    def fingerprint(self) -> str:
        """Identifies the knowledge this worker serves: its version and its documents (ids and contents). The same on
        every worker of a deployment; another database that reached the same version number has another one."""
        loaded = self._loaded
        if self._fingerprinted is None or self._fingerprinted[0] is not loaded:
            digest = hashlib.blake2b(str(loaded.version).encode(), digest_size=16)
            for doc in sorted(loaded.docs.values(), key=lambda d: d.id):
                digest.update(f"\n{doc.id}:{doc.version}:{doc.content_hash}".encode())
            self._fingerprinted = loaded, digest.hexdigest()
        return self._fingerprinted[1]

    @property
    def has_documents(self) -> bool:
        return bool(self._loaded.docs)

    @property
    def index(self) -> KnowledgeIndex | None:
        return self._index

    async def refresh(self, *, force: bool = False, version: int | None = None) -> bool:
        """Follow the shared version: one single-row read; a reload only when it moved. True if reloaded.

        `version`: the shared version as the caller just read it (`KnowledgeRepository.read_version`), instead of
        reading it here; one older than the loaded knowledge changes nothing."""
        if version is not None and version <= self._loaded.version and not force:
            return False
        if version is None:
            version = await self.repository.current_version()
        if version == self._loaded.version and not force:
            return False
        async with self._reload_lock:
            if not force and version == self._loaded.version:
                return False
            await self._reload()
        return True

    async def _reload(self) -> None:
        for _ in range(5):
            version, docs = await self.repository.registry()
            if not docs:
                self._loaded = _Loaded(version, {}, CuratedAnswers([]), {})
                if self._index is not None and not self._index.shared:
                    await asyncio.to_thread(self._index.rebuild, version, [])
                return
            dim = await asyncio.to_thread(lambda: self.embedder.dim)
            faq_version, faq_rows = await self.repository.faq_rows(dim)
            if faq_version != version:
                continue  # a writer committed in between: read again so registry, FAQ and index agree
            index = await self._ensure_index(dim)
            if not index.shared:
                expected = sum(d.chunk_count for d in docs)
                if await asyncio.to_thread(index.needs_rebuild, version, expected):
                    snapshot_version, chunks = await self.repository.snapshot(dim)
                    if snapshot_version != version:
                        continue
                    await asyncio.to_thread(index.rebuild, version, chunks)
                else:
                    await asyncio.to_thread(index.open, version)
            curated = CuratedAnswers(faq_rows)
            languages: dict[str, set[str]] = {}
            for doc in docs:
                if doc.lang:
                    languages.setdefault(doc.tenant_id, set()).add(doc.lang)
            for row in faq_rows:
                if row.info.lang:
                    languages.setdefault(row.info.tenant_id, set()).add(row.info.lang)
            self._loaded = _Loaded(version, {d.id: d for d in docs}, curated, languages)
            return
        raise UserError("the knowledge base kept changing while it was being loaded; retry")

    async def _ensure_index(self, dim: int) -> KnowledgeIndex:
        if self._index is None:
            self._index = await asyncio.to_thread(build_index, self.settings, self._data_dir, dim)
        return self._index

    async def _repair_shared_index(self) -> None:
        """At start-up: a shared index that lost its collection (or drifted) is rebuilt from the store."""
        assert self._index is not None
        expected = sum(d.chunk_count for d in self._loaded.docs.values())
        if await asyncio.to_thread(self._index.needs_rebuild, self._loaded.version, expected):
            dim = await asyncio.to_thread(lambda: self.embedder.dim)
            version, chunks = await self.repository.snapshot(dim)
            log.warning("rebuilding the %s knowledge index from the store (%d chunks)", self._index.name, len(chunks))
            await asyncio.to_thread(self._index.rebuild, version, chunks)

    def languages(self, tenant_id: str) -> set[str]:
        return self._loaded.languages.get(tenant_id, set())

    def filters(self, tenant_id: str, language: str | None) -> SearchFilters:
        """The customer's language when this tenant has documents in it; otherwise every language."""
        langs = (language,) if language and language in self.languages(tenant_id) else None
        return SearchFilters(tenant_id=tenant_id, langs=langs)

    async def embed_query(self, text: str) -> Vector:
        return await embed_query(self.embedder, text)

    def exact_curated(self, question: str, *, tenant_id: str) -> CuratedMatch | None:
        """A curated entry phrased exactly like the question (quick-reply buttons, repeated questions)."""
        return self._loaded.curated.exact(question, tenant_id=tenant_id)

    def best_curated(
        self, question: str, vector: Vector, *, tenant_id: str, language: str | None
    ) -> CuratedMatch | None:
        """The closest curated question whatever its score (for calibration and traces)."""
        return self._loaded.curated.best(question, vector, tenant_id=tenant_id, lang=language)

    def curated_answer(self, question: str, match: CuratedMatch | None) -> bool:
        """Whether a match is close enough to answer verbatim (and its document is still current): very close,
        or close, clearly ahead of the next entry and sharing the question's words."""
        if match is None or not self._is_current(match.row.info):
            return False
        s = self.settings
        if match.score >= s.curated_threshold:
            return True
        if match.score < s.curated_confirmed_threshold or match.margin < s.curated_margin:
            return False
        return self.word_overlap(question, match.variant) >= s.curated_lexical

    def word_overlap(self, a: str, b: str) -> float:
        """Jaccard overlap of two texts' terms."""
        left, right = set(self.tokenizer.terms(a)), set(self.tokenizer.terms(b))
        return len(left & right) / len(left | right) if left | right else 0.0

    def quotable(self, best_dense: float, lexical: float) -> bool:
        """Whether retrieval was confident enough to quote the best passage when a generated answer fails its check."""
        return best_dense >= self.settings.quote_relevance and lexical >= self.settings.quote_lexical

    async def search(
        self,
        query: str,
        *,
        tenant_id: str = "default",
        language: str | None = None,
        mode: SearchMode = "hybrid",
        k: int | None = None,
        vector: Vector | None = None,
    ) -> list[SearchHit]:
        """The best chunks for `query`, current documents only, best first."""
        index = self._index
        if index is None or not self.has_documents:
            return []
        k = k or self.settings.top_k
        filters = self.filters(tenant_id, language)

        query_vector = vector if vector is not None else await embed_query(self.embedder, query)

        def run() -> list[SearchHit]:
            terms = self.tokenizer.terms(query) if mode != "dense" else []
            return index.search(
                query,
                terms,
                query_vector,
                k=k + 5,
                candidates=max(self.settings.candidates, k),
                filters=filters,
                mode=mode,
            )

        hits = await asyncio.to_thread(run)
        return [h for h in hits if self._is_current(h.chunk)][:k]

    def _is_current(self, chunk: ChunkInfo) -> bool:
        doc = self._loaded.docs.get(chunk.doc_id)
        return doc is not None and doc.version == chunk.doc_version

    def coverage(self, query: str, hits: Sequence[SearchHit]) -> Coverage:
        """Whether the hits answer the question: a close dense match, or a fair one that shares the question's words."""
        if not hits:
            return Coverage(False, 0.0, 0.0)
        top = hits[:3]
        best = max((h.dense for h in top if h.dense is not None), default=0.0)
        wanted = self.tokenizer.term_set(query)
        found = self.tokenizer.term_set(*(part for h in top for part in (h.chunk.text, h.chunk.section)))
        lexical = len(wanted & found) / len(wanted) if wanted else 0.0
        s = self.settings
        answerable = best >= s.min_relevance or (best >= s.min_relevance_low and lexical >= s.lexical_relevance)
        return Coverage(answerable, best, lexical)

    def passages(self, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """The hits that fit in the context budget, best first (at least one)."""
        chosen: list[SearchHit] = []
        used = 0
        for hit in hits[: self.settings.top_k]:
            cost = estimate_tokens(hit.chunk.text)
            if chosen and used + cost > self.settings.context_tokens:
                break
            chosen.append(hit)
            used += cost
        return chosen

    @staticmethod
    def source_url(chunk: ChunkInfo) -> str:
        """Where a citation links: the rendered source document, at the chunk's section."""
        return f"/kb/doc/{chunk.doc_id}" + (f"#{chunk.anchor}" if chunk.anchor else "")

    # --- gaps -----------------------------------------------------------------------------------------

    async def record_gap(
        self, question: str, *, tenant_id: str, language: str | None, reason: str, session_id: str | None
    ) -> int:
        return await self.repository.record_gap(
            tenant_id=tenant_id, question=question, lang=language, reason=reason, session_id=session_id
        )

    # --- what operators do ----------------------------------------------------------------------------

    async def documents(self, tenant_id: str = "default") -> list[DocumentRecord]:
        _, docs = await self.repository.registry(tenant_id)
        return docs

    async def document(self, doc_id: str) -> tuple[DocumentRecord, str]:
        found = await self.repository.document(doc_id)
        if found is None:
            raise NotFoundError(f"no knowledge document {doc_id!r}")
        return found

    async def status(self) -> dict[str, Any]:
        await self.refresh()
        docs = list(self._loaded.docs.values())
        return {
            "version": self._loaded.version,
            "documents": len(docs),
            "chunks": sum(d.chunk_count for d in docs),
            "curated_questions": len(self._loaded.curated),
            "index": self._index.name if self._index else self.settings.index,
            "indexed_chunks": await asyncio.to_thread(self._index.count) if self._index else 0,
            "embedder": self.embedder.name,
            "languages": sorted({lang for langs in self._loaded.languages.values() for lang in langs}),
        }

    async def sync_directory(
        self, directory: Path, *, collection: str = DEFAULT_COLLECTION, tenant_id: str = "default"
    ) -> IngestReport:
        """Make `collection` mirror `directory`: new and changed files are indexed, missing ones removed."""
        items = await asyncio.to_thread(read_tree, directory)
        return await self.ingest(items, collection=collection, tenant_id=tenant_id, remove_missing=True)

    async def add_paths(
        self, paths: Sequence[Path], *, collection: str = UPLOADS_COLLECTION, tenant_id: str = "default"
    ) -> IngestReport:
        """Index files (a directory adds every supported file under it); files already indexed unchanged are skipped."""
        items: list[IngestItem] = []
        unreadable: list[tuple[str, str]] = []
        for path in paths:
            if path.is_dir():
                items.extend(await asyncio.to_thread(read_tree, path))
            else:
                try:
                    items.append(IngestItem(path.name, await asyncio.to_thread(path.read_bytes)))
                except OSError as exc:
                    unreadable.append((str(path), f"{path}: cannot be read: {exc.strerror or exc}"))
        report = await self.ingest(items, collection=collection, tenant_id=tenant_id)
        report.failed[:0] = unreadable
        return report

    async def ingest(
        self,
        items: Sequence[IngestItem],
        *,
        collection: str = UPLOADS_COLLECTION,
        tenant_id: str = "default",
        remove_missing: bool = False,
        force: bool = False,
    ) -> IngestReport:
        """Parse, chunk, embed and store `items` as one change; a file that fails is reported, the others go in."""
        started = time.perf_counter()
        report = IngestReport()
        async with self._write_lock:
            _, docs = await self.repository.registry(tenant_id)
            existing = {d.source: d for d in docs if d.collection == collection}
            prepared: list[_Prepared] = []
            seen: set[str] = set()
            for item in items:
                if item.source in seen:
                    report.failed.append((item.source, f"{item.source}: given twice in one batch"))
                    continue
                seen.add(item.source)
                digest = content_hash(item.data, self.settings.chunk_tokens)
                old = existing.get(item.source)
                if old is not None and old.content_hash == digest and not force:
                    report.unchanged.append(item.source)
                    continue
                try:
                    prepared.append(await asyncio.to_thread(self._prepare, item, digest, old))
                except DataFileError as exc:
                    report.failed.append((item.source, str(exc)))
            removals = [d for source, d in existing.items() if remove_missing and source not in seen]
            if prepared or removals:
                writes = await self._embed(prepared, tenant_id, collection, report)
                version, versions = await self.repository.commit(
                    writes, [d.id for d in removals], embedder=self.embedder.name, dim=self.embedder.dim
                )
                report.version = version
                for p in prepared:
                    (report.updated if p.existing else report.added).append(p.item.source)
                report.removed = [d.source for d in removals]
                report.chunks = sum(len(w.chunks) for w in writes)
                await self._apply(version, writes, versions, [d.id for d in removals])
            else:
                report.version = self._loaded.version
        report.seconds = time.perf_counter() - started
        return report

    def _prepare(self, item: IngestItem, digest: str, existing: DocumentRecord | None) -> _Prepared:
        parsed = parse_document(item.data, item.source)
        drafts = chunk_document(parsed, budget=self.settings.chunk_tokens)
        terms = [self.tokenizer.terms(d.search_text) for d in drafts]
        return _Prepared(item, digest, parsed, drafts, terms, existing)

    async def _embed(
        self, prepared: Sequence[_Prepared], tenant_id: str, collection: str, report: IngestReport
    ) -> list[DocumentWrite]:
        dim = await asyncio.to_thread(lambda: self.embedder.dim)
        reusable: dict[str, Vector] = {}
        for p in prepared:
            if p.existing is not None:
                reusable.update(await self.repository.chunk_vectors(p.existing.id, dim))
        passages = sorted({d.search_text for p in prepared for d in p.drafts if d.search_text not in reusable})
        questions = sorted({q for p in prepared for d in p.drafts for q in d.questions})
        report.embedded = len(passages) + len(questions)
        passage_vectors = await self._embed_batched(passages, queries=False)
        question_vectors = await self._embed_batched(questions, queries=True)
        vectors = {**reusable, **dict(zip(passages, passage_vectors, strict=True))}
        by_question = dict(zip(questions, question_vectors, strict=True))
        writes = []
        for p in prepared:
            chunks = [
                StoredChunk(
                    draft=d,
                    terms=terms,
                    vector=vectors[d.search_text],
                    question_vectors=np.vstack([by_question[q] for q in d.questions]) if d.questions else None,
                )
                for d, terms in zip(p.drafts, p.terms, strict=True)
            ]
            doc = p.parsed
            writes.append(
                DocumentWrite(
                    tenant_id=tenant_id,
                    collection=collection,
                    source=p.item.source,
                    title=doc.title,
                    format=doc.format,
                    lang=doc.lang,
                    category=doc.category,
                    product=doc.product,
                    content_hash=p.content_hash,
                    size_bytes=len(p.item.data),
                    display_text=doc.display_text,
                    chunks=chunks,
                    meta={k: v for k, v in doc.meta.items() if isinstance(v, str | int | float | bool | list)},
                )
            )
        return writes

    async def _embed_batched(self, texts: Sequence[str], *, queries: bool) -> list[Vector]:
        out: list[Vector] = []
        batch = self.settings.embedding.batch_size
        embed = self.embedder.embed_queries if queries else self.embedder.embed_passages
        for start in range(0, len(texts), batch):
            # One batch per thread hop: the event loop keeps serving turns between batches.
            out.extend(await asyncio.to_thread(embed, list(texts[start : start + batch])))
        return out

    async def _apply(
        self, version: int, writes: Sequence[DocumentWrite], versions: dict[str, int], removed: Sequence[str]
    ) -> None:
        """Bring the index to `version` after a commit, then reload what this worker serves."""
        dim = self.embedder.dim
        index = await self._ensure_index(dim)
        if index.shared:
            upserts = [
                IndexedChunk(
                    info=_info_for(write, versions[write.doc_id], chunk),
                    search_text=chunk.draft.search_text,
                    tokens=tuple(chunk.terms),
                    vector=chunk.vector,
                )
                for write in writes
                for chunk in write.chunks
            ]
            changes = IndexChanges(upserts=upserts, removed_docs=list(removed), current_versions=versions)
            if not await asyncio.to_thread(index.update, version, changes):
                snapshot_version, chunks = await self.repository.snapshot(dim)
                await asyncio.to_thread(index.rebuild, snapshot_version, chunks)
        await self.refresh(force=True)

    async def remove(self, refs: Sequence[str], *, tenant_id: str = "default") -> IngestReport:
        """Remove documents named by id or by source path; an unknown or ambiguous name is an error."""
        started = time.perf_counter()
        report = IngestReport()
        async with self._write_lock:
            _, docs = await self.repository.registry(tenant_id)
            targets: dict[str, DocumentRecord] = {}
            for ref in refs:
                matches = [d for d in docs if ref in (d.id, d.source, f"{d.collection}/{d.source}")]
                if not matches:
                    raise NotFoundError(f"no knowledge document {ref!r} (use `kefu kb list` to see ids and sources)")
                if len(matches) > 1:
                    ids = ", ".join(f"{d.id} ({d.collection}/{d.source})" for d in matches)
                    raise ConflictError(f"{ref!r} names several documents: {ids}; give the id instead")
                targets[matches[0].id] = matches[0]
            if targets:
                version, _ = await self.repository.commit(
                    [], list(targets), embedder=self.embedder.name, dim=self.embedder.dim
                )
                report.version = version
                report.removed = [d.source for d in targets.values()]
                await self._apply(version, [], {}, list(targets))
        report.seconds = time.perf_counter() - started
        return report

    async def reindex(self) -> IngestReport:
        """Re-embed every stored chunk with the configured embedder and rebuild the index (no source files needed)."""
        started = time.perf_counter()
        report = IngestReport()
        async with self._write_lock:
            dim = await asyncio.to_thread(lambda: self.embedder.dim)
            rows = await self.repository.chunk_texts()
            passages = [r.search_text for r in rows]
            report.embedded = len(passages) + sum(len(r.questions) for r in rows)
            passage_vectors = await self._embed_batched(passages, queries=False)
            question_vectors = {}
            all_questions = sorted({q for r in rows for q in r.questions})
            for q, v in zip(all_questions, await self._embed_batched(all_questions, queries=True), strict=True):
                question_vectors[q] = v
            updates = [
                (r.id, v, np.vstack([question_vectors[q] for q in r.questions]) if r.questions else None)
                for r, v in zip(rows, passage_vectors, strict=True)
            ]
            version = await self.repository.replace_vectors(updates, embedder=self.embedder.name, dim=dim)
            report.version = version
            report.chunks = len(rows)
            index = await self._ensure_index(dim)
            snapshot_version, chunks = await self.repository.snapshot(dim)
            await asyncio.to_thread(index.rebuild, snapshot_version, chunks)
            await self.refresh(force=True)
        report.seconds = time.perf_counter() - started
        return report


def _info_for(write: DocumentWrite, version: int, chunk: StoredChunk) -> ChunkInfo:
    draft = chunk.draft
    return ChunkInfo(
        id=chunk_id(write.doc_id, version, draft.ordinal),
        doc_id=write.doc_id,
        doc_version=version,
        kind=draft.kind,
        text=draft.text,
        title=write.title,
        source=write.source,
        section=" › ".join(draft.section),
        anchor=draft.anchor,
        ref=draft.ref,
        lang=draft.lang,
        category=draft.meta.get("category") or write.category,
        product=draft.meta.get("product") or write.product,
        tenant_id=write.tenant_id,
    )


def read_tree(directory: Path) -> list[IngestItem]:
    """Every supported file under `directory` (hidden files and folders skipped), named by its relative path."""
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    items = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        items.append(IngestItem(PurePosixPath(*relative.parts).as_posix(), path.read_bytes()))
    return items

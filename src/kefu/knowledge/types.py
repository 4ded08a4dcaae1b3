"""The knowledge base's own data types: parsed blocks, chunks, search filters and hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

BlockKind = Literal["paragraph", "list", "table", "code", "quote"]
ChunkKind = Literal["passage", "faq"]
SearchMode = Literal["hybrid", "dense", "bm25"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "bm25")


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document under its heading path; `parts` are the pieces it may be split into."""

    kind: BlockKind
    text: str
    """The block as Markdown (tables and lists keep their syntax, so the model sees the structure)."""
    section: tuple[str, ...] = ()
    """Heading path from the top-level section down, without the document title."""
    parts: tuple[str, ...] = ()
    """List items or table rows, for a block larger than one chunk."""
    header: str = ""
    """A table's header and separator rows, repeated in front of each piece of a split table."""


@dataclass(frozen=True, slots=True)
class FaqEntry:
    """One curated question with its answer, from an FAQ table."""

    question: str
    answer: str
    similar: tuple[str, ...] = ()
    category: str | None = None
    tags: tuple[str, ...] = ()
    lang: str | None = None
    product: str | None = None
    line: int = 0
    """Line (CSV, JSONL) or row (XLSX) in the source file, for error messages."""

    @property
    def variants(self) -> tuple[str, ...]:
        """Every phrasing that should match this entry: the question, then its similar questions."""
        return (self.question, *self.similar)


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A source file turned into blocks (or FAQ entries) plus its metadata, before chunking."""

    source: str
    format: str
    title: str
    blocks: tuple[Block, ...] = ()
    faq: tuple[FaqEntry, ...] = ()
    lang: str | None = None
    category: str | None = None
    product: str | None = None
    display_text: str = ""
    """The document as Markdown, shown on the page a citation links to."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk as the chunker cut it, before it is embedded and stored."""

    ordinal: int
    kind: ChunkKind
    text: str
    search_text: str
    section: tuple[str, ...]
    anchor: str
    ref: str
    """`source#top-level section` (or `source#question` for FAQ): stable across re-chunking, used by evaluation."""
    lang: str | None
    questions: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What a search hit says about its chunk: enough to cite it, quote it and check it is still current."""

    id: str
    doc_id: str
    doc_version: int
    kind: ChunkKind
    text: str
    title: str
    source: str
    section: str
    anchor: str
    ref: str
    lang: str | None = None
    category: str | None = None
    product: str | None = None
    tenant_id: str = "default"


Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """A chunk as an index stores it: its info, its BM25 terms and its dense vector."""

    info: ChunkInfo
    search_text: str
    tokens: tuple[str, ...]
    vector: Vector


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Metadata filters; None means no filter. Chunks without a language pass any language filter."""

    tenant_id: str = "default"
    langs: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    products: tuple[str, ...] | None = None
    kinds: tuple[ChunkKind, ...] | None = None

    def accepts(self, info: ChunkInfo) -> bool:
        if info.tenant_id != self.tenant_id:
            return False
        if self.langs is not None and info.lang is not None and info.lang not in self.langs:
            return False
        if self.categories is not None and info.category not in self.categories:
            return False
        if self.products is not None and info.product not in self.products:
            return False
        return self.kinds is None or info.kind in self.kinds


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieved chunk with the evidence for it: fused score, dense similarity and each retriever's rank."""

    chunk: ChunkInfo
    score: float
    dense: float | None = None
    """Cosine similarity of the query and the chunk's vector (None when the dense retriever was not asked)."""
    dense_rank: int | None = None
    bm25_rank: int | None = None

    def as_trace(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk.id,
            "ref": self.chunk.ref,
            "score": round(self.score, 5),
            "dense": None if self.dense is None else round(self.dense, 4),
            "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank,
        }


@dataclass(slots=True)
class KnowledgeTurn:
    """What the knowledge stage hands to prompt assembly and the grounding check for one turn."""

    query: str
    """The standalone question (rewritten when the customer's message was a follow-up)."""
    passages: list[SearchHit]
    """The numbered passages the model answers from, best first."""
    best_dense: float = 0.0
    lexical: float = 0.0
    """Share of the question's words found in the top passages."""

"""The Milvus index (pymilvus `MilvusClient`): dense vectors + built-in BM25 over a jieba analyzer, fused by RRF.

One collection serves every worker, so a change is applied once, in place, by the process that made it.
The same code runs against a Milvus cluster (`http://host:19530`), a `milvus-lite server`, or a Milvus Lite
file (`.db`, one process only).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from kefu.errors import BackendError, ConfigError
from kefu.knowledge.index.base import IndexChanges
from kefu.knowledge.index.fusion import RRF_K, reciprocal_rank_fusion
from kefu.knowledge.tokenizer import STOPWORDS
from kefu.knowledge.types import ChunkInfo, IndexedChunk, SearchFilters, SearchHit, SearchMode, Vector

_FIELDS = (
    "doc_id",
    "doc_version",
    "tenant_id",
    "kind",
    "lang",
    "category",
    "product",
    "title",
    "source",
    "section",
    "anchor",
    "ref",
    "text",
)
_OUTPUT = [*_FIELDS, "dense"]
_BATCH = 256
_MAX_TEXT = 16384


class MilvusIndex:
    """Hybrid search in one Milvus collection; filters become Milvus boolean expressions."""

    name = "milvus"
    shared = True

    def __init__(
        self,
        *,
        uri: str,
        collection: str,
        dim: int,
        token: str | None = None,
        rrf_k: int = RRF_K,
        bm25_weight: float = 1.0,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.rrf_k = rrf_k
        self.bm25_weight = bm25_weight
        self._token = token
        self._client: Any = None
        # Milvus Lite runs inside this process and is not documented as thread-safe; a server does not mind.
        self._lock = threading.RLock()

    def _connect(self) -> Any:
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise ConfigError("KEFU_KNOWLEDGE__INDEX=milvus needs pymilvus (pip install 'kefu[milvus]')") from None
            try:
                self._client = MilvusClient(uri=self.uri, token=self._token or "")
            except Exception as exc:
                raise BackendError(f"cannot connect to Milvus at {self.uri}: {type(exc).__name__}: {exc}") from None
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            client = self._connect()
            try:
                return fn(client, *args, **kwargs)
            except (ConfigError, BackendError):
                raise
            except Exception as exc:
                raise BackendError(f"Milvus {what} failed ({self.uri}, {self.collection}): {exc}") from None

    def _create(self, client: Any) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=160)
        for name, length in (
            ("doc_id", 64),
            ("tenant_id", 64),
            ("kind", 16),
            ("lang", 8),
            ("category", 128),
            ("product", 128),
            ("title", 512),
            ("source", 512),
            ("section", 1024),
            ("anchor", 256),
            ("ref", 1024),
            ("text", _MAX_TEXT),
        ):
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        schema.add_field("doc_version", DataType.INT64)
        # Milvus's own BM25 needs an analyzer: jieba cuts Chinese, lowercase and the stop list match kefu's terms.
        analyzer = {
            "tokenizer": "jieba",
            "filter": ["lowercase", {"type": "stop", "stop_words": sorted(STOPWORDS)}],
        }
        schema.add_field(
            "search_text", DataType.VARCHAR, max_length=_MAX_TEXT, enable_analyzer=True, analyzer_params=analyzer
        )
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["search_text"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index(field_name="dense", index_type="AUTOINDEX", metric_type="IP")
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(self.collection, schema=schema, index_params=index)

    def _exists(self, client: Any) -> bool:
        return bool(client.has_collection(self.collection))

    def _dim_matches(self, client: Any) -> bool:
        description = client.describe_collection(self.collection)
        for field in description.get("fields", []):
            if field.get("name") == "dense":
                return int(field.get("params", {}).get("dim", self.dim)) == self.dim
        return False

    def needs_rebuild(self, version: int, expected_chunks: int) -> bool:
        def check(client: Any) -> bool:
            if not self._exists(client):
                return expected_chunks > 0
            return not self._dim_matches(client) or self._count(client) != expected_chunks

        return bool(self._call("check", check))

    def open(self, version: int) -> None:
        def run(client: Any) -> None:
            if not self._exists(client):
                self._create(client)

        self._call("open", run)

    def rebuild(self, version: int, chunks: Sequence[IndexedChunk]) -> None:
        def run(client: Any) -> None:
            if self._exists(client):
                client.drop_collection(self.collection)
            self._create(client)
            for start in range(0, len(chunks), _BATCH):
                client.insert(self.collection, [_row(c) for c in chunks[start : start + _BATCH]])

        self._call("rebuild", run)

    def update(self, version: int, changes: IndexChanges) -> bool:
        def run(client: Any) -> None:
            if not self._exists(client):
                self._create(client)
            for start in range(0, len(changes.upserts), _BATCH):
                client.upsert(self.collection, [_row(c) for c in changes.upserts[start : start + _BATCH]])
            # New chunks first, old ones after: between the two, hits of the old version are filtered out by the
            # service's registry check, so no customer ever gets a gap or a stale answer.
            for doc_id, current in changes.current_versions.items():
                client.delete(
                    self.collection, filter=f"doc_id == {json.dumps(doc_id)} and doc_version != {int(current)}"
                )
            if changes.removed_docs:
                client.delete(self.collection, filter=f"doc_id in {json.dumps(list(changes.removed_docs))}")

        self._call("update", run)
        return True

    def search(
        self,
        text: str,
        terms: Sequence[str],
        vector: Vector,
        *,
        k: int,
        candidates: int,
        filters: SearchFilters,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = _expression(filters)
        dense = [float(x) for x in vector]

        def run(client: Any) -> list[Any]:
            if not self._exists(client):
                return []
            if mode == "dense":
                return list(
                    client.search(
                        self.collection,
                        data=[dense],
                        anns_field="dense",
                        limit=k,
                        filter=expr,
                        output_fields=_OUTPUT,
                        search_params={"metric_type": "IP"},
                    )[0]
                )
            if mode == "bm25":
                if not terms:
                    return []
                return list(
                    client.search(
                        self.collection, data=[text], anns_field="sparse", limit=k, filter=expr, output_fields=_OUTPUT
                    )[0]
                )
            if self.bm25_weight != 1.0 and terms:
                return self._weighted_fusion(client, dense, text, expr, k, candidates)
            requests = [
                AnnSearchRequest(
                    data=[dense], anns_field="dense", param={"metric_type": "IP"}, limit=candidates, expr=expr
                )
            ]
            if terms:
                requests.append(
                    AnnSearchRequest(data=[text], anns_field="sparse", param={}, limit=candidates, expr=expr)
                )
            return list(
                client.hybrid_search(
                    self.collection, requests, ranker=RRFRanker(self.rrf_k), limit=k, output_fields=_OUTPUT
                )[0]
            )

        query = np.asarray(vector, dtype=np.float32)
        hits = []
        for rank, hit in enumerate(self._call("search", run), start=1):
            entity = hit["entity"]
            info = _info(str(hit["id"]), entity)
            cosine = float(np.asarray(entity["dense"], dtype=np.float32) @ query)
            hits.append(
                SearchHit(
                    chunk=info,
                    score=float(hit["distance"]),
                    dense=cosine,
                    dense_rank=rank if mode == "dense" else None,
                    bm25_rank=rank if mode == "bm25" else None,
                )
            )
        return hits

    def _weighted_fusion(
        self, client: Any, dense: list[float], text: str, expr: str, k: int, candidates: int
    ) -> list[Any]:
        """Milvus's RRFRanker has no weights: with a BM25 weight other than 1, both rankings are fused here,
        by the same function as the embedded index, so both indexes rank alike."""
        by_dense = client.search(
            self.collection,
            data=[dense],
            anns_field="dense",
            limit=candidates,
            filter=expr,
            output_fields=_OUTPUT,
            search_params={"metric_type": "IP"},
        )[0]
        by_bm25 = client.search(
            self.collection, data=[text], anns_field="sparse", limit=candidates, filter=expr, output_fields=_OUTPUT
        )[0]
        hits = {str(h["id"]): h for h in [*by_dense, *by_bm25]}
        fused = reciprocal_rank_fusion(
            [[str(h["id"]) for h in by_dense], [str(h["id"]) for h in by_bm25]], self.rrf_k, (1.0, self.bm25_weight)
        )
        return [{**hits[key], "distance": score} for key, score in fused[:k]]

    def _count(self, client: Any) -> int:
        result = client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"]) if result else 0

    def count(self) -> int:
        return int(self._call("count", lambda client: self._count(client) if self._exists(client) else 0))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None


def _expression(filters: SearchFilters) -> str:
    """A Milvus boolean expression for the filters (values JSON-quoted, so quotes in them cannot break out)."""
    parts = [f"tenant_id == {json.dumps(filters.tenant_id)}"]
    if filters.langs is not None:
        parts.append(f"lang in {json.dumps([*filters.langs, ''])}")
    if filters.categories is not None:
        parts.append(f"category in {json.dumps(list(filters.categories))}")
    if filters.products is not None:
        parts.append(f"product in {json.dumps(list(filters.products))}")
    if filters.kinds is not None:
        parts.append(f"kind in {json.dumps(list(filters.kinds))}")
    return " and ".join(parts)


def _row(chunk: IndexedChunk) -> dict[str, Any]:
    info = chunk.info
    return {
        "id": info.id,
        "doc_id": info.doc_id,
        "doc_version": info.doc_version,
        "tenant_id": info.tenant_id,
        "kind": info.kind,
        "lang": info.lang or "",
        "category": info.category or "",
        "product": info.product or "",
        "title": info.title[:512],
        "source": info.source[:512],
        "section": info.section[:1024],
        "anchor": info.anchor[:256],
        "ref": info.ref[:1024],
        "text": info.text[: _MAX_TEXT // 4],
        "search_text": chunk.search_text[: _MAX_TEXT // 4],
        "dense": [float(x) for x in chunk.vector],
    }


def _info(chunk_id: str, entity: dict[str, Any]) -> ChunkInfo:
    return ChunkInfo(
        id=chunk_id,
        doc_id=entity["doc_id"],
        doc_version=int(entity["doc_version"]),
        kind=entity["kind"],
        text=entity["text"],
        title=entity["title"],
        source=entity["source"],
        section=entity["section"],
        anchor=entity["anchor"],
        ref=entity["ref"],
        lang=entity["lang"] or None,
        category=entity["category"] or None,
        product=entity["product"] or None,
        tenant_id=entity["tenant_id"],
    )

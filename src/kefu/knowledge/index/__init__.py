"""Search indexes over the knowledge chunks, one interface, two implementations (embedded, Milvus)."""

from kefu.knowledge.index.base import IndexChanges, KnowledgeIndex

__all__ = ["IndexChanges", "KnowledgeIndex"]

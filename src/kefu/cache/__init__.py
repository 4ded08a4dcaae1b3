"""The answer cache: non-personal knowledge answers served again, in process or shared through Redis (docs/cache.md)."""

from kefu.cache.entry import CachedAnswer
from kefu.cache.keys import Namespace, normalise
from kefu.cache.service import AnswerCache, build_answer_cache
from kefu.cache.store import AnswerStore, Limits, MemoryStore, StoreStats

__all__ = [
    "AnswerCache",
    "AnswerStore",
    "CachedAnswer",
    "Limits",
    "MemoryStore",
    "Namespace",
    "StoreStats",
    "build_answer_cache",
    "normalise",
]

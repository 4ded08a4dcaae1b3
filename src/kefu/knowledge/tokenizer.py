"""Terms for BM25 and for the grounding check: jieba for Chinese, light stemming for English."""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:[.:][0-9]+)*|[\u3400-\u9fff]+", re.UNICODE)
_HAS_CJK = re.compile(r"[\u3400-\u9fff]")

# Words too common to say anything about what a passage is about (retrieval) or what a sentence claims (grounding).
STOPWORDS = frozenset(
    """
    的 了 吗 呢 吧 啊 呀 哦 嗯 是 在 和 与 及 或 也 都 就 还 又 而 但 把 被 让 给 对 从 向 于 以 之 其
    这 那 这个 那个 这些 那些 我 你 您 他 她 它 我们 你们 他们 咱们 自己 一个 一下 有 没 会 能 可以 可
    要 想 请 请问 问 下 个 么 什么 怎么 怎样 如何 为什么 哪 哪里 哪个 多少 几 啦 嘛 呗 哈 谢谢 好 好的
    麻烦 一 上 中 里 等 着 过 得 地 很 太 更 最
    a an the and or but if then of to in on at by for with from as is are was were be been being am do does did
    i me my we our you your he she it its they them their this that these those there here what which who whom
    how when where why can could would should will shall may might must have has had having not no yes so than
    too very just also any some all about into over after before please hi hello thanks thank s t
    """.split()
)


def _stem(word: str) -> str:
    """A few English suffixes only, applied the same way to queries and passages ("returns" → "return")."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class Tokenizer:
    """Splits text into lower-case terms without stopwords; jieba is loaded on first use (about a second)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._jieba: Any = None
        self._lock = threading.Lock()
        self._term_set = functools.lru_cache(maxsize=4096)(self._distinct_terms)

    def _segmenter(self) -> Any:
        if self._jieba is None:
            with self._lock:
                if self._jieba is None:
                    import jieba

                    # jieba announces its dictionary loading on stderr at DEBUG level.
                    jieba.setLogLevel(logging.WARNING)
                    segmenter = jieba.Tokenizer()
                    if self._cache_dir is not None:
                        self._cache_dir.mkdir(parents=True, exist_ok=True)
                        segmenter.tmp_dir = str(self._cache_dir)
                    segmenter.initialize()
                    self._jieba = segmenter
        return self._jieba

    def warm_up(self) -> None:
        """Load the Chinese dictionary now rather than during the first customer turn."""
        self._segmenter()

    def term_set(self, *texts: str) -> frozenset[str]:
        """The distinct terms of `texts` together (the same as of the texts joined by spaces). Each text's terms are
        remembered (4096 texts, least recently used out): grounding and the coverage check cut the same passages
        on every turn that retrieves them, which took about 3% of the event loop in the load test."""
        if len(texts) == 1:
            return self._term_set(texts[0])
        return frozenset().union(*(self._term_set(text) for text in texts))

    def terms(self, text: str, *, keep_stopwords: bool = False) -> list[str]:
        """Search terms of `text`, in order; Chinese runs are cut into words and their sub-words."""
        normalized = unicodedata.normalize("NFKC", text).lower()
        out: list[str] = []
        for match in _WORD.finditer(normalized):
            piece = match.group()
            if not _HAS_CJK.match(piece):
                if keep_stopwords or piece not in STOPWORDS:
                    out.append(_stem(piece))
                continue
            for word in self._segmenter().cut_for_search(piece):
                if keep_stopwords or word not in STOPWORDS:
                    out.append(word)
                if len(word) > 2:
                    # jieba keeps unknown compounds whole ("开专票", "数电专票"); their character pairs still match.
                    out.extend(word[i : i + 2] for i in range(len(word) - 1))
        return out

    def _distinct_terms(self, text: str) -> frozenset[str]:
        return frozenset(self.terms(text))

"""The safety services of one app: redactor, cipher, and per-tenant input and output guards."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kefu.config import Settings
from kefu.embeddings.base import Embedder
from kefu.safety.crypto import TextCipher
from kefu.safety.injection import EmbeddingInjectionClassifier
from kefu.safety.input_guard import InputGuard
from kefu.safety.lexicon import DEFAULT_WORDS, Lexicon, read_words
from kefu.safety.normalise import warm as warm_reading
from kefu.safety.output_guard import OutputGuard
from kefu.safety.pii import PiiDetector, PiiVault, Redactor, normalise

log = logging.getLogger(__name__)


class Safety:
    """Builds the guards once; operator words are per tenant, everything else is shared."""

    def __init__(
        self,
        settings: Settings,
        *,
        secret: bytes,
        embedder: Embedder | None = None,
        operator_words: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.settings = settings
        key = settings.privacy.encryption_key
        self.cipher = TextCipher(key.get_secret_value()) if key is not None else None
        self.keep_original = settings.privacy.keep_original
        self.detector = PiiDetector(settings.privacy.extra_patterns)
        self.redactor = Redactor(self.detector, self.cipher)
        # The vault's fingerprints are keyed with a secret derived for this purpose only.
        self._vault_secret = hmac.new(secret, b"kefu pii vault", hashlib.sha256).digest()
        self._base_words = self._shared_words(settings)
        self.public_values = self._shop_contacts(settings.shop.dir)
        self._operator_words: dict[str, list[str]] = {t: list(w) for t, w in (operator_words or {}).items()}
        self._lexicons: dict[str, Lexicon] = {}
        g = settings.guards
        self.classifier = (
            EmbeddingInjectionClassifier.from_files(
                embedder,
                threshold=g.injection_threshold,
                extra=g.injection_examples_file,
                cache_dir=g.cache_dir or settings.data_dir / "safety",
            )
            if embedder is not None and g.embedding_classifier
            else None
        )
        warm_reading()  # the input guard's tables load at start-up, not during a customer's first turn
        self._input: dict[str, InputGuard] = {}
        self._output: dict[str, OutputGuard] = {}

    @staticmethod
    def _shared_words(settings: Settings) -> list[str]:
        words = read_words(DEFAULT_WORDS)
        shop_file = settings.shop.dir / "safety" / "sensitive_words.txt" if settings.shop.dir else None
        for path in (shop_file, settings.guards.sensitive_words_file):
            if path is not None and Path(path).is_file():
                words.extend(read_words(Path(path)))
        return words

    def _shop_contacts(self, shop_dir: Path | None) -> frozenset[str]:
        """Values that look like personal data but are the shop's published contacts (in its knowledge files)."""
        if shop_dir is None or not shop_dir.is_dir():
            return frozenset()
        found: set[str] = set()
        shop_file = shop_dir / "shop.yaml"
        for path in [shop_file, *sorted((shop_dir / "knowledge").rglob("*"))]:
            if path.is_file() and path.suffix in (".yaml", ".yml", ".md", ".csv", ".jsonl", ".txt"):
                if path.stat().st_size > 2_000_000:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
                # shop.yaml's addresses are the shop's own (the return address a filed return quotes); addresses in
                # knowledge files may be examples of a customer's, so those stay personal data.
                found.update(
                    normalise(m.kind, m.value)
                    for m in self.detector.find(text)
                    if m.kind != "ADDRESS" or path == shop_file
                )
        return frozenset(found)

    def lexicon(self, tenant_id: str) -> Lexicon:
        lexicon = self._lexicons.get(tenant_id)
        if lexicon is None:
            lexicon = Lexicon([*self._base_words, *self._operator_words.get(tenant_id, [])])
            self._lexicons[tenant_id] = lexicon
        return lexicon

    def set_operator_words(self, tenant_id: str, words: list[str]) -> None:
        """An operator changed the tenant's list: rebuild its guards on next use."""
        self._operator_words[tenant_id] = list(words)
        for cache in (self._lexicons, self._input, self._output):
            cache.pop(tenant_id, None)

    def input_guard(self, tenant_id: str) -> InputGuard:
        guard = self._input.get(tenant_id)
        if guard is None:
            guard = InputGuard(
                self.lexicon(tenant_id), max_chars=self.settings.guards.max_message_chars, classifier=self.classifier
            )
            self._input[tenant_id] = guard
        return guard

    def output_guard(self, tenant_id: str) -> OutputGuard:
        guard = self._output.get(tenant_id)
        if guard is None:
            guard = OutputGuard(self.lexicon(tenant_id), self.redactor, self.public_values)
            self._output[tenant_id] = guard
        return guard

    def vault(self, stored: Mapping[str, Any] | None) -> PiiVault:
        return PiiVault.load(self._vault_secret, stored)

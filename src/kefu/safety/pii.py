"""Personal-data detection (validated where a checksum exists) and stable per-session placeholders.

A detected value becomes a placeholder such as `[PHONE_1:5678]`: the kind, a number that stays the same
for that value for the whole session, and — for phone, bank-card and ID numbers — the last four digits,
so the model can still say "your phone ending in 5678". The vault of a session maps placeholders back
to the real values (for backend actions) and to masked forms (for what the customer sees).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from kefu.safety.crypto import TextCipher
from kefu.safety.prefilter import PatternSet

# Detection order decides overlaps: the more specific (validated) kinds win.
KINDS = ("EMAIL", "ID", "CARD", "PHONE", "LANDLINE", "PASSPORT", "ADDRESS")
_TAIL_KINDS = frozenset({"PHONE", "CARD", "ID", "LANDLINE"})

_SEP = r"[ \-]?"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "EMAIL": re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
    ),
    "ID": re.compile(
        r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])"
    ),
    "CARD": re.compile(r"(?<![0-9A-Za-z])(?:\d{4}[ \-]?){3,4}\d{1,4}(?![0-9A-Za-z])"),
    "PHONE": re.compile(rf"(?<![0-9A-Za-z+])(?:\+?86{_SEP})?1[3-9]\d{_SEP}\d{{4}}{_SEP}\d{{4}}(?![0-9A-Za-z])"),
    "LANDLINE": re.compile(r"(?<![0-9A-Za-z])(?:\(0\d{2,3}\)|0\d{2,3})[ \-]?[2-9]\d{6,7}(?:-\d{1,5})?(?![0-9A-Za-z])"),
    "PASSPORT": re.compile(r"(?<![0-9A-Za-z])(?:[EeGgDdSsPp]\d{8}|[Ee][A-HJ-NP-Za-hj-np-z]\d{7})(?![0-9A-Za-z])"),
    "ADDRESS": re.compile(
        r"(?:[\u4e00-\u9fff]{2,7}(?:省|自治区|市))?[\u4e00-\u9fff]{1,7}(?:市|区|县|州)"
        r"[\u4e00-\u9fff0-9A-Za-z\-]{1,30}?(?:路|街|道|巷|弄|大街|胡同)[0-9一二三四五六七八九十\-]+号"
        r"(?:[0-9A-Za-z\u4e00-\u9fff\-]{0,20}?(?:室|栋|楼|单元|号楼|层))?"
        r"|(?<![0-9A-Za-z])\d{1,5}(?:\s+[A-Z][a-z]+){1,4}\s+(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|"
        r"Boulevard|Blvd|Way|Court|Ct|Place|Pl)\b\.?(?:,?\s*(?:Apt|Suite|Unit|Flat)\.?\s*[0-9A-Za-z\-]+)?"
    ),
}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
PLACEHOLDER = re.compile(r"\[(?P<kind>[A-Z][A-Z0-9_]*?)_(?P<n>\d+)(?::(?P<tail>[0-9Xx]{4}))?\]")


def valid_resident_id(value: str) -> bool:
    """Mainland resident ID: an existing birth date and the ISO 7064 mod 11-2 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17].upper()


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every bank card number carries."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _validate(kind: str, value: str) -> bool:
    if kind == "ID":
        return valid_resident_id(value)
    if kind == "CARD":
        digits = _digits(value)
        return 16 <= len(digits) <= 19 and luhn_valid(digits)
    return True


def normalise(kind: str, value: str) -> str:
    """One spelling per value, so `138 0013 8000` and `13800138000` get the same placeholder."""
    if kind in ("PHONE", "CARD", "LANDLINE"):
        digits = _digits(value)
        return digits[2:] if kind == "PHONE" and len(digits) == 13 and digits.startswith("86") else digits
    if kind in ("ID", "PASSPORT", "EMAIL"):
        return value.upper()
    return re.sub(r"\s+", " ", value.strip())


def masked(kind: str, value: str) -> str:
    """What a customer may see of a value: enough to recognise it, not enough to use it."""
    norm = normalise(kind, value)
    if kind == "PHONE":
        return f"{norm[:3]}****{norm[-4:]}"
    if kind in ("CARD", "LANDLINE"):
        return f"****{norm[-4:]}"
    if kind == "ID":
        return f"{norm[:4]}**********{norm[-4:]}"
    if kind == "EMAIL":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "PASSPORT":
        return f"{norm[:1]}******{norm[-2:]}"
    if kind == "ADDRESS" and any(c.isdigit() for c in value):
        # Province, city and street stay readable (the customer checks a new address against them); the
        # numbers that pin down a door do not: "浙江省杭州市西湖区文三路***号".
        return re.sub(r"\d+", "***", value)
    return f"{value[:3]}***"


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One detected value in a text."""

    kind: str
    start: int
    end: int
    value: str


class PiiDetector:
    """Finds personal data: the built-in kinds plus operator patterns (KIND → regex).

    A turn scans its message and its reply (the reply several times: the output guard, the cache's policy), and
    the same texts come back turn after turn (an FAQ's answer, a flow's prompt): the last `MEMO_SIZE` texts' findings
    are kept. A new text is scanned by RE2 first (`PatternSet`, one pass), and only the patterns it may match are
    searched with Python's, which decides: the address pattern alone, run at every position of a long reply, had
    cost more than all the others together.
    """

    MEMO_SIZE = 2048

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        self._patterns = dict(_PATTERNS)
        for kind, pattern in (extra_patterns or {}).items():
            name = re.sub(r"[^A-Z0-9]", "_", kind.upper())
            self._patterns[name] = re.compile(pattern)
        self._ordered = list(self._patterns.items())
        self._prefilter = PatternSet([pattern for _, pattern in self._ordered])
        # Cheap pre-check: most messages contain no digit, '@' or address word and skip the regexes.
        self._maybe = re.compile(r"\d|@|路|街|道|巷|弄|Street|St\b|Road|Ave" + ("|." if extra_patterns else ""))
        self._memo = lru_cache(maxsize=self.MEMO_SIZE)(self._find)

    @property
    def kinds(self) -> list[str]:
        return list(self._patterns)

    def find(self, text: str) -> tuple[PiiMatch, ...]:
        """The values found in `text`, in order; where two patterns' matches overlap, the earlier kind's."""
        return self._memo(text) if self._maybe.search(text) else ()

    def _find(self, text: str) -> tuple[PiiMatch, ...]:
        taken: list[PiiMatch] = []
        for kind, pattern in self._prefilter.select(self._ordered, text):
            for m in pattern.finditer(text):
                if not _validate(kind, m.group(0)):
                    continue
                if any(m.start() < t.end and t.start < m.end() for t in taken):
                    continue
                taken.append(PiiMatch(kind, m.start(), m.end(), m.group(0)))
        return tuple(sorted(taken, key=lambda t: t.start))


@dataclass(slots=True)
class PiiVault:
    """A session's placeholders: value fingerprints → placeholder, and (this process, or encrypted) the values.

    Fingerprints are keyed HMACs, so the stored vault reveals nothing without the secret; real values are
    stored only encrypted, and only when an encryption key is configured.
    """

    secret: bytes
    by_fingerprint: dict[str, str] = field(default_factory=dict)
    values: dict[str, tuple[str, str]] = field(default_factory=dict)
    """placeholder → (kind, original value), for the values this vault has seen or decrypted."""
    encrypted: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    changed: bool = False

    def fingerprint(self, kind: str, value: str) -> str:
        msg = f"{kind}\x00{normalise(kind, value)}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:24]

    def knows(self, kind: str, value: str) -> bool:
        return self.fingerprint(kind, value) in self.by_fingerprint

    def placeholder(self, kind: str, value: str, cipher: TextCipher | None) -> str:
        fp = self.fingerprint(kind, value)
        token = self.by_fingerprint.get(fp)
        if token is None:
            n = self.counters.get(kind, 0) + 1
            self.counters[kind] = n
            tail = f":{normalise(kind, value)[-4:]}" if kind in _TAIL_KINDS else ""
            token = f"[{kind}_{n}{tail}]"
            self.by_fingerprint[fp] = token
            if cipher is not None:
                self.encrypted[token] = cipher.encrypt(f"{kind}\x00{value}")
            self.changed = True
        # Backend actions get one canonical spelling (digits only for numbers).
        self.values[token] = (kind, normalise(kind, value) if kind in _TAIL_KINDS else value)
        return token

    def original(self, token: str, cipher: TextCipher | None = None) -> str | None:
        """The real value behind a placeholder (backend actions need it), when this vault can know it."""
        if token in self.values:
            return self.values[token][1]
        if cipher is not None and token in self.encrypted:
            kind, _, value = cipher.decrypt(self.encrypted[token]).partition("\x00")
            self.values[token] = (kind, value)
            return value
        return None

    def masked(self, token: str, cipher: TextCipher | None = None) -> str:
        value = self.original(token, cipher)
        m = PLACEHOLDER.fullmatch(token)
        if value is None or m is None:
            tail = m.group("tail") if m and m.group("tail") else ""
            return f"****{tail}" if tail else "***"
        return masked(m.group("kind"), value)

    def dump(self) -> dict[str, Any]:
        return {"v": 1, "fp": dict(self.by_fingerprint), "enc": dict(self.encrypted), "n": dict(self.counters)}

    @classmethod
    def load(cls, secret: bytes, data: Mapping[str, Any] | None) -> PiiVault:
        data = data or {}
        return cls(
            secret=secret,
            by_fingerprint=dict(data.get("fp", {})),
            encrypted=dict(data.get("enc", {})),
            counters={str(k): int(v) for k, v in dict(data.get("n", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class Redaction:
    """A text with its personal data replaced by placeholders."""

    text: str
    kinds: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.kinds)


class Redactor:
    """Replaces personal data with the session's placeholders, and placeholders with masked forms."""

    def __init__(self, detector: PiiDetector, cipher: TextCipher | None = None) -> None:
        self.detector = detector
        self.cipher = cipher

    def redact(self, text: str, vault: PiiVault) -> Redaction:
        matches = self.detector.find(text)
        if not matches:
            return Redaction(text)
        parts: list[str] = []
        pos = 0
        for m in matches:
            parts.append(text[pos : m.start])
            parts.append(vault.placeholder(m.kind, m.value, self.cipher))
            pos = m.end
        parts.append(text[pos:])
        return Redaction("".join(parts), tuple(m.kind for m in matches))

    def scrub(self, text: str) -> str:
        """Redact without a session (logs, exports): every value becomes its kind."""
        matches = self.detector.find(text)
        out, pos = [], 0
        for m in matches:
            out.append(text[pos : m.start])
            out.append(f"[{m.kind}]")
            pos = m.end
        out.append(text[pos:])
        return "".join(out)

    def unmask_for_customer(self, text: str, vault: PiiVault) -> str:
        """Placeholders the model wrote become masked values (`138****5678`), never the full value."""
        return PLACEHOLDER.sub(lambda m: vault.masked(m.group(0), self.cipher), text)

    def foreign(self, text: str, vault: PiiVault | None, public: frozenset[str] = frozenset()) -> list[PiiMatch]:
        """Full values in a reply that are neither the current customer's own nor the shop's public contacts."""
        return [
            m
            for m in self.detector.find(text)
            if normalise(m.kind, m.value) not in public and (vault is None or not vault.knows(m.kind, m.value))
        ]


def kinds_in(matches: Iterable[PiiMatch]) -> list[str]:
    return sorted({m.kind for m in matches})

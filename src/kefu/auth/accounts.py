"""Operator accounts (argon2 password hashes), channel API keys (SHA-256) and operator sensitive words."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from kefu.auth.tokens import AuthError
from kefu.errors import ConflictError, NotFoundError, UserError
from kefu.store.auth_models import ApiKey, Operator, SensitiveWord
from kefu.store.models import utcnow
from kefu.store.repository import aware

Role = Literal["admin", "agent", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)
# A role may do what the roles after it may: admin ⊇ agent ⊇ viewer.
_RANK = {"admin": 3, "agent": 2, "viewer": 1}
KEY_PREFIX = "kefu_"
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,128}$")


def role_allows(role: str, needed: str) -> bool:
    return _RANK.get(role, 0) >= _RANK[needed]


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """An operator as the API shows it (never the password hash)."""

    id: str
    tenant_id: str
    username: str
    role: str
    active: bool
    token_version: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A channel API key as the API shows it (the key itself only once, at creation)."""

    id: str
    tenant_id: str
    channel: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _operator(row: Operator) -> OperatorRecord:
    return OperatorRecord(
        row.id, row.tenant_id, row.username, row.role, row.active, row.token_version, aware(row.created_at)
    )


def _key(row: ApiKey) -> ApiKeyRecord:
    revoked = aware(row.revoked_at) if row.revoked_at else None
    return ApiKeyRecord(row.id, row.tenant_id, row.channel, row.name, row.prefix, aware(row.created_at), revoked)


class AccountStore:
    """Reads and writes operators, API keys and sensitive words; every query is scoped to a tenant."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # argon2id with the library's maintained defaults (RFC 9106 low-memory profile).
        self._hasher = PasswordHasher()
        self._any_operator = False

    # ---------------------------------------------------------------- operators
    async def has_operators(self) -> bool:
        """Whether any account exists; once one does, admin endpoints always need a token (cached: it stays true)."""
        if not self._any_operator:
            async with self._sessions() as db:
                self._any_operator = bool(await db.scalar(select(func.count()).select_from(Operator)))
        return self._any_operator

    async def create_operator(self, *, username: str, password: str, role: str, tenant_id: str) -> OperatorRecord:
        if not _USERNAME.match(username):
            raise UserError("username: 3-128 letters, digits or . _ @ -")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < 10:
            raise UserError("password must be at least 10 characters")
        row = Operator(
            tenant_id=tenant_id,
            username=username,
            password_hash=self._hasher.hash(password),
            role=role,
            active=True,
            token_version=0,
            created_at=utcnow(),
        )
        try:
            async with self._sessions() as db, db.begin():
                db.add(row)
        except IntegrityError:
            raise ConflictError(f"username {username!r} is taken") from None
        self._any_operator = True
        return _operator(row)

    async def authenticate(self, username: str, password: str) -> OperatorRecord:
        async with self._sessions() as db:
            row = await db.scalar(select(Operator).where(Operator.username == username))
        if row is None:
            # Hash anyway, so timing does not tell which usernames exist.
            self._hasher.hash(password)
            raise AuthError("wrong username or password")
        try:
            self._hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise AuthError("wrong username or password") from None
        if not row.active:
            raise AuthError("this account is disabled")
        return _operator(row)

    async def get_operator(self, operator_id: str, *, tenant_id: str) -> OperatorRecord:
        async with self._sessions() as db:
            row = await db.get(Operator, operator_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFoundError(f"operator {operator_id} not found")
        return _operator(row)

    async def list_operators(self, *, tenant_id: str) -> list[OperatorRecord]:
        async with self._sessions() as db:
            rows = await db.scalars(
                select(Operator).where(Operator.tenant_id == tenant_id).order_by(Operator.created_at)
            )
            return [_operator(r) for r in rows]

    async def update_operator(
        self,
        operator_id: str,
        *,
        tenant_id: str,
        role: str | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> OperatorRecord:
        if role is not None and role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        if password is not None and len(password) < 10:
            raise UserError("password must be at least 10 characters")
        async with self._sessions() as db, db.begin():
            row = await db.get(Operator, operator_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFoundError(f"operator {operator_id} not found")
            if role is not None:
                row.role = role
            if active is not None:
                row.active = active
            if password is not None:
                row.password_hash = self._hasher.hash(password)
            row.token_version += 1
        return _operator(row)

    # ---------------------------------------------------------------- API keys
    async def create_key(self, *, tenant_id: str, channel: str, name: str) -> tuple[ApiKeyRecord, str]:
        """Returns the record and the key; the key is shown once and only its hash is kept."""
        secret = secrets.token_urlsafe(32)
        key = f"{KEY_PREFIX}{secret}"
        row = ApiKey(
            tenant_id=tenant_id,
            channel=channel,
            name=name,
            prefix=key[:13],
            key_hash=key_hash(key),
            created_at=utcnow(),
            revoked_at=None,
        )
        async with self._sessions() as db, db.begin():
            db.add(row)
        return _key(row), key

    async def resolve_key(self, key: str) -> ApiKeyRecord:
        if not key.startswith(KEY_PREFIX):
            raise AuthError("not a kefu API key")
        async with self._sessions() as db:
            row = await db.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash(key)))
        if row is None or row.revoked_at is not None:
            raise AuthError("unknown or revoked API key")
        return _key(row)

    async def list_keys(self, *, tenant_id: str) -> list[ApiKeyRecord]:
        async with self._sessions() as db:
            rows = await db.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at))
            return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, *, tenant_id: str) -> ApiKeyRecord:
        async with self._sessions() as db, db.begin():
            row = await db.get(ApiKey, key_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFoundError(f"API key {key_id} not found")
            row.revoked_at = row.revoked_at or utcnow()
        return _key(row)

    async def rotate_key(self, key_id: str, *, tenant_id: str) -> tuple[ApiKeyRecord, str]:
        """Revoke a key and issue its replacement (same tenant, channel and name)."""
        old = await self.revoke_key(key_id, tenant_id=tenant_id)
        return await self.create_key(tenant_id=tenant_id, channel=old.channel, name=old.name)

    # ---------------------------------------------------------------- sensitive words
    async def sensitive_words(self, *, tenant_id: str) -> list[str]:
        async with self._sessions() as db:
            rows = await db.scalars(select(SensitiveWord.word).where(SensitiveWord.tenant_id == tenant_id))
            return sorted(rows)

    async def all_sensitive_words(self) -> dict[str, list[str]]:
        async with self._sessions() as db:
            rows = (await db.execute(select(SensitiveWord.tenant_id, SensitiveWord.word))).all()
        words: dict[str, list[str]] = {}
        for tenant, word in rows:
            words.setdefault(tenant, []).append(word)
        return words

    async def replace_sensitive_words(self, words: list[str], *, tenant_id: str) -> list[str]:
        clean = sorted({w.strip() for w in words if w.strip()})
        async with self._sessions() as db, db.begin():
            await db.execute(delete(SensitiveWord).where(SensitiveWord.tenant_id == tenant_id))
            db.add_all(SensitiveWord(tenant_id=tenant_id, word=w, created_at=utcnow()) for w in clean)
        return clean

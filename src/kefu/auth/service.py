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


async def build_access(settings: Settings, engine: AsyncEngine, *, embedder: Embedder | None = None) -> AccessServices:
    """`embedder`: the injection classifier's model, shared with the other stages (None: patterns only)."""
    secret = signing_secret(settings)
    accounts = AccountStore(engine)
    words = await accounts.all_sensitive_words()
    safety = Safety(settings, secret=secret, embedder=embedder, operator_words=words)
    return AccessServices(
        settings=settings,
        accounts=accounts,
        tokens=TokenService(secret, settings.auth),
        limiter=RateLimiter(settings.rate_limit, settings.redis_url),
        safety=safety,
    )

"""`kefu users | keys | audit | privacy`: operator accounts, API keys, the audit chain, retention and erasure."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kefu.config import Settings
from kefu.errors import KefuError

if TYPE_CHECKING:
    from kefu.auth.accounts import AccountStore
    from kefu.store import ConversationStore

T = TypeVar("T")
CLI_ACTOR = "cli"

users_app = typer.Typer(help="Operator accounts. 管理员账号。", no_args_is_help=True)
keys_app = typer.Typer(help="Channel API keys. 渠道密钥。", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log. 审计日志。", no_args_is_help=True)
privacy_app = typer.Typer(help="Data retention and erasure. 数据保留与删除。", no_args_is_help=True)


def _settings() -> Settings:
    from kefu.cli.main import _settings as load

    return load()


async def _with_store(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    """Run `work(store, accounts)` against the migrated database, then close it."""
    from kefu.auth.accounts import AccountStore
    from kefu.safety.crypto import TextCipher
    from kefu.store import ConversationStore
    from kefu.store.database import create_engine, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        key = settings.privacy.encryption_key
        store = ConversationStore(engine, cipher=TextCipher(key.get_secret_value()) if key else None)
        return await work(store, AccountStore(engine))
    finally:
        await engine.dispose()


def _run(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_store(settings, work))
    except KefuError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option(help="Sign-in name.")],
    role: Annotated[str, typer.Option(help="admin · agent · viewer")] = "admin",
    tenant: Annotated[str, typer.Option(help="Tenant the operator belongs to.")] = "default",
    password: Annotated[str | None, typer.Option(help="Omit to be asked (keeps it out of shell history).")] = None,
) -> None:
    """Create an operator (bootstraps the first admin). 创建管理员/坐席账号。"""
    settings = _settings()
    secret = password or getpass.getpass("password (10+ characters): ")

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        record = await accounts.create_operator(username=username, password=secret, role=role, tenant_id=tenant)
        await store.audit(
            actor=CLI_ACTOR, action="user.create", target=record.id, data={"role": role}, tenant_id=tenant
        )
        return record

    record = _run(settings, work)
    typer.echo(f"created {record.role} {record.username} ({record.id}) in tenant {record.tenant_id}")


@keys_app.command("create")
def keys_create(
    channel: Annotated[str, typer.Option(help="Channel the key may speak for ('*' for any).")] = "web",
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "default",
    tenant: Annotated[str, typer.Option(help="Tenant of the key.")] = "default",
) -> None:
    """Issue a channel API key; it is printed once. 创建渠道 API 密钥。"""
    settings = _settings()

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        record, key = await accounts.create_key(tenant_id=tenant, channel=channel, name=name)
        await store.audit(
            actor=CLI_ACTOR, action="api_key.create", target=record.id, data={"channel": channel}, tenant_id=tenant
        )
        return key

    typer.echo(_run(settings, work))


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit hash chain; exit 1 if it was tampered with. 校验审计链。"""
    settings = _settings()

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        return await store.verify_audit_chain()

    ok, count, problem = _run(settings, work)
    if ok:
        typer.secho(f"audit chain ok: {count} events", fg=typer.colors.GREEN)
        return
    typer.secho(f"audit chain BROKEN after checking {count} events: {problem}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@privacy_app.command("erase")
def privacy_erase(
    user: Annotated[str, typer.Option("--user", help="The customer's user id.")],
    tenant: Annotated[str, typer.Option(help="The customer's tenant.")] = "default",
) -> None:
    """Delete every conversation of one customer (audited). 删除某位顾客的全部数据。"""
    settings = _settings()

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        deleted = await store.erase_user(user_id=user, tenant_id=tenant)
        await store.audit(
            actor=CLI_ACTOR, action="privacy.erase", target=user, data={"sessions_deleted": deleted}, tenant_id=tenant
        )
        return deleted

    typer.echo(f"erased {_run(settings, work)} session(s) of {user}")


@privacy_app.command("purge")
def privacy_purge(
    older_than_days: Annotated[
        int | None, typer.Option(help="Delete conversations idle longer than this (default: privacy.retention_days).")
    ] = None,
) -> None:
    """Delete conversations older than the retention period (audited). 按保留期清理对话。"""
    settings = _settings()
    days = older_than_days or settings.privacy.retention_days
    if not days or days < 1:
        typer.secho(
            "error: pass --older-than-days N or set KEFU_PRIVACY__RETENTION_DAYS", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(code=2)

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        from kefu.store.retention import purge_idle

        return await purge_idle(store, days, actor=CLI_ACTOR)

    typer.echo(f"purged {_run(settings, work)} session(s) idle for more than {days} day(s)")


@privacy_app.command("new-key")
def privacy_new_key() -> None:
    """Print a new encryption key for KEFU_PRIVACY__ENCRYPTION_KEY. 生成加密密钥。"""
    from kefu.safety.crypto import TextCipher

    typer.echo(TextCipher.new_key())

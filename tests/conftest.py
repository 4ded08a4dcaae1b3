"""Shared fixtures: settings on a temp data dir, the scripted LLM, an app with its lifespan, real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.config import Settings, load_settings
from kefu.llm.testing import ScriptedLLM
from tests.support.postgres import create_database, drop_database, postgres_server
from tests.support.redis import redis_server

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SHOP = REPO_ROOT / "examples" / "demo_shop"
UNDERSTANDING_CACHE = Path(tempfile.gettempdir()) / "kefu-test-understanding"
GUARDS_CACHE = Path(tempfile.gettempdir()) / "kefu-test-guards"
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's kefu.yaml or KEFU_* variables."""
    for key in list(os.environ):
        if key.startswith("KEFU_") and key != "KEFU_TEST_POSTGRES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("KEFU_CONFIG", str(tmp_path / "absent-kefu.yaml"))


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # Public chat endpoints run in `open` mode (as `kefu demo` does) and without request budgets, so tests of
    # the chat contract need no credentials; tests of auth and rate limits switch them on explicitly.
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "llm": {"backend": "testing"},
        "auth": {"mode": "open"},
        "rate_limit": {"enabled": False},
        # Trained intent models are cached across tests (keyed by catalogue and embedder); the LLM fallback
        # would consume the scripted replies tests queue for the answer, so it is tested on its own.
        "understanding": {"cache_dir": UNDERSTANDING_CACHE, "llm_fallback": False},
        # The injection classifier's example embeddings are cached across tests the same way.
        "guards": {"cache_dir": GUARDS_CACHE},
    }
    if DEMO_SHOP.joinpath("shop.yaml").is_file():
        base["shop"] = {"dir": DEMO_SHOP}
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
async def app(settings: Settings, llm: ScriptedLLM) -> AsyncIterator[FastAPI]:
    application = create_app(settings, llm=llm)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as c:
        yield c


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """A real PostgreSQL server; under CI=true its absence is a failure, never a skip."""
    try:
        with postgres_server() as dsn:
            yield dsn
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and could not be reached or started: {exc}")
        pytest.skip(f"no PostgreSQL server reachable or startable here ({exc}); run `make test-deps`")


@pytest.fixture
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test, as a SQLAlchemy asyncpg URL."""
    name = f"kefu_test_{uuid.uuid4().hex[:12]}"
    dsn = asyncio.run(create_database(postgres_admin_dsn, name))
    try:
        yield dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        asyncio.run(drop_database(postgres_admin_dsn, name))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server; under CI=true its absence is a failure, never a skip."""
    try:
        with redis_server() as url:
            yield url
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis is required in CI and could not be reached or started: {exc}")
        pytest.skip(f"no Redis server reachable or startable here ({exc}); run `make test-deps`")

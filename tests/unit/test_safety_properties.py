"""Property: personal data of every supported kind never reaches the model or the logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _id_complete(body: str) -> str:
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]


phones = st.builds(
    lambda p, rest: f"1{p}{rest}", st.sampled_from("3456789"), st.text("0123456789", min_size=9, max_size=9)
)
landlines = st.builds(
    lambda a, n: f"0{a}-{n}", st.text("123456789", min_size=2, max_size=2), st.text("23456789", min_size=8, max_size=8)
)
ids = st.builds(
    lambda area, y, m, d, seq: _id_complete(f"{area}{y}{m:02d}{d:02d}{seq}"),
    st.text("123456789", min_size=6, max_size=6),
    st.integers(1950, 2010).map(str),
    st.integers(1, 12),
    st.integers(1, 28),
    st.text("0123456789", min_size=3, max_size=3),
)
cards = st.builds(lambda body: _luhn_complete("62" + body), st.text("0123456789", min_size=14, max_size=16))
emails = st.builds(
    lambda user, host: f"{user}@{host}.com",
    st.text("abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=12).filter(
        lambda u: u[0] != "." and u[-1] != "."
    ),
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=10),
)
passports = st.builds(lambda c, n: f"{c}{n}", st.sampled_from("EG"), st.text("0123456789", min_size=8, max_size=8))
addresses = st.builds(
    lambda city, road, no: f"上海市{city}区{road}路{no}号",
    st.sampled_from(["浦东", "徐汇", "静安"]),
    st.sampled_from(["张杨", "淮海中", "南京西"]),
    st.integers(1, 2000),
)
pii = st.one_of(phones, landlines, ids, cards, emails, passports, addresses)
filler = st.sampled_from(["我的信息是", "my details: ", "请联系", "帮我查一下 ", "寄到", "号码 "])
tail = st.sampled_from(["，谢谢", " thanks", "。", " 可以吗？", ""])


@pytest.fixture
async def pii_app(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, ScriptedLLM]]:
    llm = ScriptedLLM(default_reply="OK")
    application = create_app(make_settings(tmp_path, log_customer_text=False), llm=llm)
    async with application.router.lifespan_context(application):
        yield application, llm


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=pii, before=filler, after=tail)
async def test_pii_never_reaches_the_model_or_the_log(
    pii_app: tuple[FastAPI, ScriptedLLM], caplog: pytest.LogCaptureFixture, value: str, before: str, after: str
) -> None:
    app, llm = pii_app
    llm.calls.clear()
    caplog.clear()
    # kefu's own loggers at DEBUG, third-party ones at INFO (aiosqlite's DEBUG log echoes SQL parameters).
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="kefu"):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
            resp = await client.post("/v1/chat", json={"user_id": "prop", "text": f"{before}{value}{after}"})
    assert resp.status_code == 200
    sent = "\n".join(call.prompt_text for call in llm.calls)
    assert value not in sent
    assert value not in caplog.text
    assert value not in resp.json()["reply"]

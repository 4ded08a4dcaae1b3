"""The tool agent with the real bundled model (embedded llama.cpp) over the demo backend in process.

One stock question, kept small for a CPU (English, one tool, no start_flow, short tool results): about 20 s on
two idle cores, most of it prompt processing; several times that on a busy machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from kefu.config import AgentSettings, LLMBackendSettings
from kefu.connectors import Actions, load_actions
from kefu.dialogue.agent import AgentRequest, ToolAgent
from kefu.prompts import PromptLibrary
from kefu.shop import load_shop
from kefu.understanding.types import Entity
from lumo_shop.app import create_app as create_shop_app
from tests.conftest import DEMO_SHOP

pytest.importorskip("xllamacpp")
from kefu.llm.embedded import EmbeddedLLM

pytestmark = pytest.mark.llm

_DATA_DIR = Path(__file__).resolve().parents[2] / ".kefu"
SHOP_TOKEN = "test-shop-token"


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedLLM]:
    llm = EmbeddedLLM.from_settings(LLMBackendSettings(n_ctx=2048, n_parallel=1), _DATA_DIR)
    yield llm
    asyncio.run(llm.aclose())


@pytest.fixture
async def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Actions]:
    monkeypatch.setenv("LUMO_SHOP_TOKEN", SHOP_TOKEN)
    shop = create_shop_app(tmp_path / "shop.db", DEMO_SHOP, now="as_of", token=SHOP_TOKEN)
    loaded = load_actions(DEMO_SHOP / "actions.yaml", transports={"shop": httpx.ASGITransport(app=shop)})
    yield loaded
    await loaded.aclose()


async def test_the_bundled_model_reads_the_stock_through_the_offered_tool(
    backend: EmbeddedLLM, actions: Actions
) -> None:
    get_product = actions.get("get_product")
    assert get_product is not None
    agent = ToolAgent(
        {"stock_availability": (get_product,)},
        actions,
        PromptLibrary(),
        load_shop(DEMO_SHOP),
        AgentSettings(start_flows=False, max_result_chars=600, max_tool_rounds=1),
    )
    product = Entity(
        "product",
        "LM-AU-001",
        "Sonaro Buds Pro 2",
        attrs={"name_en": "Sonaro Buds Pro 2 ANC True Wireless Earbuds"},
    )
    request = AgentRequest(
        intent="stock_availability",
        text="Is the Sonaro Buds Pro 2 in stock?",
        language="en",
        entities=[product],
    )

    outcome = await agent.run(request, backend)

    # The model picked the offered tool with the SKU understanding resolved, and the backend answered.
    assert [(c.tool, c.args, c.ok) for c in outcome.calls] == [("get_product", {"sku": "LM-AU-001"}, True)]
    # Whatever it then said is either grounded in what it was shown or the fixed safe reply — never an error.
    assert outcome.error_code is None and outcome.reply
    assert outcome.decision in ("answered", "ungrounded")
    if outcome.decision == "answered":  # 356 are in stock
        assert "out of stock" not in outcome.reply.lower() and "sold out" not in outcome.reply.lower()

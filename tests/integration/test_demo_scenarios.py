"""The demo shop's scenario file (examples/demo_shop/scenarios.yaml) end to end: every scenario must pass.

kefu runs in process with the demo knowledge indexed by the bundled embedder (curated FAQ answers, digressions)
and the demo backend (lumo_shop) in process, reset before each scenario; the runner talks to kefu over HTTP.

The model is the scripted one (`kefu eval scenarios --llm scripted`): the scenarios check flows, curated answers
and handoffs only, so they pass on the embedded model too (`kefu eval scenarios … --demo-backend`: 61/61), but with
it the file took 763 s on a 2-core CPU (the understanding stage asks the model about short replies such as "0827",
about 8 s each), far beyond the ~3 minutes a test may spend; with the scripted model it runs in about 15 s.
"""

from __future__ import annotations

from pathlib import Path

from kefu.eval.scenarios import demo_backend, run_scenarios
from kefu.eval.scenarios_cli import SCRIPTED_REPLY
from kefu.llm.testing import ScriptedLLM
from tests.conftest import DEMO_SHOP, make_settings


async def test_every_demo_scenario_passes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, knowledge={"source_dir": DEMO_SHOP / "knowledge"})
    async with demo_backend(DEMO_SHOP) as shop:
        report = await run_scenarios(
            DEMO_SHOP / "scenarios.yaml",
            settings,
            llm=ScriptedLLM(model="scenarios", default_reply=SCRIPTED_REPLY),
            transports={"shop": shop},
        )
    assert report.total >= 40
    assert report.passed == report.total, f"{report.summary()}\n{report.failures_text()}"

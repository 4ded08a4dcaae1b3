"""The demo shop is the reference example and the fixture of end-to-end tests: it must be consistent."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import DEMO_SHOP


def test_demo_shop_data_is_consistent() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO_SHOP / "tools" / "check_data.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fixture_orders_exist_in_the_backend_data() -> None:
    fixtures = yaml.safe_load((DEMO_SHOP / "fixtures.yaml").read_text(encoding="utf-8"))
    orders = (DEMO_SHOP / "backend" / "orders.jsonl").read_text(encoding="utf-8")
    named = list(fixtures["orders"].values())
    assert len(named) >= 5
    for fixture in named:
        assert f'"{fixture["order_id"]}"' in orders, fixture

"""The demo dataset on disk: where it is, the parts of shop.yaml the backend obeys, and its snapshot time."""

from __future__ import annotations

import csv
import json
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict

DATA_SUBDIR = Path("examples") / "demo_shop"
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Label(_Model):
    """A name in Chinese and English."""

    zh: str
    en: str


class ReturnAddress(_Model):
    recipient: str
    phone: str
    zh: str
    en: str
    postal_code: str
    note: Label


class Warehouse(_Model):
    return_address: ReturnAddress


class Locale(_Model):
    timezone: str = "Asia/Shanghai"


class ReturnRules(_Model):
    no_reason_return_days: int
    no_reason_exchange_days: int
    quality_days: int
    damage_report_hours: int
    return_ship_back_days: int
    review_hours: int
    refund_after_receipt_hours: int
    non_returnable: list[str]


class Zone(_Model):
    days: str
    provinces: list[str]


class ShippingRules(_Model):
    regions_not_served: list[str]
    zones: dict[str, Zone]


class InvoiceRules(_Model):
    types: list[str]
    e_normal_issue_hours_after_delivery: int
    vat_special_request_days_after_delivery: int
    e_normal_request_days_after_completion: int


class Policies(_Model):
    returns: ReturnRules
    shipping: ShippingRules
    invoices: InvoiceRules


class ShopConfig(_Model):
    """The parts of shop.yaml that the backend enforces or reports; everything else is ignored."""

    locale: Locale = Locale()
    warehouse: Warehouse
    carriers: dict[str, Label]
    categories: dict[str, Label]
    order_statuses: dict[str, Label]
    policies: Policies

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.locale.timezone)

    def status_label(self, status: str) -> Label:
        return self.order_statuses.get(status, Label(zh=status, en=status))


class Dataset:
    """Reads the files of one demo dataset directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def shop(self) -> ShopConfig:
        return ShopConfig.model_validate(_yaml(self.root / "shop.yaml"))

    def as_of(self) -> datetime:
        """The snapshot time of the data (`as_of` in fixtures.yaml)."""
        raw = _yaml(self.root / "fixtures.yaml").get("as_of")
        if not isinstance(raw, str):
            raise ValueError(f"{self.root / 'fixtures.yaml'}: `as_of` is missing")
        return datetime.fromisoformat(raw)

    def users(self) -> list[dict[str, str]]:
        return _csv(self.root / "backend" / "users.csv")

    def products(self) -> list[dict[str, str]]:
        return _csv(self.root / "catalog" / "products.csv")

    def orders(self) -> list[dict[str, Any]]:
        return _jsonl(self.root / "backend" / "orders.jsonl")

    def shipments(self) -> list[dict[str, Any]]:
        return _jsonl(self.root / "backend" / "logistics_events.jsonl")


def find_data_dir(explicit: Path | None = None, *, cwd: Path | None = None) -> Path:
    """The dataset directory: `explicit` if given, else `examples/demo_shop` above the cwd or this package."""
    if explicit is not None:
        if not (explicit / "shop.yaml").is_file():
            raise FileNotFoundError(f"no demo dataset at {explicit} (expected {explicit / 'shop.yaml'})")
        return explicit
    here = (cwd or Path.cwd()).resolve()
    package = Path(__file__).resolve().parent
    for root in (here, *here.parents, *package.parents):
        if (root / DATA_SUBDIR / "shop.yaml").is_file():
            return root / DATA_SUBDIR
    raise FileNotFoundError(
        f"demo dataset not found: no {DATA_SUBDIR}/shop.yaml in {here}, {package} or their parents; pass --data DIR"
    )


def _yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.load(f, Loader=_YAML_LOADER)  # a safe loader, the C one when available
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

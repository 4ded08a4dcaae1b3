"""Backend actions: how kefu reads and changes the shop's systems (orders, returns, invoices)."""

from kefu.connectors.base import ActionResult, ActionSpec, Connector
from kefu.connectors.registry import Actions, load_actions

__all__ = ["ActionResult", "ActionSpec", "Actions", "Connector", "load_actions"]

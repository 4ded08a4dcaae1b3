"""Lumo demo shop backend: a small HTTP service over SQLite that kefu talks to like a real shop."""

from lumo_shop.app import DEFAULT_TOKEN, create_app
from lumo_shop.seed import seed

__all__ = ["DEFAULT_TOKEN", "create_app", "seed"]

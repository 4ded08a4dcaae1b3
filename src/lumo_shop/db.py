"""The backend's SQLite schema (SQLAlchemy 2) and how to open it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Engine, ForeignKey, Integer, String, UniqueConstraint, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012 - SQLAlchemy reads it from the class


class Meta(Base):
    """Key/value facts about the database itself (when and from where it was seeded)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str]


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str]
    phone: Mapped[str] = mapped_column(index=True)
    doc: Mapped[dict[str, Any]]
    """The users.csv row as read (points as an int)."""


class Product(Base):
    __tablename__ = "products"
    sku: Mapped[str] = mapped_column(String, primary_key=True)
    category: Mapped[str]
    returnable: Mapped[bool]
    doc: Mapped[dict[str, Any]]
    """The catalogue row with colours/sizes as lists, price as a number and specs as an object."""


class Variant(Base):
    """One colour × size of a product and how many are in stock."""

    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("sku", "color", "size"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"), index=True)
    color: Mapped[str | None]
    size: Mapped[str | None]
    stock: Mapped[int]


class Order(Base):
    __tablename__ = "orders"
    order_id: Mapped[str] = mapped_column(String, primary_key=True)
    user_id: Mapped[str] = mapped_column(index=True)
    status: Mapped[str]
    created_at: Mapped[str]
    after_sale_id: Mapped[str | None] = mapped_column(index=True)
    doc: Mapped[dict[str, Any]]
    """The order exactly as in orders.jsonl, updated by writes; `status` above mirrors `doc["status"]`."""


class Shipment(Base):
    __tablename__ = "shipments"
    tracking_number: Mapped[str] = mapped_column(String, primary_key=True)
    order_id: Mapped[str] = mapped_column(index=True)
    doc: Mapped[dict[str, Any]]


class ReasonLabel(Base):
    """The Chinese and English wording of a cancel or after-sales reason code, taken from the dataset."""

    __tablename__ = "reason_labels"
    kind: Mapped[str] = mapped_column(String, primary_key=True)
    code: Mapped[str] = mapped_column(String, primary_key=True)
    zh: Mapped[str]
    en: Mapped[str]


class Write(Base):
    """One successful write: what was asked, what was answered, under which idempotency key."""

    __tablename__ = "writes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation: Mapped[str]
    order_id: Mapped[str] = mapped_column(index=True)
    idempotency_key: Mapped[str] = mapped_column(unique=True)
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any]]
    status_code: Mapped[int]
    created_at: Mapped[str]


def open_engine(db_path: Path) -> Engine:
    """An engine on the SQLite file (created with its directory if missing) in WAL mode, usable from worker threads."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers (on the event loop, see app.py) never wait for a writer
        cursor.close()

    Base.metadata.create_all(engine)
    return engine


def open_reader(db_path: Path) -> Engine:
    """One read-only connection to the file (opened by `open_engine`) for the reads that run on the event loop, one at
    a time: they never wait for a connection of the writers' pool, which the thread pool's writes may all hold."""
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"check_same_thread": False}, poolclass=StaticPool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only = ON")
        cursor.execute("PRAGMA busy_timeout = 1000")  # in WAL mode only a checkpoint's reset can keep a reader waiting
        cursor.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)

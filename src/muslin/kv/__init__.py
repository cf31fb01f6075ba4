"""(placeholder until the store seam lands) The key-value store seam's types."""

from __future__ import annotations

from dataclasses import dataclass

from muslin.fabric.registry import StoreRefused, StoreUnavailable

__all__ = ["Item", "Event", "StoreUnavailable", "StoreRefused"]


@dataclass(frozen=True)
class Item:
    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int | None = None


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    key: str
    item: Item | None
    revision: int

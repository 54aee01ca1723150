"""Persistence: the ``Store`` protocol and its two backends."""

from broker.store.base import DuplicateEmail, Store, StoreUnavailable

__all__ = ["DuplicateEmail", "Store", "StoreUnavailable"]

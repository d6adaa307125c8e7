"""Token storage of the v2 API: the interface and the stores behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sylkpush.tokens.base import (Device, StorageError, StorageUnavailable, TokenStore, normalize_device_id,
                                  split_account, split_token)

if TYPE_CHECKING:  # sylkpush.config imports this package's Cassandra helpers
    from sylkpush.config import Settings

__all__ = ["Device", "StorageError", "StorageUnavailable", "TokenStore", "make_store", "normalize_device_id",
           "prepare_store", "split_account", "split_token"]


def prepare_store(settings: Settings) -> None:
    """Before several workers start: create the embedded database and import
    the original's pickle file, once, here (blocking; no reactor runs yet).
    A failure is logged; each worker then tries again on its own."""
    if settings.cassandra.contact_points:
        return
    from sylkpush.tokens.sqlite import prepare_database
    try:
        prepare_database(settings.path(settings.spool_dir))
    except StorageUnavailable:
        pass  # logged by the store


def make_store(settings: Settings, reactor: Any) -> TokenStore:
    """The store general.ini asks for, not opened yet."""
    if settings.cassandra.contact_points:
        from sylkpush.tokens.cassandra_store import CassandraTokenStore
        return CassandraTokenStore(settings.cassandra, settings.path(settings.cassandra.ca_file), reactor)
    from sylkpush.tokens.sqlite import SQLiteTokenStore
    return SQLiteTokenStore(settings.path(settings.spool_dir), reactor)

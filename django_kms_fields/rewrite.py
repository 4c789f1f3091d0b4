"""Rewriting stored values in place, in primary-key batches, without ever overwriting a concurrent write.

Used by ``manage.py kms_fields_reencrypt`` (values whose wrapping keys are not the keyring's current
``KEY_ARNS``, and legacy plaintext in ``accept_plaintext`` fields) and by ``copy_plaintext_column``
(a data migration helper that fills a new encrypted column from a plaintext one).

A batch is read, then its values are decrypted and encrypted (the KMS calls happen outside any
transaction, so no row or table lock is held while KMS answers), then the batch is written in one
short transaction of compare-and-swap updates (``batches``). Nothing is remembered between runs: a
rerun after a crash finds the rows already done current, and goes on with the rest.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import models, router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from . import batches, conf, crypto, headers
from .batches import Progress, RewriteStats
from .exceptions import KMSFieldsError
from .fields import EncryptedField
from .searchable import companion_of

__all__ = [
    "RewriteStats",
    "RewriteIncomplete",
    "Progress",
    "encrypted_fields",
    "reencrypt_column",
    "copy_plaintext_column",
    "reindex_column",
    "searchable_fields",
]

class RewriteIncomplete(KMSFieldsError):
    """Some rows could not be rewritten; the others were. ``stats`` says which; a rerun finishes."""

    def __init__(self, message: str, stats: RewriteStats) -> None:
        super().__init__(message)
        self.stats = stats


def encrypted_fields(labels: list[str]) -> list[tuple[type[models.Model], EncryptedField]]:
    """The encrypted fields named by ``app_label``, ``app_label.Model`` or ``app_label.Model.field``
    (all of them when ``labels`` is empty). Raises ``LookupError`` naming what was not found."""
    found: list[tuple[type[models.Model], EncryptedField]] = []
    for label in labels or [config.label for config in apps.get_app_configs()]:
        parts = label.split(".")
        if len(parts) > 3:
            raise LookupError(f"{label!r} is not app_label, app_label.Model or app_label.Model.field.")
        app_models = (
            apps.get_app_config(parts[0]).get_models()
            if len(parts) == 1
            else [apps.get_model(parts[0], parts[1])]
        )
        for model in app_models:
            if model._meta.proxy or not model._meta.managed:
                continue
            fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedField) and f.model is model]
            if len(parts) == 3:
                fields = [f for f in fields if f.name == parts[2]]
                if not fields:
                    raise LookupError(f"{label!r} is not an encrypted field.")
            found += [(model, f) for f in fields]
    return found


def reencrypt_column(
    model: type[models.Model],
    field: EncryptedField,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    shard: tuple[int, int] | None = None,
    progress: Callable[[Progress], None] = lambda progress: None,
    using: str | None = None,
) -> RewriteStats:
    """Re-encrypts every value of ``field`` not under the keyring's ``ALGORITHM`` and exactly its ``KEY_ARNS``.

    Which values need it is read from each message header, with no KMS call; legacy plaintext is
    encrypted too when the field has ``accept_plaintext``. ``dry_run`` counts without writing. ``using``
    names the database (default: the router's choice for writing ``model``).
    """
    keyring = conf.get_keyring(field.keyring)
    binding = field.field_binding()
    return _rewrite_in_batches(
        model, field, field.column, using=using, batch_size=batch_size, shard=shard, progress=progress,
        swap_of=lambda row, stats: _reencryption(field, keyring, binding, *row, stats, dry_run),
    )


def _rewrite_in_batches(
    model: type[models.Model],
    field: EncryptedField,
    target_column: str,
    *,
    using: str | None,
    batch_size: int,
    shard: tuple[int, int] | None,
    progress: Callable[[Progress], None],
    swap_of: Callable[[tuple[Any, ...], RewriteStats], batches.Swap | None],
    also_read: tuple[str, ...] = (),
) -> RewriteStats:
    """Visits the rows where ``field`` has a value, batch by batch, and lands the swaps ``swap_of`` makes."""
    using = using or router.db_for_write(model)
    stats = RewriteStats()
    label = f"{model._meta.label}.{field.name}"
    total = batches.count(model, field.column, using=using, shard=shard)
    started = time.monotonic()
    for rows in batches.batches(
        model, field.column, using=using, batch_size=batch_size, shard=shard, also_read=also_read
    ):
        swaps = [swap for row in rows if (swap := swap_of(row, stats)) is not None]
        batches.land(model, target_column, swaps, stats, using=using)
        progress(Progress(label, stats.scanned, total, time.monotonic() - started))
    return stats


def searchable_fields(labels: list[str]) -> list[tuple[type[models.Model], EncryptedField]]:
    """Like ``encrypted_fields``, only the searchable ones."""
    return [(model, field) for model, field in encrypted_fields(labels) if field.searchable]


def reindex_column(
    model: type[models.Model],
    field: EncryptedField,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    shard: tuple[int, int] | None = None,
    progress: Callable[[Progress], None] = lambda progress: None,
    using: str | None = None,
    rebuild: bool = False,
) -> RewriteStats:
    """Writes the blind index of every value of ``field`` that has none, or one under an older index key.

    With ``rebuild``, every row is decrypted and its index written if it differs (after a change to what
    a normaliser does that its name does not show).

    Rows already indexed under the current key (read from the index's tag, no KMS call) are counted as
    current; the others are decrypted and indexed, and written only if the row still holds the value and
    the index that were read. ``RewriteStats.rewritten`` counts the indexes written.
    """
    companion = companion_of(field)
    field.blind_index_keys()  # a missing INDEX_KEY_ARN or an unreachable KMS fails here, before any row
    return _rewrite_in_batches(
        model, field, companion.column, using=using, batch_size=batch_size, shard=shard, progress=progress,
        also_read=(companion.column,),
        swap_of=lambda row, stats: _reindexing(field, *row, stats, dry_run, rebuild),
    )


def _reindexing(
    field: EncryptedField, pk: Any, stored: Any, index: str | None, stats: RewriteStats, dry_run: bool, rebuild: bool
) -> batches.Swap | None:
    """The swap that writes one row's index under the current key, or None (counted in ``stats``)."""
    stats.scanned += 1
    try:
        # Per row, as the key is not kept past MAX_AGE; not the field's memo, which assumes the field's
        # options never change in a process (a reindex is what follows a change to them).
        current = field.blind_index_keys()[0]
        if not rebuild and index is not None and index.startswith(current.tag):
            stats.current += 1
            return None
        new_index = current.index(field.search_plaintext(field.decrypt_message(stored, pk), pk))
    except KMSFieldsError as err:
        stats.fail(pk, err)
        return None
    if new_index == index:
        stats.current += 1
        return None
    if dry_run:
        stats.rewritten += 1
        return None
    stored = stored if isinstance(stored, str) else bytes(stored)
    return batches.Swap(pk, new_index, index, expect_null=index is None, source_column=field.column, source_value=stored)


def _reencryption(
    field: EncryptedField, keyring: conf.KeyringConfig, binding: crypto.FieldBinding, pk: Any, stored: Any,
    stats: RewriteStats, dry_run: bool,
) -> batches.Swap | None:
    """The swap that brings one stored value under the current keys, or None (counted in ``stats``).

    ``stored`` is what the driver gave: bytes, a memoryview, or text that SQLite kept in a column
    converted from a text column (legacy plaintext, compared as text when swapped).
    """
    stats.scanned += 1
    is_text = isinstance(stored, str)
    stored = stored if is_text else bytes(stored)
    is_plaintext = field.accept_plaintext and (is_text or not headers.looks_like_message(stored))
    try:
        if is_text and not is_plaintext:
            field.decrypt_message(stored, pk)  # raises DecryptionError, naming the field and pk
        # An unreadable header raises here: a failure, in a dry run too.
        if not is_plaintext and headers.wrapping_key_arns(stored) == frozenset(keyring.key_arns):
            if headers.uses_algorithm(stored, keyring):
                stats.current += 1
                return None
        if dry_run:
            stats.rewritten += 1
            stats.plaintext += is_plaintext
            return None
        plaintext = (stored.encode("utf-8") if is_text else stored) if is_plaintext else crypto.decrypt(stored, keyring, binding, pk=pk)
        return batches.Swap(pk, crypto.encrypt(plaintext, keyring, binding), stored, plaintext=is_plaintext)
    except KMSFieldsError as err:
        stats.fail(pk, err)
        return None


def _plaintext_copy(
    target: EncryptedField, keyring: conf.KeyringConfig, binding: crypto.FieldBinding, pk: Any, value: Any,
    source_column: str, stats: RewriteStats,
) -> batches.Swap | None:
    """The swap that fills a NULL ``target`` with the encrypted ``value`` of ``source_column``, or None."""
    stats.scanned += 1
    value = bytes(value) if isinstance(value, memoryview) else value
    try:
        # Text columns give str, binary ones bytes, as the target field expects.
        message = crypto.encrypt(target.to_plaintext_bytes(value), keyring, binding)
        also_set = ((companion_of(target).column, target.blind_index(value)),) if target.searchable else ()
    except KMSFieldsError as err:
        stats.fail(pk, err)
        return None
    return batches.Swap(
        pk, message, None, expect_null=True, source_column=source_column, source_value=value, also_set=also_set
    )


# A RunPython function is called as function(apps, schema_editor); the migration's connection is the
# schema editor's. Searched for a few frames up, so a helper between them still finds it.
_MIGRATION_FRAMES_SEARCHED = 8


def _migration_database() -> str | None:
    """The alias of the database a running migration applies to, if the caller runs inside one."""
    frame = sys._getframe(2)
    for _ in range(_MIGRATION_FRAMES_SEARCHED):
        if frame is None:
            return None
        editor = frame.f_locals.get("schema_editor")
        if isinstance(editor, BaseDatabaseSchemaEditor):
            return editor.connection.alias
        frame = frame.f_back
    return None


def copy_plaintext_column(
    model: type[models.Model],
    source: str,
    target: str,
    *,
    batch_size: int = 500,
    progress: Callable[[Progress], None] = lambda progress: None,
    raise_on_failure: bool = True,
    using: str | None = None,
) -> RewriteStats:
    """Fills the encrypted field ``target`` from the plaintext field ``source``, in batches.

    Only rows whose ``target`` is still NULL are filled, and only if, when written, ``target`` is still
    NULL and ``source`` still holds what was read; so the application may write either meanwhile, and
    a rerun finishes what is left. Raises ``RewriteIncomplete`` after the last batch if any row could
    not be encrypted (a KMS outage, say), so that a data migration is not recorded as applied. Works
    with the historical models of a data migration (``apps.get_model(...)`` in ``RunPython``), on the
    migration's own database (``migrate --database other`` fills ``other``); elsewhere on ``using``, or
    the router's choice for writing ``model``.
    """
    source_field = model._meta.get_field(source)
    target_field = model._meta.get_field(target)
    if not isinstance(target_field, EncryptedField):
        raise TypeError(f"{model._meta.label}.{target} is not an encrypted field.")
    using = using or _migration_database() or router.db_for_write(model)
    keyring = conf.get_keyring(target_field.keyring)
    binding = target_field.field_binding()
    stats = RewriteStats()
    total = batches.count(model, source_field.column, using=using, shard=None, only_null=target_field.column)
    started = time.monotonic()
    for rows in batches.batches(model, source_field.column, using=using, batch_size=batch_size, shard=None,
                         only_null=target_field.column):
        swaps = [
            swap
            for pk, value in rows
            if (swap := _plaintext_copy(target_field, keyring, binding, pk, value, source_field.column, stats))
        ]
        batches.land(model, target_field.column, swaps, stats, using=using)
        progress(Progress(f"{model._meta.label}.{target}", stats.scanned, total, time.monotonic() - started))
    if stats.failed and raise_on_failure:
        raise RewriteIncomplete(
            f"{model._meta.label}.{target}: {stats.failed} row(s) could not be encrypted and are still NULL "
            f"(first: {stats.failures[0]}). The other {stats.rewritten} were copied; run it again.",
            stats,
        )
    return stats

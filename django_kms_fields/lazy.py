"""Lazy decryption: model instances hold stored messages until an attribute is read.

Django gives a field no way to tell whether its column will build model instances or ``values()``
rows: both go through ``from_db_value``. The columns that build instances (``select_related`` ones
included) all come from ``SQLCompiler.get_default_columns()``, which calls ``field.get_col(alias)``;
the field asks ``called_from_default_columns()`` and, if so, hands out a ``LazyDecryptionCol``, whose
converter yields a ``PendingDecryption`` instead of plaintext. The field's descriptor decrypts it on
first access. See docs/design.md for what this relies on.

Decrypting may call KMS, so it must not happen on a thread that runs an event loop: there the
descriptor raises Django's ``SynchronousOnlyOperation``, and ``adecrypt()`` decrypts pending values in
the worker thread the async ORM uses.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.query_utils import DeferredAttribute
from django.db.models.sql.compiler import SQLCompiler

from .queries import EncryptedCol

# asyncio's own test for a running loop, which answers None when there is none: get_running_loop()
# raises RuntimeError instead, a cost on the first read of every loaded value outside async code.
_get_running_loop = asyncio._get_running_loop

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["PendingDecryption", "DecryptingAttribute", "LazyDecryptionCol", "adecrypt", "called_from_default_columns"]


class PendingDecryption:
    """A stored message loaded into a model instance and not decrypted yet.

    Loading rows as model instances leaves each encrypted value in this form; the field's descriptor
    decrypts it on first access, once, knowing the instance's pk for error messages. Saving an instance
    whose value was never read writes the same message back without a KMS call. It never shows the
    message's bytes in ``repr`` or ``str``.
    """

    __slots__ = ("field", "message", "loaded_index")

    def __init__(self, field: EncryptedField, message: bytes) -> None:
        self.field = field
        self.message = message
        # The blind index read from the same row (searchable fields): the index of this message, so
        # writing the message elsewhere writes its index without decrypting it.
        self.loaded_index: str | None = None

    def decrypt(self, pk: object = None) -> Any:
        return self.field.decrypt_message(self.message, pk)

    def __repr__(self) -> str:
        return f"<PendingDecryption of {self.field.model._meta.label}.{self.field.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        message = self.message if isinstance(self.message, str) else bytes(self.message)
        return (PendingDecryption, (self.field, message))


class DecryptingAttribute(DeferredAttribute):
    """The descriptor of an encrypted field: a deferred attribute that also decrypts on first access."""

    def __init__(self, field: models.Field) -> None:
        super().__init__(field)
        self.attname = field.attname

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        # Runs once per value read: the loaded value straight from __dict__, DeferredAttribute only for
        # a deferred field (which loads it).
        try:
            value = instance.__dict__[self.attname]
        except KeyError:
            value = super().__get__(instance, cls)
        if isinstance(value, PendingDecryption):
            # Checked only here, not on every read: a value already decrypted reads at the usual cost.
            _refuse_on_event_loop(value, instance)
            value = value.decrypt(_pk_of(instance))
            instance.__dict__[self.attname] = value
        return value

    # A data descriptor, so that reads always come through __get__ even once the value is in __dict__.
    # Model.__init__ calls this for every row loaded.
    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.attname] = value


def _pk_of(instance: models.Model) -> Any:
    """The pk, which only names the row in an error: from ``__dict__``, where a loaded row has it, rather
    than through ``Model.pk``'s property and descriptor on every first read; ``Model.pk`` for a composite
    primary key (Django 5.2+), which is no attribute of its own."""
    try:
        return instance.__dict__[instance._meta.pk.attname]
    except KeyError:
        return instance.pk


def _refuse_on_event_loop(pending: PendingDecryption, instance: models.Model) -> None:
    """Django's ``async_unsafe`` rule for a read that may call KMS, with what to do instead.

    Refused whether or not the data key happens to be cached, so that code that passes in development
    does not block the loop in production.
    """
    if _get_running_loop() is None:
        return
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        return
    field = pending.field
    raise SynchronousOnlyOperation(
        f"{field.model._meta.label}.{field.name} (pk={instance.pk!r}) is still encrypted, and decrypting it "
        f"may call KMS, which would block the event loop. In async code, first "
        f"`await django_kms_fields.adecrypt(instance)` (or `adecrypt(instances, {field.name!r})`), which "
        f"decrypts in a worker thread; or read the value inside sync_to_async()."
    )


async def adecrypt(instances: models.Model | Iterable[models.Model], *field_names: str) -> None:
    """Decrypt the still-encrypted values of model instances in a worker thread, for async code.

    ``instances`` is one model instance or an iterable of them (a list, not a ``QuerySet``: fetch them
    first, e.g. ``[p async for p in queryset]``). ``field_names`` names the encrypted fields to decrypt;
    none means every encrypted field. Values already decrypted or assigned, ``None`` and deferred fields
    are left alone, and nothing leaves the event loop when no value is pending. The others are decrypted
    in the thread Django's async ORM runs queries in (``sync_to_async(thread_sensitive=True)``), one
    value after another, and then read on the loop without a KMS call. If one fails, the values before
    it stay decrypted and its error is raised.
    """
    targets = _pending_targets(instances, field_names)
    del instances  # no frame an error passes through holds the instances (and their plaintext)
    if not targets:
        return
    jobs = [(instance.pk, pending) for instance, _attname, pending in targets]
    plaintexts, error = await sync_to_async(_decrypt_in_order, thread_sensitive=True)(jobs)
    _store_plaintexts(targets, plaintexts)
    del targets, plaintexts
    if error is not None:
        raise error


def _pending_targets(
    instances: models.Model | Iterable[models.Model], field_names: tuple[str, ...]
) -> list[tuple[models.Model, str, PendingDecryption]]:
    from .fields import EncryptedField

    if isinstance(instances, models.Model):
        instances = [instances]
    elif isinstance(instances, models.QuerySet):
        raise TypeError(
            "adecrypt() takes model instances, not a QuerySet (iterating it here would query the database "
            "on the event loop): fetch them first, e.g. [obj async for obj in queryset]."
        )
    fields_by_model: dict[type[models.Model], list[models.Field]] = {}
    targets = []
    for instance in instances:
        model = type(instance)
        fields = fields_by_model.get(model)
        if fields is None:
            if field_names:
                fields = [model._meta.get_field(name) for name in field_names]
                for field in fields:
                    if not isinstance(field, EncryptedField):
                        raise ValueError(
                            f"{model._meta.label}.{field.name} is not an encrypted field; adecrypt() decrypts "
                            f"encrypted fields only."
                        )
            else:
                fields = [field for field in model._meta.concrete_fields if isinstance(field, EncryptedField)]
            fields_by_model[model] = fields
        for field in fields:
            value = instance.__dict__.get(field.attname)
            if isinstance(value, PendingDecryption):
                targets.append((instance, field.attname, value))
    return targets


def _decrypt_in_order(jobs: list[tuple[Any, PendingDecryption]]) -> tuple[list[Any], Exception | None]:
    # The worker thread's half. Returns the plaintexts decrypted before a failure along with it, and
    # catches that failure in _decrypt_one, whose frame holds no plaintext: this one, which holds the
    # list, is not in the error's traceback.
    plaintexts: list[Any] = []
    for pk, pending in jobs:
        plaintext, error = _decrypt_one(pk, pending)
        if error is not None:
            return plaintexts, error
        plaintexts.append(plaintext)
    return plaintexts, None


def _decrypt_one(pk: Any, pending: PendingDecryption) -> tuple[Any, Exception | None]:
    try:
        return pending.decrypt(pk=pk), None
    except Exception as error:
        return None, error


def _store_plaintexts(targets: list[tuple[models.Model, str, PendingDecryption]], plaintexts: list[Any]) -> None:
    # On the loop, so nothing the app assigns meanwhile is overwritten: a value is stored only where the
    # instance still holds the very message that was decrypted.
    for (instance, attname, pending), plaintext in zip(targets, plaintexts):
        if instance.__dict__.get(attname) is pending:
            instance.__dict__[attname] = plaintext


class LazyDecryptionCol(EncryptedCol):
    """The column of an encrypted field selected to build model instances: converts to PendingDecryption."""

    def get_db_converters(self, connection: BaseDatabaseWrapper) -> list[Any]:
        return [_pending_from_db_value]


def _pending_from_db_value(
    value: Any, expression: LazyDecryptionCol, connection: Any, _new: Any = object.__new__
) -> PendingDecryption | None:
    # Runs once per row loaded: kept to the bare minimum (no __init__ call, no copy of the bytes).
    if value is None:
        return None
    pending = _new(PendingDecryption)
    pending.field = expression.target
    pending.message = value
    pending.loaded_index = None
    return pending


_DEFAULT_COLUMNS_CODE = SQLCompiler.get_default_columns.__code__
# get_default_columns -> [a user's get_col override calling super(), ...] -> the field's get_col.
_CALLER_FRAMES_SEARCHED = 4


def called_from_default_columns() -> bool:
    """Whether the caller's caller (a field's ``get_col``) was called from ``get_default_columns``.

    Matched by code object, not name, a few frames up, so that a subclass overriding ``get_col`` and
    calling ``super()`` stays lazy. If a Django release changed this, values would be decrypted
    eagerly: slower, never wrong; tests/test_lazy_and_expressions.py fails.
    """
    frame = sys._getframe(2)
    for _ in range(_CALLER_FRAMES_SEARCHED):
        if frame is None:
            return False
        if frame.f_code is _DEFAULT_COLUMNS_CODE:
            return True
        frame = frame.f_back
    return False

"""Lazy decryption: model instances hold stored messages until an attribute is read.

Django gives a field no way to tell whether its column will build model instances or ``values()``
rows: both go through ``from_db_value``. The columns that build instances (``select_related`` ones
included) all come from ``SQLCompiler.get_default_columns()``, which calls ``field.get_col(alias)``;
the field asks ``called_from_default_columns()`` and, if so, hands out a ``LazyDecryptionCol``, whose
converter yields a ``PendingDecryption`` instead of plaintext. The field's descriptor decrypts it on
first access. See docs/design.md for what this relies on.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.query_utils import DeferredAttribute
from django.db.models.sql.compiler import SQLCompiler

from .queries import EncryptedCol

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["PendingDecryption", "DecryptingAttribute", "LazyDecryptionCol", "called_from_default_columns"]


class PendingDecryption:
    """A stored message loaded into a model instance and not decrypted yet.

    Loading rows as model instances leaves each encrypted value in this form; the field's descriptor
    decrypts it on first access, once, knowing the instance's pk for error messages. Saving an instance
    whose value was never read writes the same message back without a KMS call. It never shows the
    message's bytes in ``repr`` or ``str``.
    """

    __slots__ = ("field", "message")

    def __init__(self, field: EncryptedField, message: bytes) -> None:
        self.field = field
        self.message = message

    def decrypt(self, pk: object = None) -> Any:
        return self.field.decrypt_message(bytes(self.message), pk)

    def __repr__(self) -> str:
        return f"<PendingDecryption of {self.field.model._meta.label}.{self.field.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PendingDecryption, (self.field, bytes(self.message)))


class DecryptingAttribute(DeferredAttribute):
    """The descriptor of an encrypted field: a deferred attribute that also decrypts on first access."""

    def __init__(self, field: models.Field) -> None:
        super().__init__(field)
        self.attname = field.attname

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, PendingDecryption):
            value = value.decrypt(pk=instance.pk)
            instance.__dict__[self.attname] = value
        return value

    # A data descriptor, so that reads always come through __get__ even once the value is in __dict__.
    # Model.__init__ calls this for every row loaded.
    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.attname] = value


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

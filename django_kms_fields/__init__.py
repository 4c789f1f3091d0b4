"""Django model fields encrypted with AWS KMS envelope encryption through the AWS Encryption SDK.

``from django_kms_fields import EncryptedTextField, EncryptedBinaryField`` works anywhere a model
module does; the fields are imported on first access, so that importing the app package (as
``INSTALLED_APPS`` does) loads neither the ORM nor the AWS Encryption SDK. ``adecrypt`` (for async
code: decrypts loaded instances in a worker thread) is imported the same way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
_FIELDS = {
    "EncryptedField": "fields",
    "EncryptedTextField": "fields",
    "EncryptedBinaryField": "fields",
    "EncryptedCharField": "typed_fields",
    "EncryptedEmailField": "typed_fields",
    "EncryptedJSONField": "typed_fields",
    "EncryptedIntegerField": "typed_fields",
    "EncryptedBigIntegerField": "typed_fields",
    "EncryptedDecimalField": "typed_fields",
    "EncryptedDateField": "typed_fields",
    "EncryptedDateTimeField": "typed_fields",
    "adecrypt": "lazy",
}
__all__ = list(_FIELDS)

if TYPE_CHECKING:
    from .fields import EncryptedBinaryField, EncryptedField, EncryptedTextField
    from .lazy import adecrypt
    from .typed_fields import (
        EncryptedBigIntegerField,
        EncryptedCharField,
        EncryptedDateField,
        EncryptedDateTimeField,
        EncryptedDecimalField,
        EncryptedEmailField,
        EncryptedIntegerField,
        EncryptedJSONField,
    )


def __getattr__(name: str) -> Any:
    if name in _FIELDS:
        module = importlib.import_module(f"{__name__}.{_FIELDS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

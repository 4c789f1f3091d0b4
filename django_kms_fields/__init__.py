"""Django model fields encrypted with AWS KMS envelope encryption through the AWS Encryption SDK.

``from django_kms_fields import EncryptedTextField, EncryptedBinaryField`` works anywhere a model
module does; the fields are imported on first access, so that importing the app package (as
``INSTALLED_APPS`` does) loads neither the ORM nor the AWS Encryption SDK. ``adecrypt`` (for async
code: decrypts loaded instances in a worker thread) is imported the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["EncryptedField", "EncryptedTextField", "EncryptedBinaryField", "adecrypt"]

if TYPE_CHECKING:
    from .fields import EncryptedBinaryField, EncryptedField, EncryptedTextField
    from .lazy import adecrypt


def __getattr__(name: str) -> Any:
    if name == "adecrypt":
        from .lazy import adecrypt

        return adecrypt
    if name in __all__:
        from . import fields

        return getattr(fields, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

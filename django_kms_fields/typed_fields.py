"""Encrypted versions of Django's typed fields.

Each behaves like its plain counterpart everywhere a user can see it (``to_python``, validators and
their messages, the form field and admin widget, what a read gives back, ``dumpdata``/``loaddata``, the
counterpart's own checks) except that the column holds one AWS Encryption SDK message and lookups are
refused. Each has one documented, stable encoding of its plaintext (docs/design.md, "Typed fields"), so
any program with KMS access, the AWS Encryption SDK CLI included, can decrypt a value and read it, and
equal values encrypt the same plaintext.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

from django.conf import settings
from django.core import validators
from django.db import connection, models
from django.db.models.expressions import Value
from django.utils.functional import cached_property

from .exceptions import DecryptionError, EncryptionError
from .fields import EncryptedField, TextEncoding

__all__ = [
    "EncryptedCharField",
    "EncryptedEmailField",
    "EncryptedJSONField",
    "EncryptedIntegerField",
    "EncryptedBigIntegerField",
    "EncryptedDecimalField",
    "EncryptedDateField",
    "EncryptedDateTimeField",
]


def _not_readable(field: EncryptedField, kind: str) -> DecryptionError:
    return DecryptionError(f"{field.model._meta.label}.{field.name}: the decrypted value is not {kind}.", code="Encoding")


class EncryptedCharField(TextEncoding, EncryptedField, models.CharField):
    """``CharField``: ``max_length`` counts the characters of the value, not the bytes of its message."""

    description = "Text of bounded length encrypted with AWS KMS"


class EncryptedEmailField(TextEncoding, EncryptedField, models.EmailField):
    """``EmailField``, encrypted; stored as the address's UTF-8 bytes, as written."""

    description = "An email address encrypted with AWS KMS"


class EncryptedJSONField(EncryptedField, models.JSONField):
    """``JSONField``: plaintext is canonical JSON (sorted keys, no spaces, UTF-8).

    ``None`` is SQL ``NULL``; ``Value(None, JSONField())`` stores JSON ``null`` (read back as ``None``,
    like ``JSONField``), on ``save()`` and ``create()``.
    """

    description = "A JSON object encrypted with AWS KMS"

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = model_instance.__dict__.get(self.attname)
        if isinstance(value, Value) and value.value is None and isinstance(value.output_field, models.JSONField):
            return _JSON_NULL
        return super().pre_save(model_instance, add)

    def get_prep_value(self, value: Any) -> Any:
        if value is _JSON_NULL:
            return value
        return super().get_prep_value(value)

    def to_plaintext_bytes(self, value: Any) -> bytes:
        if value is _JSON_NULL:
            value = None
        try:
            text = json.dumps(value, cls=self.encoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise EncryptionError(f"{self.model._meta.label}.{self.name}: the value is not JSON ({err}).") from None
        return text.encode("utf-8")

    def plaintext_encoding_options(self) -> str:
        return "" if self.encoder is None else f"encoder={self.encoder.__module__}.{self.encoder.__qualname__}"

    def from_plaintext_bytes(self, plaintext: bytes) -> Any:
        try:
            return json.loads(plaintext.decode("utf-8"), cls=self.decoder)
        except ValueError:
            raise _not_readable(self, "JSON") from None


class _JSONNull:
    """What ``Value(None, JSONField())`` becomes on its way to encryption: JSON ``null``, not SQL NULL."""

    def __repr__(self) -> str:
        return "JSON null"


_JSON_NULL = _JSONNull()


class _IntegerEncoding:
    """Plaintext as the decimal digits of the integer, with a leading ``-`` when negative."""

    model: type[models.Model]
    name: str
    # The counterpart whose range the validators enforce (the column itself is binary).
    counterpart_internal_type = "IntegerField"

    @cached_property
    def validators(self) -> list[Any]:
        # IntegerField asks the database for the range of its own internal type; ours is the binary
        # column's, which has none (peers crash here): use the counterpart's.
        own = [*self.default_validators, *self._validators]  # type: ignore[attr-defined]
        low, high = connection.ops.integer_field_range(self.counterpart_internal_type)
        if low is not None and not any(isinstance(v, validators.MinValueValidator) and v.limit_value >= low for v in own):
            own.append(validators.MinValueValidator(low))
        if high is not None and not any(isinstance(v, validators.MaxValueValidator) and v.limit_value <= high for v in own):
            own.append(validators.MaxValueValidator(high))
        return own

    def to_plaintext_bytes(self, value: Any) -> bytes:
        return str(int(value)).encode("ascii")

    def from_plaintext_bytes(self, plaintext: bytes) -> int:
        try:
            return int(plaintext.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _not_readable(self, "an integer") from None  # type: ignore[arg-type]


class EncryptedIntegerField(_IntegerEncoding, EncryptedField, models.IntegerField):
    """``IntegerField``, with its range (-2147483648 to 2147483647 on most databases)."""

    description = "An integer encrypted with AWS KMS"


class EncryptedBigIntegerField(_IntegerEncoding, EncryptedField, models.BigIntegerField):
    """``BigIntegerField``, with its 64-bit range."""

    description = "A big integer encrypted with AWS KMS"
    counterpart_internal_type = "BigIntegerField"


class EncryptedDecimalField(EncryptedField, models.DecimalField):
    """``DecimalField``: plaintext is the value's decimal string with exactly ``decimal_places`` places."""

    description = "A fixed-precision decimal number encrypted with AWS KMS"

    def to_plaintext_bytes(self, value: Any) -> bytes:
        number = self.to_python(value)
        # Quantized like the counterpart's database column; -0 is 0, as the databases store it.
        quantized = number.quantize(decimal.Decimal(1).scaleb(-self.decimal_places), context=self.context)
        return format(quantized.copy_abs() if quantized.is_zero() else quantized, "f").encode("ascii")

    def plaintext_encoding_options(self) -> str:
        return f"decimal_places={self.decimal_places}"

    def from_plaintext_bytes(self, plaintext: bytes) -> decimal.Decimal:
        try:
            return decimal.Decimal(plaintext.decode("ascii"))
        except (UnicodeDecodeError, decimal.InvalidOperation):
            raise _not_readable(self, "a decimal number") from None


class EncryptedDateField(EncryptedField, models.DateField):
    """``DateField``: plaintext is the ISO 8601 date, ``YYYY-MM-DD``."""

    description = "A date encrypted with AWS KMS"

    def to_plaintext_bytes(self, value: Any) -> bytes:
        return self.to_python(value).isoformat().encode("ascii")

    def from_plaintext_bytes(self, plaintext: bytes) -> datetime.date:
        try:
            return datetime.date.fromisoformat(plaintext.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _not_readable(self, "a date") from None


class EncryptedDateTimeField(EncryptedField, models.DateTimeField):
    """``DateTimeField``: plaintext is ISO 8601 with microseconds, in UTC (``+00:00``) under ``USE_TZ``.

    Reads give what ``DateTimeField`` gives: an aware datetime in UTC under ``USE_TZ``, naive otherwise.
    """

    description = "A date and time encrypted with AWS KMS"

    def to_plaintext_bytes(self, value: Any) -> bytes:
        moment = self.get_prep_value(value)  # the counterpart's: aware under USE_TZ (with its warning)
        if settings.USE_TZ:
            moment = moment.astimezone(datetime.timezone.utc)
        return moment.isoformat(timespec="microseconds").encode("ascii")

    def plaintext_encoding_options(self) -> str:
        return f"USE_TZ={settings.USE_TZ}"

    def from_plaintext_bytes(self, plaintext: bytes) -> datetime.datetime:
        try:
            return datetime.datetime.fromisoformat(plaintext.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _not_readable(self, "a date and time") from None

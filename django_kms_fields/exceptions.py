"""The errors this app raises.

Callers catch ``KMSFieldsError`` for everything, or one subclass for one kind of failure. The SDK's and
botocore's exceptions never escape bare: they are always the ``__cause__`` of one of these.
"""

from __future__ import annotations

from django.core.exceptions import FieldError, ImproperlyConfigured

__all__ = [
    "KMSFieldsError",
    "KMSFieldsConfigurationError",
    "KMSUnavailableError",
    "KMSCircuitOpenError",
    "KMSRequestError",
    "EncryptionError",
    "DecryptionError",
    "EncryptedLookupError",
    "EncryptedQueryError",
    "IncompleteIndexError",
]


class KMSFieldsError(Exception):
    """Base of every error raised by django-kms-fields.

    Errors about one KMS call carry it as data, so that callers (and the deploy check) decide from
    attributes, never from the message text: ``operation`` (``"GenerateDataKey"``, ``"Encrypt"``,
    ``"Decrypt"``, ``"DescribeKey"``), ``key_arn``, ``region`` and ``code``, the KMS or botocore error
    code (``"AccessDeniedException"``, ``"ReadTimeoutError"``...). Each is ``None`` where it does not
    apply.
    """

    def __init__(
        self,
        message: str = "",
        *,
        operation: str | None = None,
        key_arn: str | None = None,
        region: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.key_arn = key_arn
        self.region = region
        self.code = code

    def with_prefix(self, prefix: str) -> KMSFieldsError:
        """The same error, of the same class and with the same data, its message led by ``prefix``."""
        located = type(self)(
            f"{prefix}: {self}", operation=self.operation, key_arn=self.key_arn, region=self.region, code=self.code
        )
        located.__cause__ = self.__cause__
        located.__suppress_context__ = True
        return located


class KMSFieldsConfigurationError(KMSFieldsError, ImproperlyConfigured):
    """``KMS_FIELDS`` (or a field's options) is missing or invalid, or AWS credentials are missing."""


class KMSUnavailableError(KMSFieldsError):
    """KMS could not be reached, or kept failing after the configured attempts were spent.

    Connection and read timeouts, refused or reset connections, throttling and 5xx answers. Retrying
    later may succeed.
    """


class KMSCircuitOpenError(KMSUnavailableError):
    """KMS failed repeatedly in this keyring and region, so the call was not attempted (circuit breaker)."""


class KMSRequestError(KMSFieldsError):
    """KMS answered and refused: access denied, a disabled or unknown key, wrong key usage.

    Not retried: the same request would be refused again until the key or the IAM policy changes.
    """


class EncryptionError(KMSFieldsError, ValueError):
    """A value could not be encrypted because of the value itself (wrong type, not UTF-8 text)."""


class DecryptionError(KMSFieldsError):
    """A stored value is not a valid message for the field that read it.

    Tampered, truncated, left-over plaintext, garbage, another field's value, or a message whose data
    keys name no key of the field's keyring.
    """


class EncryptedLookupError(KMSFieldsError, FieldError):
    """A query tried to compare the contents of an encrypted column."""


class EncryptedQueryError(EncryptedLookupError):
    """A query would sort, group, deduplicate, compare or compute on the ciphertext of an encrypted
    column: ``order_by``, ``distinct``, ``values().annotate()``, ``Count(distinct=True)``, ``Max``,
    ``Length``, a set operation mixing columns... Raised when the query is compiled, before any SQL is
    sent; an ``EncryptedLookupError``, so also a ``FieldError``."""


class IncompleteIndexError(EncryptedQueryError):
    """A lookup on a searchable field while some rows have a value but no blind index that lookups match
    (the field was just made searchable, or its normaliser changed): it would miss them. ``manage.py
    kms_fields_reindex`` fills them; ``--check`` counts them."""

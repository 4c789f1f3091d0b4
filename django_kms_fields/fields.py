"""Model fields that store each value as an AWS Encryption SDK message under a KMS keyring.

The column is binary on every backend. A value is encrypted when Django prepares it for the database
(``get_db_prep_value``), so a failure raises before any SQL is sent. It is decrypted when read: at once
for ``values()``, ``values_list()`` and annotations, and on first attribute access for model instances
(see ``PendingDecryption``). Lookups that would compare ciphertext are refused, and so are query
expressions that would write anything but an encrypted value; its columns are ``EncryptedCol``s, which
refuse queries that would sort, group, deduplicate or compute on ciphertext (``queries.py``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from django.core import checks, exceptions
from django.views.decorators.debug import sensitive_variables
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Case, Col, Value, When
from django.db.models.fields import NOT_PROVIDED
from django.db.models.functions import Cast
from django.db.models.lookups import Lookup
from django.utils.functional import Promise

from . import blind_index, conf, crypto, field_checks, headers, lookups, searchable
from .compat import BinaryPlaceholderHook
from .exceptions import DecryptionError, EncryptionError
from .forms import BinaryUploadField
from .lazy import DecryptingAttribute, LazyDecryptionCol, PendingDecryption, called_from_default_columns
from .queries import EncryptedCol

__all__ = [
    "EncryptedField",
    "EncryptedTextField",
    "EncryptedBinaryField",
    "TextEncoding",
    "PendingDecryption",
    "EncryptedFieldMixin",
]

logger = logging.getLogger("django_kms_fields")

# Per field label: values read as legacy plaintext by this process, for fields with accept_plaintext.
_legacy_plaintext_reads: Counter[str] = Counter()
_legacy_plaintext_lock = threading.Lock()


class EncryptedField(BinaryPlaceholderHook, models.Field):
    """The base class of every encrypted field; subclass it for your own encrypted types.

    A subclass inherits from this class first and from the Django field it encrypts second, and
    defines ``to_plaintext_bytes`` (the value as the bytes to encrypt) and ``from_plaintext_bytes``
    (the reverse). The column is binary; lookups other than ``isnull`` are refused.

    ``keyring`` names a keyring of ``KMS_FIELDS``. ``binding`` pins the label written into each
    message's encryption context; it defaults to ``app_label.model_name.field_name``, so a model or
    field rename must set ``binding`` to the old label to keep reading existing values.
    ``accept_plaintext`` (off by default) reads stored values that are not encrypted messages as
    legacy plaintext, counting and logging each, while a column is being moved to encryption.

    ``searchable=True`` adds a blind index (``searchable.py``): exact and ``in`` lookups, and with
    ``unique=True`` a uniqueness the database enforces. ``search_normalizer``, an importable function,
    turns each value into what is indexed (``str.casefold`` after ``str.strip``, say) and leaves the stored
    value as written; lookups are normalised the same way.
    """

    # Options that change how values are encrypted, never the column: changing only these makes a
    # migration that alters nothing in the database (SQLite would otherwise rebuild the table).
    # unique too: it is enforced on the blind-index column, never on the ciphertext.
    non_db_attrs = (
        *models.Field.non_db_attrs, "keyring", "binding", "accept_plaintext", "searchable", "search_normalizer", "unique"
    )

    def __init__(
        self,
        *args: Any,
        keyring: str = conf.DEFAULT_KEYRING,
        binding: str | None = None,
        accept_plaintext: bool = False,
        searchable: bool = False,
        search_normalizer: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ):
        self.keyring = keyring
        self.binding = binding
        self.accept_plaintext = accept_plaintext
        self.searchable = searchable
        self.search_normalizer = search_normalizer
        # Kept away from Django, which would encrypt it while migrating (a KMS call at migration
        # time, one ciphertext baked into the DDL for every row): check kms_fields.E035 reports it.
        self.refused_db_default = kwargs.pop("db_default", NOT_PROVIDED)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, path, args, kwargs = super().deconstruct()
        if self.keyring != conf.DEFAULT_KEYRING:
            kwargs["keyring"] = self.keyring
        if self.binding is not None:
            kwargs["binding"] = self.binding
        if self.accept_plaintext:
            kwargs["accept_plaintext"] = True
        if self.searchable:
            kwargs["searchable"] = True
        if self.search_normalizer is not None:
            kwargs["search_normalizer"] = self.search_normalizer
        return name, path, args, kwargs

    @property  # type: ignore[override]
    def unique(self) -> bool:
        # Unique to model validation (which looks the value up through the blind index), auth's
        # USERNAME_FIELD check and serializers; never to the schema editor: the database's unique
        # index is on the blind-index column, not on the ciphertext.
        return bool(self._unique and self.searchable and not searchable.asked_by_schema_editor())

    def contribute_to_class(self, cls: type[models.Model], name: str, **kwargs: Any) -> None:
        super().contribute_to_class(cls, name, **kwargs)
        if self.searchable and not kwargs.get("private_only"):
            searchable.add_companion(self, cls)

    @property
    def legacy_plaintext_reads(self) -> int:
        """How many stored values this process read as legacy plaintext (with ``accept_plaintext``)."""
        return _legacy_plaintext_reads[self.field_binding().label]

    def get_internal_type(self) -> str:
        return "BinaryField"

    def check_placeholder_value(self, value: Any) -> None:
        if hasattr(value, "as_sql"):
            self._refuse_unencrypted_expression(value)

    # -- encryption -------------------------------------------------------------------------------

    def field_binding(self) -> crypto.FieldBinding:
        # Remembered per model: a field copied to another model (abstract inheritance) has its own.
        remembered = self.__dict__.get("_field_binding")
        if (
            remembered is not None
            and remembered[0] is self.model
            and remembered[1] == self.binding
            and remembered[2] == self.name
        ):
            return remembered[3]
        meta = self.model._meta
        binding = crypto.FieldBinding(
            label=self.binding or f"{meta.label_lower}.{self.name}",
            description=f"{meta.label}.{self.name}",
        )
        self.__dict__["_field_binding"] = (self.model, self.binding, self.name, binding)
        return binding

    def to_plaintext_bytes(self, value: Any) -> bytes:
        raise NotImplementedError

    def from_plaintext_bytes(self, plaintext: bytes) -> Any:
        raise NotImplementedError

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, PendingDecryption):
            return value
        return super().get_prep_value(value)

    @sensitive_variables("value")  # directly: method_decorator would rebuild the wrapper on every save
    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        if hasattr(value, "as_sql"):
            self._refuse_unencrypted_expression(value)
            return value
        keyring = conf.get_keyring(self.keyring)
        if isinstance(value, PendingDecryption):
            if value.field is self and headers.is_current_message(value.message, keyring):
                return bytes(value.message)
            # Legacy plaintext, a message under keys rotated away from, another field's value: never
            # written back as it was.
            value = value.decrypt()
        # bytes, not connection.Database.Binary(message): every driver Django supports binds bytes to a
        # binary column, and SQLite's Binary is a memoryview, two objects per value that the garbage
        # collector tracks; enough, on Python 3.11, for one more full collection in a bulk_create
        # (docs/design.md, "What the driver is given").
        return crypto.encrypt(self.to_plaintext_bytes(value), keyring, self.field_binding())

    def select_format(self, compiler: Any, sql: str, params: Any) -> tuple[str, Any]:
        # The column is bytes whatever the counterpart is (JSONField would cast it to text).
        return sql, params

    def get_db_prep_save(self, value: Any, connection: BaseDatabaseWrapper) -> Any:
        # Every write goes through get_db_prep_value, that is through encryption: counterparts such
        # as DecimalField or JSONField override this hook with their own preparation of the value.
        if self.searchable:
            searchable.keep_index_in_step(self, value, sys._getframe(1))
        if hasattr(value, "as_sql"):
            self._refuse_unencrypted_expression(value)
            return value
        return self.get_db_prep_value(value, connection, prepared=False)

    # -- blind index ------------------------------------------------------------------------------

    def _index_variant(self) -> str:
        # What the index's tag names besides the key: the normaliser and the options that change the
        # bytes a value is encoded as, so that changing either shows rows as not indexed (until
        # kms_fields_reindex) instead of letting lookups miss them.
        encoding = self.plaintext_encoding_options()
        return blind_index.normalizer_name(self.search_normalizer) + (f"|{encoding}" if encoding else "")

    def plaintext_encoding_options(self) -> str:
        """The field options that change ``to_plaintext_bytes`` for one value; none for text and bytes."""
        return ""

    def blind_index_keys(self) -> list[blind_index.FieldIndexKey]:
        """The keys lookups match: the current index key first, then the previous ones."""
        keyring = conf.get_keyring(self.keyring)
        return blind_index.index_keys(keyring, self.field_binding().label, self._index_variant())

    @sensitive_variables("value")
    def search_plaintext(self, value: Any, pk: object = None) -> bytes:
        """The bytes a value is indexed as: normalised, then encoded as it would be encrypted."""
        if isinstance(value, PendingDecryption):
            value = value.decrypt(pk=pk)
        if self.search_normalizer is not None:
            value = self.search_normalizer(value)
        if type(value) is str and isinstance(self, TextEncoding):
            return self.to_plaintext_bytes(value)  # what get_prep_value would give back for text
        return self.to_plaintext_bytes(self.get_prep_value(value))

    def blind_index(self, value: Any, pk: object = None) -> str | None:
        """The index written for ``value`` (under the current index key, or the one loaded with it)."""
        if isinstance(value, PendingDecryption) and value.field is self and value.loaded_index is not None:
            return value.loaded_index
        return self._current_index_key().index(self.search_plaintext(value, pk))

    def _current_index_key(self) -> blind_index.FieldIndexKey:
        """The key new indexes are written under (the first of ``blind_index_keys()``)."""
        # Memoised per field (this is paid per value saved), and checked against everything the key
        # depends on: the keyring object (new on every settings change), the roots' generation, the
        # model (fields are copied to subclasses of abstract models) and the root's expiry.
        keyring = conf.get_keyring(self.keyring)
        memo = self.__dict__.get("_index_key_memo")
        if (
            memo is not None and memo[0] is keyring and memo[1] == blind_index.generation
            and memo[2] is self.model and blind_index.clock() < memo[3]
        ):
            return memo[4]
        generation = blind_index.generation
        expires, key = blind_index.current_index_key_and_expiry(keyring, self.field_binding().label, self._index_variant())
        self.__dict__["_index_key_memo"] = (keyring, generation, self.model, expires, key)
        return key

    @sensitive_variables("values", "plaintexts")
    def blind_indexes_matching(self, values: Iterable[Any], keys: list[blind_index.FieldIndexKey]) -> list[str]:
        """Every index a lookup for ``values`` matches: each value under each of ``keys`` (the field's
        ``blind_index_keys()``)."""
        plaintexts = [self.search_plaintext(value) for value in values]
        return blind_index.indexes_matching(keys, plaintexts)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        # Not getattr(): a value that was loaded and never read is written back as the same message,
        # with no decryption and no KMS call.
        value = model_instance.__dict__.get(self.attname)
        if not isinstance(value, PendingDecryption):
            value = super().pre_save(model_instance, add)
        if hasattr(value, "resolve_expression"):
            self._refuse_unencrypted_expression(value)
        return value

    def decrypt_message(self, message: Any, pk: object = None) -> Any:
        """The value of one stored message, as the database driver gave it (bytes, or memoryview).

        Text from the driver means the column still holds text, as SQLite keeps it in a column that
        Django converted from a text column: with ``accept_plaintext`` it is legacy plaintext (its
        UTF-8 bytes), otherwise a ``DecryptionError``, never a ``TypeError``.
        """
        if isinstance(message, str):
            if self.accept_plaintext:
                self._count_legacy_read(pk)
                return self._value_of(message.encode("utf-8"), pk)
            where = f"{self.model._meta.label}.{self.name}" + ("" if pk is None else f" (pk={pk!r})")
            raise DecryptionError(
                f"{where}: the column holds text, not an encrypted message; was it converted from a text "
                "column with AlterField? Convert it with django_kms_fields.operations.ConvertToEncryptedField "
                "and read it with accept_plaintext=True until kms_fields_reencrypt has run.",
                code="TextInColumn",
            )
        message = bytes(message)
        if self.accept_plaintext and not headers.looks_like_message(message):
            self._count_legacy_read(pk)
            return self._value_of(message, pk)
        keyring, binding = conf.get_keyring(self.keyring), self.field_binding()
        # The plaintext is passed on, never held here: this frame is in the traceback of a failure to read it.
        return self._value_of(crypto.decrypt(message, keyring, binding, pk=pk), pk)

    def _count_legacy_read(self, pk: object) -> None:
        binding = self.field_binding()
        with _legacy_plaintext_lock:
            _legacy_plaintext_reads[binding.label] += 1
        logger.warning(
            "%s: read a legacy plaintext value (pk=%r); kms_fields_reencrypt encrypts it in place.",
            binding.description,
            pk,
        )

    def _value_of(self, plaintext: bytes, pk: object) -> Any:
        """``from_plaintext_bytes(plaintext)``; for a plaintext it cannot read (a message written by another
        tool, or by another field class under the same binding), a new ``DecryptionError`` naming the row.

        New, and raised out of the except block with the plaintext deleted, so that nothing that quotes or
        holds the plaintext is reachable from it: not the parser's own error (``UnicodeDecodeError.object``,
        ``JSONDecodeError.doc`` and ``int()``'s message quote it), even as the hidden context of
        ``raise ... from None``, and no frame that held the plaintext. A subclass's parser may raise anything.
        """
        try:
            return self.from_plaintext_bytes(plaintext)
        except Exception as err:
            error_name, error_code = type(err).__name__, getattr(err, "code", None)
            reason = str(err) if isinstance(err, DecryptionError) else None
        del plaintext
        field = f"{self.model._meta.label}.{self.name}"
        where = field if pk is None else f"{field} (pk={pk!r})"
        if reason is not None:
            raise DecryptionError(f"{where}: {reason.removeprefix(f'{field}: ')}", code=error_code)
        raise DecryptionError(
            f"{where}: the decrypted value cannot be read as this field's value ({error_name}).", code=error_name
        )

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        if value is None:
            return None
        return self.decrypt_message(value)

    # -- lazy decryption --------------------------------------------------------------------------

    descriptor_class = DecryptingAttribute

    def get_col(self, alias: str, output_field: models.Field | None = None) -> Col:
        # Django gives a field no way to tell whether its column will build model instances or
        # values() rows. The columns that build instances (including select_related ones) all come
        # from SQLCompiler.get_default_columns(), so that caller is recognised by its code object.
        # Should a Django release change it, values are decrypted eagerly: slower, never wrong.
        if output_field in (None, self) and called_from_default_columns():
            if alias == self.model._meta.db_table:
                return self.cached_lazy_col
            return LazyDecryptionCol(alias, self)
        # Every other column checks, when compiled, that the query does not sort, group, deduplicate,
        # compare or compute on ciphertext (queries.py).
        if alias == self.model._meta.db_table and output_field in (None, self):
            return self.cached_col
        return EncryptedCol(alias, self, output_field)

    @cached_property
    def cached_col(self) -> Col:
        return EncryptedCol(self.model._meta.db_table, self)

    @cached_property
    def cached_lazy_col(self) -> Col:
        return LazyDecryptionCol(self.model._meta.db_table, self)

    def _refuse_unencrypted_expression(self, expression: Any) -> None:
        """Only expressions that produce this field's own encrypted values may be written to it.

        ``bulk_update`` writes ``Case(When(..., then=Value(v, output_field=field)))``, where each Value
        encrypts itself; ``update(field=Value("x"))`` or ``Upper(...)`` would store plaintext.
        """
        if not self._writes_encrypted_values(expression):
            raise EncryptionError(
                f"{self.model._meta.label}.{self.name} is encrypted: a query expression would write "
                f"{type(expression).__name__} to it without encryption. Assign plain values, or use "
                f"Value(value, output_field=<this field>)."
            )

    def _writes_encrypted_values(self, expression: Any) -> bool:
        if isinstance(expression, Value):
            return expression.value is None or expression._output_field_or_none is self
        if isinstance(expression, Col):
            return expression.target is self
        if isinstance(expression, When):
            return self._writes_encrypted_values(expression.result)
        if isinstance(expression, Case):
            return all(self._writes_encrypted_values(e) for e in (*expression.cases, expression.default))
        if isinstance(expression, Cast):
            return expression.output_field is self and self._writes_encrypted_values(expression.source_expressions[0])
        return False

    # -- queries ----------------------------------------------------------------------------------

    def get_lookup(self, lookup_name: str) -> type[Lookup] | None:
        isnull = super().get_lookup("isnull") if lookup_name == "isnull" else None
        if self.searchable and lookup_name in searchable.SEARCHABLE_LOOKUPS:
            return searchable.SEARCHABLE_LOOKUPS[lookup_name]
        return lookups.lookup_for(self, lookup_name, isnull)

    def get_transform(self, lookup_name: str) -> Any:
        raise lookups.lookup_refusal(self, lookup_name)

    # -- checks -----------------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [*super().check(**kwargs), *field_checks.check_encrypted_field(self)]


# The name of EncryptedField in release 0.1, kept so that code written against it keeps working.
EncryptedFieldMixin = EncryptedField


class TextEncoding:
    """Plaintext as the UTF-8 bytes of ``str`` values, for encrypted fields of text types.

    Refuses anything but text (lazy translation strings are text), where Django's text fields would
    turn any object into text with ``str()``: ``b"raw"`` would be stored as ``"b'raw'"``.
    """

    model: type[models.Model]
    name: str

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Promise):
            value = str(value)
        if value is None or isinstance(value, (str, PendingDecryption)) or hasattr(value, "resolve_expression"):
            return super().get_prep_value(value)  # type: ignore[misc]
        raise EncryptionError(f"{self.model._meta.label}.{self.name} takes text (str), not {type(value).__name__}.")

    def to_python(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise exceptions.ValidationError(
                f"{self.model._meta.label}.{self.name} takes text, not {type(value).__name__}.", code="invalid"
            )
        return super().to_python(value)  # type: ignore[misc]

    def to_plaintext_bytes(self, value: Any) -> bytes:
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise EncryptionError(
                f"{self.model._meta.label}.{self.name}: the value is not valid Unicode text ({err.reason})."
            ) from None

    def from_plaintext_bytes(self, plaintext: bytes) -> str:
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError(
                f"{self.model._meta.label}.{self.name}: the decrypted value is not UTF-8 text."
            ) from None




class EncryptedTextField(TextEncoding, EncryptedField, models.TextField):
    """Text encrypted under a KMS keyring; reads give back ``str``."""

    description = "Text encrypted with AWS KMS"


class EncryptedBinaryField(EncryptedField, models.BinaryField):
    """Bytes encrypted under a KMS keyring; takes bytes, bytearray or memoryview, reads give ``bytes``.

    Like Django's ``BinaryField`` it is not editable in forms unless ``editable=True``; then it is a
    file upload.
    """

    description = "Binary data encrypted with AWS KMS"

    def to_plaintext_bytes(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise EncryptionError(
            f"{self.model._meta.label}.{self.name} takes bytes, bytearray or memoryview, "
            f"not {type(value).__name__}."
        )

    def from_plaintext_bytes(self, plaintext: bytes) -> bytes:
        return plaintext

    def formfield(self, **kwargs: Any) -> Any:
        # With no file and nothing stored: NULL where the column allows it, else b"" (never NULL into NOT NULL).
        empty_value = None if self.null else b""
        return super().formfield(**{"form_class": BinaryUploadField, "max_length": self.max_length, "empty_value": empty_value, **kwargs})

"""System checks of one encrypted field and of the model options that name it (``Field.check()``).

Ids: E020 unknown keyring, E021 ``primary_key``/``unique``/``db_index``, E032 a binding shared with
another field, E033 an index, constraint or ``unique_together`` over the field, E034 ``Meta.ordering``
by the field, E035 ``db_default``, E038 a searchable field whose keyring has no ``INDEX_KEY_ARN``, E039
a searchable field whose companion name is taken or whose ``search_normalizer`` cannot be imported.
Every value is encrypted with its own data key and nonce, so the database cannot compare, sort or
default encrypted values meaningfully.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db.models import F, NOT_PROVIDED, Q

from . import conf
from .exceptions import KMSFieldsConfigurationError

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["check_encrypted_field"]

_INDEX_HINT = (
    "Every value is encrypted with its own data key, so equal values differ in the database and an index "
    "or uniqueness constraint on them means nothing. For equality lookups and uniqueness, set searchable=True: "
    "a blind index (a keyed hash from KMS) in its own column answers them."
)


def check_encrypted_field(field: EncryptedField) -> list[checks.CheckMessage]:
    return [
        *_keyring(field),
        *_field_options(field),
        *_binding_unique(field),
        *_model_options(field),
        *_db_default(field),
        *_searchable(field),
    ]


def _error(field: EncryptedField, msg: str, hint: str, check_id: str) -> checks.Error:
    return checks.Error(msg, hint=hint, obj=field, id=f"kms_fields.{check_id}")


def _keyring(field: EncryptedField) -> list[checks.CheckMessage]:
    aliases = conf.keyring_aliases()
    if not aliases or field.keyring in aliases:
        return []  # a missing KMS_FIELDS is reported once, as kms_fields.E001
    hint = "Configured keyrings: " + ", ".join(map(repr, aliases)) + "."
    return [_error(field, f"keyring={field.keyring!r} is not a keyring of KMS_FIELDS.", hint, "E020")]


def _field_options(field: EncryptedField) -> list[checks.CheckMessage]:
    return [
        _error(field, f"An encrypted field cannot be {option}=True.", _INDEX_HINT, "E021")
        for option, value in (
            ("primary_key", field.primary_key),
            ("unique", field._unique and not field.searchable),
            ("db_index", field.db_index),
        )
        if value
    ]


def _searchable(field: EncryptedField) -> list[checks.CheckMessage]:
    from .searchable import BlindIndexField, companion_name

    problems: list[checks.CheckMessage] = []
    normalizer = field.search_normalizer
    if normalizer is not None and not field.searchable:
        problems.append(_error(field, "search_normalizer is set but searchable is not.", "Set searchable=True, or drop search_normalizer.", "E039"))
    if normalizer is not None and (not callable(normalizer) or "<" in getattr(normalizer, "__qualname__", "<")):
        problems.append(
            _error(
                field,
                f"search_normalizer={normalizer!r} is not an importable function.",
                "Migrations record it by its import path: use a module-level function (a lambda or a nested function "
                "cannot be imported).",
                "E039",
            )
        )
    if not field.searchable:
        return problems
    name = companion_name(field.name)
    try:
        companion = field.model._meta.get_field(name)
    except FieldDoesNotExist:
        companion = None
    if not isinstance(companion, BlindIndexField) or companion.indexes != field.name:
        problems.append(
            _error(
                field,
                f"searchable=True needs the column {name!r} for the blind index, but the model has another field of that name.",
                f"Rename that field: {name} is reserved for the blind index of {field.name}.",
                "E039",
            )
        )
    aliases = conf.keyring_aliases()
    if field.keyring in aliases:
        try:
            keyring = conf.get_keyring(field.keyring)
        except KMSFieldsConfigurationError:
            return problems  # reported by the settings checks
        if keyring.index_key_arn is None:
            problems.append(
                _error(
                    field,
                    f"searchable=True, but keyring {field.keyring!r} has no INDEX_KEY_ARN.",
                    "Create a KMS HMAC key (KeySpec HMAC_256, KeyUsage GENERATE_VERIFY_MAC) and set its ARN as "
                    f"KMS_FIELDS[{field.keyring!r}]['INDEX_KEY_ARN'].",
                    "E038",
                )
            )
    return problems


def _binding_unique(field: EncryptedField) -> list[checks.CheckMessage]:
    from .fields import EncryptedField

    label = field.field_binding().label
    sharing = [
        f"{other.model._meta.label}.{other.name}"
        for model in field.model._meta.apps.get_models()
        for other in model._meta.local_concrete_fields
        if isinstance(other, EncryptedField) and other is not field and other.field_binding().label == label
    ]
    if not sharing:
        return []
    return [
        _error(
            field,
            f"binding {label!r} is also the binding of {', '.join(sharing)}.",
            "Fields that share a binding can read each other's values: a value copied from one column into the "
            "other decrypts. Give each field its own binding (after a rename, only the renamed field keeps the "
            "old label).",
            "E032",
        )
    ]


def _model_options(field: EncryptedField) -> list[checks.CheckMessage]:
    meta = field.model._meta
    errors = []
    for option, entries in (
        ("Meta.indexes", meta.indexes),
        ("Meta.constraints", meta.constraints),
        ("Meta.unique_together", [list(names) for names in meta.unique_together]),
    ):
        for entry in entries:
            if field.name in set(_referenced_names(entry)):
                described = getattr(entry, "name", None) or entry
                errors.append(_error(field, f"{option} entry {described!r} covers the encrypted field {field.name!r}.", _INDEX_HINT, "E033"))
    if field.name in set(_referenced_names(meta.ordering)):
        errors.append(
            _error(
                field,
                f"Meta.ordering sorts by the encrypted field {field.name!r}, that is by its ciphertext.",
                "The order of ciphertexts says nothing about the values. Order by another column, or sort in "
                "Python after loading.",
                "E034",
            )
        )
    return errors


def _db_default(field: EncryptedField) -> list[checks.CheckMessage]:
    if field.refused_db_default is NOT_PROVIDED:
        return []
    return [
        _error(
            field,
            "An encrypted field cannot have a db_default.",
            "The database would store one ciphertext, made at migration time with a KMS call, for every defaulted "
            "row. Use default= (a value or a callable), which is encrypted for each row when it is saved. The "
            "db_default is ignored until it is removed.",
            "E035",
        )
    ]


def _referenced_names(entry: Any) -> Iterator[str]:
    """The model field names an index, constraint, ordering or name list refers to, at any depth."""
    if isinstance(entry, str):
        yield entry.lstrip("-?").split("__")[0]
    elif isinstance(entry, F):
        yield entry.name.split("__")[0]
    elif isinstance(entry, Q):
        for child in entry.children:
            if isinstance(child, tuple):
                name, *lookup = child[0].split("__")
                if lookup != ["isnull"]:  # NULL or not is the one thing the database can tell
                    yield name
                yield from _referenced_names(child[1])
            else:
                yield from _referenced_names(child)
    elif isinstance(entry, (list, tuple, set)):
        for item in entry:
            yield from _referenced_names(item)
    elif hasattr(entry, "get_source_expressions"):
        for source in entry.get_source_expressions():
            yield from _referenced_names(source)
    else:
        # Index and the constraints: their field names, expressions and conditions.
        for attribute in ("fields", "expressions", "condition", "include"):
            value = getattr(entry, attribute, None)
            if value:
                yield from _referenced_names(value)

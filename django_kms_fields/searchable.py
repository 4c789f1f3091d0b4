"""Equality search on encrypted fields: the blind-index column, its lookups, and the writes that keep it
in step with the value.

``EncryptedTextField(searchable=True)`` adds a companion field, ``<name>_blind_index`` (a ``BlindIndexField``,
a 72-character hex column that ``makemigrations`` adds like any other), that holds ``blind_index`` of the
value. ``filter(field=v)``, ``exclude``, ``__in``, ``get``, ``get_or_create`` and ``validate_unique``
compare that column; the database never sees the value. With ``unique=True`` the companion carries the
unique index, so the database enforces uniqueness.

Every write keeps the companion in step: ``save``/``create``/``bulk_create`` and ``loaddata`` through its
attribute (computed from the value unless the value was loaded and never touched), and
``update``/``bulk_update``/``save(update_fields=...)`` by adding the companion to the UPDATE statement
when it is compiled (``keep_index_in_step``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet, FieldDoesNotExist
from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models.expressions import Case, Col, Value, When
from django.db.models.functions import Cast
from django.db.models.lookups import Exact, In, Lookup
from django.db.models.query_utils import DeferredAttribute, Q
from django.db.models.sql.compiler import SQLInsertCompiler, SQLUpdateCompiler
from django.views.decorators.debug import sensitive_variables

from . import blind_index, conf
from .exceptions import EncryptedLookupError, EncryptedQueryError, IncompleteIndexError
from .lazy import PendingDecryption

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["BlindIndexField", "companion_name", "IncompleteIndexError", "keep_index_in_step", "missing_index_count"]

COMPANION_SUFFIX = "_blind_index"

# Which value object the loaded index belongs to, kept next to it in the instance's __dict__.
_SOURCE_PREFIX = "_kms_fields_index_source:"


def companion_name(field_name: str) -> str:
    return field_name + COMPANION_SUFFIX


class BlindIndexAttribute(DeferredAttribute):
    """The companion's attribute: the index of the encrypted field's current value.

    A value loaded and never read carries the index loaded from its row (``PendingDecryption.loaded_index``,
    set by ``__set__`` when ``Model.__init__`` assigns the row), so saving an unread instance, or writing its
    unread value into another row, writes that index without decrypting. Any other value is indexed
    afresh, so ``save``, ``bulk_create``, ``bulk_update`` and ``loaddata`` write the index of what they write.
    """

    @sensitive_variables("value")
    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        field: BlindIndexField = self.field  # type: ignore[assignment]
        source = field.indexed_field
        if source is None or source.attname not in instance.__dict__:
            return super().__get__(instance, cls)
        value = instance.__dict__[source.attname]
        if value is None:
            return None
        if isinstance(value, PendingDecryption) and value.loaded_index is None and value.field is source:
            if instance.__dict__.get(_SOURCE_PREFIX + field.attname) is value and field.attname in instance.__dict__:
                return instance.__dict__[field.attname]  # loaded with it, no index yet: left as it is
        return source.blind_index(value, pk=instance.pk)

    def __set__(self, instance: Any, value: Any) -> None:
        field: BlindIndexField = self.field  # type: ignore[assignment]
        instance.__dict__[field.attname] = value
        source = field.indexed_field
        if source is not None:
            loaded = instance.__dict__.get(source.attname)
            instance.__dict__[_SOURCE_PREFIX + field.attname] = loaded
            if isinstance(loaded, PendingDecryption) and loaded.field is source and loaded.loaded_index is None:
                loaded.loaded_index = value


class BlindIndexField(models.CharField):
    """The blind index of one searchable encrypted field; added by that field, never declared by hand.

    ``<name>_blind_index`` indexes the field ``<name>``; no option says so, so that renaming both (in two
    steps, see the README) is a rename of each, which keeps the indexes. The column is NULL for NULL values and for rows not indexed
    yet (``kms_fields_reindex`` fills them); lowercase hex, so case-insensitive collations compare it
    exactly.
    """

    descriptor_class = BlindIndexAttribute
    description = "Blind index of an encrypted field"

    def __init__(self, *args: Any, indexes: str | None = None, **kwargs: Any) -> None:
        self.indexes = indexes
        kwargs.setdefault("max_length", blind_index.INDEX_LENGTH)
        kwargs.setdefault("null", True)
        kwargs.setdefault("editable", False)
        kwargs.setdefault("serialize", False)
        if not kwargs.get("unique"):
            kwargs.setdefault("db_index", True)
        self.added_automatically = kwargs.pop("added_automatically", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, _, args, kwargs = super().deconstruct()
        return name, "django_kms_fields.searchable.BlindIndexField", args, kwargs

    def contribute_to_class(self, cls: type[models.Model], name: str, private_only: bool = False) -> None:
        # A migration state lists the companion itself: it takes the place of the one the encrypted
        # field added, so that the state's own attributes (unique or not) are what migrations see.
        for existing in list(cls._meta.local_fields):
            if existing.name == name and getattr(existing, "added_automatically", False):
                cls._meta.local_fields.remove(existing)
                cls._meta._expire_cache()
            elif existing.name == name:
                return
        self.indexes = name.removesuffix(COMPANION_SUFFIX)
        super().contribute_to_class(cls, name, private_only)

    @property  # type: ignore[override]
    def unique(self) -> bool:
        # Model validation checks the value through the encrypted field, under its name and label; a
        # second "... blind index already exists" error would name a column users never see.
        return bool(self._unique and not asked_by_unique_checks())

    @property
    def indexed_field(self) -> EncryptedField | None:
        try:
            field = self.model._meta.get_field(self.indexes)
        except FieldDoesNotExist:  # a historical model without it
            return None
        return field if getattr(field, "searchable", False) else None


def add_companion(field: EncryptedField, cls: type[models.Model]) -> None:
    """Give ``cls`` the companion of ``field``, unless it already has a field of that name."""
    name = companion_name(field.name)
    if any(existing.name == name for existing in cls._meta.local_fields):
        return
    companion = BlindIndexField(indexes=field.name, unique=field._unique, added_automatically=True)
    cls.add_to_class(name, companion)


def companion_of(field: EncryptedField) -> BlindIndexField:
    companion = field.model._meta.get_field(companion_name(field.name))
    if not isinstance(companion, BlindIndexField):
        raise EncryptedQueryError(f"{field.model._meta.label}.{companion.name} is not the blind index of {field.name}.")
    return companion


# --- the unique option ------------------------------------------------------------------------------

def asked_by_schema_editor() -> bool:
    """Whether a schema editor reads ``field.unique`` (its method is two or three frames up).

    A searchable ``unique=True`` field is unique to everything else (model validation, which then looks
    the value up through the blind index; ``USERNAME_FIELD``; serializers' unique validators) but not to
    the schema editor: the database's unique index is on the companion column, never on the ciphertext.
    """
    frame = sys._getframe(2)
    for _ in range(2):  # the property's caller, or a comprehension inside it (Python 3.11)
        if frame is None:
            return False
        if isinstance(frame.f_locals.get("self"), BaseDatabaseSchemaEditor):
            return True
        frame = frame.f_back
    return False


_UNIQUE_CHECKS_CODE = models.Model._get_unique_checks.__code__


def asked_by_unique_checks() -> bool:
    """Whether ``Model._get_unique_checks`` reads ``field.unique`` (two frames up: the property, its caller)."""
    return sys._getframe(2).f_code is _UNIQUE_CHECKS_CODE


# --- lookups ----------------------------------------------------------------------------------------


class _IndexedLookup(Lookup):
    """Compares the companion column with the indexes of the looked-up values under every index key."""

    prepare_rhs = False
    compares_blind_index = True

    def __init__(self, lhs: Any, rhs: Any) -> None:
        if hasattr(rhs, "resolve_expression") or (
            isinstance(rhs, (list, tuple, set)) and any(hasattr(v, "resolve_expression") for v in rhs)
        ):
            raise EncryptedLookupError(
                f"{lhs.output_field.model._meta.label}.{lhs.output_field.name} is searchable by value only: its "
                "blind index cannot be compared with a column, a subquery or an expression."
            )
        super().__init__(lhs, rhs)

    def values(self) -> list[Any]:
        raise NotImplementedError

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, Any]:
        field: EncryptedField = self.lhs.output_field
        companion = companion_of(field)
        keys = field.blind_index_keys()
        require_complete_index(field, compiler.using, keys)
        indexes = field.blind_indexes_matching(self.values(), keys)
        column = companion.get_col(self.lhs.alias)
        lookup = Exact(column, indexes[0]) if len(indexes) == 1 else In(column, indexes)
        return compiler.compile(lookup)


class IndexedExact(_IndexedLookup):
    lookup_name = "exact"

    def values(self) -> list[Any]:
        return [self.rhs]


class IndexedIExact(IndexedExact):
    """``iexact`` (the admin's ``"=field"`` search): only on a field whose normaliser folds case."""

    lookup_name = "iexact"

    def __init__(self, lhs: Any, rhs: Any) -> None:
        field = lhs.output_field
        if not folds_case(field) and rhs is not None:
            raise EncryptedQueryError(
                f"{field.model._meta.label}.{field.name} is searchable, but its blind index is case-sensitive, so "
                "'iexact' cannot be answered. Use 'exact', or give the field a case-folding search_normalizer "
                "(django_kms_fields.normalizers.casefold or .email) and run kms_fields_reindex."
            )
        super().__init__(lhs, rhs)


def folds_case(field: EncryptedField) -> bool:
    return bool(getattr(field.search_normalizer, "case_insensitive", False))


class IndexedIn(_IndexedLookup):
    lookup_name = "in"

    def values(self) -> list[Any]:
        try:
            values = [value for value in self.rhs if value is not None]
        except TypeError:
            values = [self.rhs]
        if not values:
            raise EmptyResultSet
        return values


SEARCHABLE_LOOKUPS: dict[str, type[Lookup]] = {"exact": IndexedExact, "iexact": IndexedIExact, "in": IndexedIn}


# --- rows without a current index ----------------------------------------------------------------------

_complete: dict[tuple[str, str, tuple[str, ...]], float] = {}
_complete_lock = threading.Lock()
conf.on_settings_reset(_complete.clear)


def _rows_not_indexed_under(
    field: EncryptedField, using: str, keys: list[blind_index.FieldIndexKey]
) -> models.QuerySet:
    """Rows with a value whose blind index is missing or under none of ``keys``."""
    companion = companion_of(field)
    accepted = Q()
    for key in keys:
        accepted |= Q(**{f"{companion.name}__startswith": key.tag})
    return field.model._base_manager.using(using).filter(**{f"{field.name}__isnull": False}).exclude(accepted)


def missing_index_count(field: EncryptedField, using: str = "default", *, current_key_only: bool = False) -> int:
    """Rows with a value whose blind index is missing, or under no key that lookups match.

    With ``current_key_only``, rows indexed under a previous key count as missing too (what
    ``kms_fields_reindex`` still has to do).
    """
    keys = field.blind_index_keys()
    return _rows_not_indexed_under(field, using, keys[:1] if current_key_only else keys).count()


def require_complete_index(field: EncryptedField, using: str, keys: list[blind_index.FieldIndexKey]) -> None:
    """Refuse a lookup that would silently miss rows without an index under ``keys`` (the field's
    ``blind_index_keys()``); checked once per ``MAX_AGE``."""
    slot = (using, field.field_binding().label, tuple(key.tag for key in keys))
    now = time.monotonic()
    with _complete_lock:
        if _complete.get(slot, 0.0) > now:
            return
    # exists(), not count(): while the column is incomplete, every lookup pays this query.
    if _rows_not_indexed_under(field, using, keys).exists():
        raise IncompleteIndexError(
            f"{field.model._meta.label}.{field.name}: rows in database {using!r} have a value but no blind index "
            "under the current or a previous index key, so this lookup would miss them. Run "
            f"`manage.py kms_fields_reindex {field.model._meta.label} --database {using}`; "
            "`kms_fields_reindex --check` counts them."
        )
    with _complete_lock:
        _complete[slot] = now + conf.get_keyring(field.keyring).index_root_max_age


def forget_completeness() -> None:
    with _complete_lock:
        _complete.clear()


# --- UPDATE and INSERT statements ---------------------------------------------------------------------

_UPDATE_AS_SQL_CODE = SQLUpdateCompiler.as_sql.__code__
# get_db_prep_save <- (a subclass's override) <- prepare_value <- (a comprehension, before 3.12) <- as_sql
_FRAMES_SEARCHED = 5


def keep_index_in_step(field: EncryptedField, value: Any, frame: Any) -> None:
    """When a statement writes ``field`` but not its companion, make it write the companion too.

    ``frame`` is the caller of ``get_db_prep_save``. ``QuerySet.update``, ``bulk_update`` and
    ``save(update_fields=[...])`` (also the one Django makes for an instance loaded with ``only()``)
    compile through ``SQLUpdateCompiler.as_sql``, which prepares each value of ``query.values`` in turn:
    the companion's entry, appended here, is prepared after it. ``bulk_create(update_conflicts=True,
    update_fields=[field])`` prepares every row's values (the companion's included) before it builds
    ``ON CONFLICT ... DO UPDATE``: the companion joins ``update_fields`` here.
    """
    for _ in range(_FRAMES_SEARCHED):
        if frame is None:
            return
        compiler = frame.f_locals.get("self")
        if frame.f_code is _UPDATE_AS_SQL_CODE and isinstance(compiler, SQLUpdateCompiler):
            _add_to_update(field, value, compiler.query)
            return
        if isinstance(compiler, SQLInsertCompiler):
            _add_to_conflict_update(field, compiler.query)
            return
        frame = frame.f_back


def _add_to_update(field: EncryptedField, value: Any, query: Any) -> None:
    companion = companion_of(field)
    targets = [target for target, _, _ in query.values]
    if companion in targets or field not in targets:
        return
    if isinstance(value, Col):
        return  # update(field=F("field")): the value, so its index, does not change
    query.values.append((companion, field.model._meta.concrete_model, _companion_expression(field, companion, value)))


def _add_to_conflict_update(field: EncryptedField, query: Any) -> None:
    update_fields = getattr(query, "update_fields", None)
    if update_fields and field in update_fields:
        companion = companion_of(field)
        if companion not in update_fields:
            update_fields.append(companion)


@sensitive_variables("value", "index")
def _companion_expression(field: EncryptedField, companion: BlindIndexField, value: Any) -> Any:
    if isinstance(value, Col):
        # The row's own value (Case(..., default=F("field"))): its own index.
        return Col(value.alias, companion)
    if isinstance(value, Cast):
        inner = _companion_expression(field, companion, value.source_expressions[0])
        return Cast(inner, output_field=companion)
    if isinstance(value, Case):
        cases = [When(case.condition, then=_companion_expression(field, companion, case.result)) for case in value.cases]
        return Case(*cases, default=_companion_expression(field, companion, value.default), output_field=companion)
    if isinstance(value, Value):
        value = value.value
    index = None if value is None else field.blind_index(value)
    return Value(index, output_field=companion)

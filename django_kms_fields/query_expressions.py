"""What in a query carries ciphertext, and what an expression may do with it; part of ``queries``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldError
from django.db.models import Count
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import (
    Case,
    Col,
    ExpressionList,
    F,
    OrderBy,
    OrderByList,
    OuterRef,
    Ref,
    ResolvedOuterRef,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.lookups import IsNull, Lookup
from django.db.models.options import Options
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import UpdateQuery

from .exceptions import EncryptedQueryError
from .lookups import lookup_refusal

if TYPE_CHECKING:
    from .fields import EncryptedField


__all__ = [
    "NEVER_EQUAL",
    "ciphertext_of",
    "field_named",
    "column_of",
    "label",
    "refusal",
    "ordering_refusal",
    "grouping_refusal",
    "check_tree",
    "check_update_values",
    "is_encrypted",
]

NEVER_EQUAL = "Each value is encrypted with its own data key and nonce, so equal values never have equal ciphertexts"


# -- what carries ciphertext ----------------------------------------------------------------------


def is_encrypted(field: Any) -> bool:
    return isinstance(field, _encrypted_field_class())


@functools.cache
def _encrypted_field_class() -> type[EncryptedField]:
    from .fields import EncryptedField  # fields imports this module

    return EncryptedField


def ciphertext_of(node: Any, query: Query, opts: Options | None) -> EncryptedField | None:
    """The encrypted field whose ciphertext ``node`` stands for in SQL, or ``None``."""
    if isinstance(node, F):
        if isinstance(node, (OuterRef, ResolvedOuterRef)):
            return None  # names a column of the outer query, checked there
        return field_named(node.name, query, opts)
    try:
        output_field = node.output_field
    except (FieldError, AttributeError):  # an expression whose type Django cannot (yet) tell
        return None
    return output_field if is_encrypted(output_field) else None


def field_named(name: str, query: Query, opts: Options | None) -> EncryptedField | None:
    """The encrypted field that ``name`` (an annotation, or a field path from ``opts``) reads, or ``None``."""
    if opts is query.get_meta():
        annotation = query.annotations.get(name, query.annotations.get(name.split(LOOKUP_SEP, 1)[0]))
        if annotation is not None:
            return ciphertext_of(annotation, query, opts)
    final_field = _final_field(name, query, opts)
    return final_field if is_encrypted(final_field) else None


def _final_field(name: str, query: Query, opts: Options | None) -> Any:
    try:
        return query.names_to_path(name.split(LOOKUP_SEP), opts)[1]
    except FieldError:  # not a field path (an extra() name...): Django reports it if it must
        return None


def column_of(expression: Any) -> Col | None:
    while isinstance(expression, Ref):
        expression = expression.source
    return expression if isinstance(expression, Col) else None


def _sources(node: Any) -> list[Any]:
    get_source_expressions = getattr(node, "get_source_expressions", None)
    if get_source_expressions is None:
        return []
    return [source for source in get_source_expressions() if source is not None]


def label(field: EncryptedField) -> str:
    return f"{field.model._meta.label}.{field.name}"


def refusal(field: EncryptedField, what: str, why: str, instead: str) -> EncryptedQueryError:
    return EncryptedQueryError(
        f"{label(field)} is encrypted, so the database only has its ciphertext: {what}. {why}. {instead}"
    )


# -- expressions: functions, aggregates, comparisons ----------------------------------------------


def check_tree(node: Any, query: Query, opts: Options | None, ancestors: tuple[Any, ...] = ()) -> None:
    """Every place in ``node`` where ciphertext is handed to something other than the SELECT list."""
    for child in _sources(node):
        # A subquery is checked when it is compiled; a Ref's source where it is defined.
        if not isinstance(child, (Query, Ref)):
            check_tree(child, query, opts, (*ancestors, node))
        field = ciphertext_of(child, query, opts)
        if field is not None:
            _check_holder(field, node, child, ancestors, query, opts)


def _check_holder(
    field: EncryptedField, parent: Any, child: Any, ancestors: tuple[Any, ...], query: Query, opts: Options | None
) -> None:
    if isinstance(parent, IsNull) and child is parent.lhs:
        return
    if isinstance(parent, (Case, When)) and child is not getattr(parent, "condition", None):
        case = parent if isinstance(parent, Case) else next(iter(ancestors[-1:]), None)
        if isinstance(case, Case) and _returns_only(case, field, query, opts):
            return  # Case(When(..., then="ssn")): this field's values or NULL, decrypted as such
        raise refusal(
            field,
            "Case() would return it among other values",
            "They would all be read as its values: wrong values, or a DecryptionError",
            "Return one encrypted field (or None) from every branch, or choose in Python.",
        )
    if isinstance(parent, Subquery) and isinstance(child, Query):
        return  # the subquery's value is the column it selects; what is done with it is checked above
    if isinstance(parent, Count) and child is parent.get_source_expressions()[0]:
        if not parent.distinct:
            return  # counts the rows where it is not NULL: right whatever the bytes are
        raise refusal(
            field,
            "Count(distinct=True) over it would count distinct ciphertexts",
            NEVER_EQUAL,
            "Count the distinct values in Python.",
        )
    if isinstance(parent, Lookup):
        if child is parent.lhs and getattr(parent, "compares_blind_index", False):
            return  # compiled as a comparison of the field's blind-index column, never of the ciphertext
        if child is parent.lhs:
            raise lookup_refusal(field, parent.lookup_name)
        raise refusal(
            field,
            f"the '{parent.lookup_name}' lookup would compare another value with its ciphertext",
            NEVER_EQUAL,
            "Compare in Python after loading the values.",
        )
    if isinstance(parent, (OrderBy, OrderByList)):  # ORDER BY, also of a window or an aggregate
        raise ordering_refusal(field)
    if isinstance(parent, ExpressionList) and isinstance(window := next(iter(ancestors[-1:]), None), Window):
        if parent is window.partition_by:
            raise grouping_refusal(field)
    # ExpressionList (a function's argument list) only groups arguments.
    holder = next((each for each in (parent, *reversed(ancestors)) if not isinstance(each, ExpressionList)), parent)
    raise refusal(
        field,
        f"{type(holder).__name__}() over it would compute on ciphertext, not on its values",
        "The answer would be wrong, or a database error",
        "Load the values and compute in Python.",
    )


def _returns_only(case: Case, field: EncryptedField, query: Query, opts: Options | None) -> bool:
    results = [when.result for when in case.cases if isinstance(when, When)] + [case.default]
    return all(
        (isinstance(result, Value) and result.value is None) or ciphertext_of(result, query, opts) is field
        for result in results
    )


def check_update_values(query: UpdateQuery, opts: Options | None) -> None:
    for target, _model, value in query.values:
        if not hasattr(value, "resolve_expression"):
            continue
        check_tree(value, query, opts)
        carried = ciphertext_of(value, query, opts)
        # An encrypted target refuses what it is given itself (EncryptedField.get_placeholder).
        if carried is not None and not is_encrypted(target):
            raise refusal(
                carried,
                f"update() would write its ciphertext into {target.model._meta.label}.{target.name}, "
                "which is not encrypted",
                "Nothing could read the value back",
                "Load the values and assign them in Python (bulk_update() encrypts or decrypts as it should).",
            )


def ordering_refusal(field: EncryptedField) -> EncryptedQueryError:
    return refusal(
        field,
        "ordering by it would sort by ciphertext",
        "The order of ciphertexts says nothing about the order of the values",
        "Order by another column, or sort the loaded values in Python.",
    )


def grouping_refusal(field: EncryptedField) -> EncryptedQueryError:
    return refusal(
        field,
        "grouping by it (values() before annotate(), a window's partition_by) would make a group of every row",
        NEVER_EQUAL,
        "Group by another column, or group the loaded values in Python.",
    )

"""Queries that would sort, group, deduplicate, compare or compute on ciphertext are refused.

Lookups are refused as they are built (``lookups.py``). What else a query does with a column (ORDER BY,
GROUP BY, DISTINCT, a function or an aggregate over it, a set operation) is only known once the query
is complete, so it is checked when the query is compiled, before any SQL is sent:

- Every column of an encrypted field is an ``EncryptedCol``. The first time a compiler compiles one,
  ``check_compilation`` checks the query being compiled, and every query that encloses it (a query
  that reads this one as a subquery, a set operation or an aggregation over it), once per compiler.
- ``check_query`` reads the query's own resolved parts (annotations, WHERE, GROUP BY, the combined
  queries) and its ordering and DISTINCT ON names, and raises ``EncryptedQueryError`` naming the field.

What is allowed: selecting the column (the value is decrypted), ``isnull``, ``Count`` of it without
``distinct``, and DISTINCT, GROUP BY or a set operation where every encrypted column comes with the
primary key of its row, so that rows equal in plaintext are equal in ciphertext. See docs/design.md.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldError
from django.db.backends.base.base import BaseDatabaseWrapper
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
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import AggregateQuery, DeleteQuery, InsertQuery, UpdateQuery

from .exceptions import EncryptedQueryError
from .lookups import lookup_refusal

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["EncryptedCol", "check_compilation", "check_query"]

NEVER_EQUAL = "Each value is encrypted with its own data key and nonce, so equal values never have equal ciphertexts"


class EncryptedCol(Col):
    """The column of an encrypted field in a query: compiling it checks the query first."""

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, Any]:
        check_compilation(compiler)
        return super().as_sql(compiler, connection)


# Compiler -> the query it was last checked with (a compiler may be handed a new query, as the parts
# of a set operation are). Weak, so that nothing outlives the compilation.
_checked: weakref.WeakKeyDictionary[SQLCompiler, Query] = weakref.WeakKeyDictionary()

# Far more than any nesting of subqueries needs; a bound, so that a deep stack costs nothing more.
_FRAMES_SEARCHED = 400


def check_compilation(compiler: SQLCompiler) -> None:
    """Checks the query ``compiler`` compiles, and every query being compiled around it, once each."""
    if _checked.get(compiler) is compiler.query:
        return
    for each in (compiler, *_enclosing_compilers(compiler)):
        if _checked.get(each) is not each.query:
            check_query(each.query)
            _checked[each] = each.query


def _enclosing_compilers(compiler: SQLCompiler) -> Iterator[SQLCompiler]:
    # A query compiled inside another (a subquery, a part of a union, the inner query of an
    # aggregation) cannot tell what the outer query does with its columns, and the outer query may
    # compile no encrypted column of its own: its compiler is found on the stack, in the as_sql()
    # frame of an SQLCompiler.
    frame = sys._getframe(2)
    for _ in range(_FRAMES_SEARCHED):
        if frame is None:
            return
        if frame.f_code.co_name == "as_sql":
            owner = frame.f_locals.get("self")
            if isinstance(owner, SQLCompiler) and owner is not compiler:
                yield owner
        frame = frame.f_back


def check_query(query: Query) -> None:
    """Raises ``EncryptedQueryError`` if ``query`` would sort, group, deduplicate, compare or compute on
    ciphertext. Subqueries are not entered: each is checked when it is compiled."""
    opts = query.get_meta()
    if isinstance(query, AggregateQuery):  # aggregate() over a subquery: only its aggregates are its own
        for expression in query.annotation_select.values():
            _check_tree(expression, query, opts)
        return
    _check_tree(query.where, query, opts)
    if isinstance(query, UpdateQuery):
        _check_update_values(query, opts)
    if isinstance(query, (UpdateQuery, DeleteQuery, InsertQuery)):
        return
    for expression in query.annotations.values():
        _check_tree(expression, query, opts)
    if isinstance(query.group_by, tuple):
        for expression in query.group_by:
            _check_tree(expression, query, opts)
    _check_ordering(query, opts)
    if query.distinct:
        if query.distinct_fields:
            _check_distinct_on(query, opts)
        else:
            _check_rows_identified(query, opts, "distinct() compares whole rows, ciphertexts included")
    if query.group_by is not None:
        _check_grouping(query, opts)
    if query.combinator:
        _check_combination(query)


# -- what carries ciphertext ----------------------------------------------------------------------


def _is_encrypted(field: Any) -> bool:
    return isinstance(field, _encrypted_field_class())


@functools.cache
def _encrypted_field_class() -> type[EncryptedField]:
    from .fields import EncryptedField  # fields imports this module

    return EncryptedField


def _ciphertext_of(node: Any, query: Query, opts: Options | None) -> EncryptedField | None:
    """The encrypted field whose ciphertext ``node`` stands for in SQL, or ``None``."""
    if isinstance(node, F):
        if isinstance(node, (OuterRef, ResolvedOuterRef)):
            return None  # names a column of the outer query, checked there
        return _field_named(node.name, query, opts)
    try:
        output_field = node.output_field
    except (FieldError, AttributeError):  # an expression whose type Django cannot (yet) tell
        return None
    return output_field if _is_encrypted(output_field) else None


def _field_named(name: str, query: Query, opts: Options | None) -> EncryptedField | None:
    """The encrypted field that ``name`` (an annotation, or a field path from ``opts``) reads, or ``None``."""
    if opts is query.get_meta():
        annotation = query.annotations.get(name, query.annotations.get(name.split(LOOKUP_SEP, 1)[0]))
        if annotation is not None:
            return _ciphertext_of(annotation, query, opts)
    final_field = _final_field(name, query, opts)
    return final_field if _is_encrypted(final_field) else None


def _final_field(name: str, query: Query, opts: Options | None) -> Any:
    try:
        return query.names_to_path(name.split(LOOKUP_SEP), opts)[1]
    except FieldError:  # not a field path (an extra() name...): Django reports it if it must
        return None


def _column_of(expression: Any) -> Col | None:
    while isinstance(expression, Ref):
        expression = expression.source
    return expression if isinstance(expression, Col) else None


def _sources(node: Any) -> list[Any]:
    get_source_expressions = getattr(node, "get_source_expressions", None)
    if get_source_expressions is None:
        return []
    return [source for source in get_source_expressions() if source is not None]


def _label(field: EncryptedField) -> str:
    return f"{field.model._meta.label}.{field.name}"


def _refusal(field: EncryptedField, what: str, why: str, instead: str) -> EncryptedQueryError:
    return EncryptedQueryError(
        f"{_label(field)} is encrypted, so the database only has its ciphertext: {what}. {why}. {instead}"
    )


# -- expressions: functions, aggregates, comparisons ----------------------------------------------


def _check_tree(node: Any, query: Query, opts: Options | None, ancestors: tuple[Any, ...] = ()) -> None:
    """Every place in ``node`` where ciphertext is handed to something other than the SELECT list."""
    for child in _sources(node):
        # A subquery is checked when it is compiled; a Ref's source where it is defined.
        if not isinstance(child, (Query, Ref)):
            _check_tree(child, query, opts, (*ancestors, node))
        field = _ciphertext_of(child, query, opts)
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
        raise _refusal(
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
        raise _refusal(
            field,
            "Count(distinct=True) over it would count distinct ciphertexts",
            NEVER_EQUAL,
            "Count the distinct values in Python, or count distinct values of a keyed hash (HMAC) column.",
        )
    if isinstance(parent, Lookup):
        if child is parent.lhs:
            raise lookup_refusal(field, parent.lookup_name)
        raise _refusal(
            field,
            f"the '{parent.lookup_name}' lookup would compare another value with its ciphertext",
            NEVER_EQUAL,
            "Compare in Python after loading the values, or compare a keyed hash (HMAC) column.",
        )
    if isinstance(parent, (OrderBy, OrderByList)):  # ORDER BY, also of a window or an aggregate
        raise _ordering_refusal(field)
    if isinstance(parent, ExpressionList) and isinstance(window := next(iter(ancestors[-1:]), None), Window):
        if parent is window.partition_by:
            raise _grouping_refusal(field)
    # ExpressionList (a function's argument list) only groups arguments.
    holder = next((each for each in (parent, *reversed(ancestors)) if not isinstance(each, ExpressionList)), parent)
    raise _refusal(
        field,
        f"{type(holder).__name__}() over it would compute on ciphertext, not on its values",
        "The answer would be wrong, or a database error",
        "Load the values and compute in Python.",
    )


def _returns_only(case: Case, field: EncryptedField, query: Query, opts: Options | None) -> bool:
    results = [when.result for when in case.cases if isinstance(when, When)] + [case.default]
    return all(
        (isinstance(result, Value) and result.value is None) or _ciphertext_of(result, query, opts) is field
        for result in results
    )


def _check_update_values(query: UpdateQuery, opts: Options | None) -> None:
    for target, _model, value in query.values:
        if not hasattr(value, "resolve_expression"):
            continue
        _check_tree(value, query, opts)
        carried = _ciphertext_of(value, query, opts)
        # An encrypted target refuses what it is given itself (EncryptedField.get_placeholder).
        if carried is not None and not _is_encrypted(target):
            raise _refusal(
                carried,
                f"update() would write its ciphertext into {target.model._meta.label}.{target.name}, "
                "which is not encrypted",
                "Nothing could read the value back",
                "Load the values and assign them in Python (bulk_update() encrypts or decrypts as it should).",
            )


# -- ORDER BY ---------------------------------------------------------------------------------------


def _ordering_refusal(field: EncryptedField) -> EncryptedQueryError:
    return _refusal(
        field,
        "ordering by it would sort by ciphertext",
        "The order of ciphertexts says nothing about the order of the values",
        "Order by another column, or sort the loaded values in Python.",
    )


def _check_ordering(query: Query, opts: Options | None) -> None:
    # The ordering the compiler uses (SQLCompiler._order_by_pairs), from the same attributes.
    if query.extra_order_by:
        ordering = query.extra_order_by
    elif query.order_by or not query.default_ordering:
        ordering = query.order_by
    elif opts is not None and query.group_by is None:  # Meta.ordering, which a GROUP BY query drops
        ordering = opts.ordering
    else:
        ordering = ()
    for item in ordering:
        _check_ordering_item(item, query, opts, depth=0)


def _check_ordering_item(item: Any, query: Query, opts: Options | None, depth: int) -> None:
    if isinstance(item, str):
        name = item.removeprefix("-")
        if item == "?" or "." in name or (query.extra and name in query.extra):
            return  # random, or raw SQL of extra()
        field = _field_named(name, query, opts)
        if field is not None:
            raise _ordering_refusal(field)
        _check_related_ordering(name, query, opts, depth)
        return
    if hasattr(item, "resolve_expression"):
        field = _ciphertext_of(item.expression if isinstance(item, OrderBy) else item, query, opts)
        if field is not None:
            raise _ordering_refusal(field)
        _check_tree(item, query, opts)


def _check_related_ordering(name: str, query: Query, opts: Options | None, depth: int) -> None:
    # Ordering by a relation orders by the related model's Meta.ordering (SQLCompiler.find_ordering_name).
    if depth > 10 or (opts is query.get_meta() and name.split(LOOKUP_SEP, 1)[0] in query.annotations):
        return
    try:
        path, final_field, _targets, rest = query.names_to_path(name.split(LOOKUP_SEP), opts)
    except FieldError:
        return
    if rest or not path or not final_field.is_relation or name == "pk":
        return
    if getattr(final_field, "attname", None) == name.rsplit(LOOKUP_SEP, 1)[-1]:
        return  # "patient_id": the column itself
    related = path[-1].to_opts
    for item in related.ordering:
        _check_ordering_item(item, query, related, depth + 1)


# -- DISTINCT, GROUP BY, set operations ---------------------------------------------------------------


def _check_distinct_on(query: Query, opts: Options | None) -> None:
    for name in query.distinct_fields:
        field = _field_named(name, query, opts)
        if field is not None:
            raise _refusal(
                field,
                f"distinct({name!r}) would compare ciphertexts",
                NEVER_EQUAL,
                "Deduplicate the loaded values in Python, or use a keyed hash (HMAC) column.",
            )


class _Identified:
    """The rows that selected (or grouped) columns identify: those whose primary key is among them, and
    those a selected foreign key column points to."""

    def __init__(self, query: Query, columns: Iterable[Col | None]) -> None:
        self.query = query
        columns = [column for column in columns if column is not None]
        self.aliases = {column.alias for column in columns if column.target.primary_key}
        if query.default_cols:  # the model's own columns, its primary key among them
            self.aliases.add(query.base_table)
        self.columns = {(column.alias, column.target) for column in columns}

    def __contains__(self, alias: str) -> bool:
        """Whether the row of table ``alias`` is identified, by its own key or by the key of a row it is
        joined from through a foreign key or a one-to-one relation (one row for each such row)."""
        for _ in range(len(self.query.alias_map) + 1):
            if alias in self.aliases:
                return True
            join = self.query.alias_map.get(alias)
            parent = getattr(join, "parent_alias", None)
            join_field = getattr(join, "join_field", None)
            if parent is None:
                return False
            if (parent, join_field) in self.columns:
                return True
            if not (getattr(join_field, "many_to_one", False) or getattr(join_field, "one_to_one", False)):
                return False
            alias = parent
        return False


def _check_rows_identified(query: Query, opts: Options | None, why: str) -> None:
    """Rows compared as a whole are right only if equal values are equal ciphertexts, that is if each
    encrypted column comes with the primary key of its row (then two rows with the same ciphertext are
    the same row, and two different rows differ by their key anyway)."""
    expressions = [*query.select, *query.annotation_select.values()]
    identified = _Identified(query, map(_column_of, expressions))
    for expression in expressions:
        field = _ciphertext_of(expression, query, opts)
        if field is None:
            continue
        column = _column_of(expression)
        if column is None or column.alias not in identified:
            raise _refusal(
                field,
                why,
                NEVER_EQUAL,
                "Select the primary key too, or deduplicate the loaded values in Python.",
            )


def _check_grouping(query: Query, opts: Options | None) -> None:
    # What the compiler groups by (SQLCompiler.get_group_by): the GROUP BY set by values(), what is
    # selected, and the grouping columns of the annotations.
    grouped = []
    if isinstance(query.group_by, tuple):
        grouped += [expression for expression in query.group_by if not isinstance(expression, str)]
    grouped += query.select
    for annotation in query.annotation_select.values():
        grouped += annotation.get_group_by_cols()
    identified = _Identified(query, map(_column_of, grouped))
    for expression in grouped:
        field = _ciphertext_of(expression, query, opts)
        if field is None:
            continue
        column = _column_of(expression)
        if column is None or column.alias not in identified:
            raise _grouping_refusal(field)


def _grouping_refusal(field: EncryptedField) -> EncryptedQueryError:
    return _refusal(
        field,
        "grouping by it (values() before annotate(), a window's partition_by) would make a group of every row",
        NEVER_EQUAL,
        "Group by another column, group the loaded values in Python, or group by a keyed hash (HMAC) column.",
    )


def _check_combination(query: Query) -> None:
    parts = [_as_compiled(part, query) for part in _leaf_queries(query)]
    layouts = [_selected_fields(part) for part in parts]
    if not any(field is not None for layout in layouts for field in layout):
        return
    operation = f"{query.combinator}()"
    for layout in layouts[1:]:
        for position, (first, other) in enumerate(zip(layouts[0], layout), start=1):
            if first is not other:
                encrypted = first if first is not None else other
                where = f"the column of {_label(first)}" if first is not None else "a column that is not encrypted"
                what = f"ciphertext of {_label(other)}" if other is not None else "values that are not encrypted"
                raise _refusal(
                    encrypted,
                    f"{operation} would put {what} in {where} (column {position})",
                    "They would be read as the first query's column: wrong values, or a DecryptionError for the "
                    "wrong field",
                    "Select the same fields in the same order in every query.",
                )
    if query.combinator == "union" and query.combinator_all:
        return  # keeps every row, compares nothing
    why = f"{operation} compares whole rows, ciphertexts included"
    for part in parts:
        _check_rows_identified(part, part.get_meta(), why)


def _leaf_queries(query: Query) -> list[Query]:
    return [leaf for part in query.combined_queries for leaf in (_leaf_queries(part) if part.combinator else [part])]


def _as_compiled(part: Query, combined: Query) -> Query:
    """``part`` as the compiler compiles it within ``combined``: with the combined query's values(), if
    it has none of its own (SQLCompiler._get_combinator_part_sql)."""
    if combined.selected is not None and part.selected is None:
        part = part.clone()
        part.set_values(combined.selected)
    return part


def _selected_fields(part: Query) -> list[EncryptedField | None]:
    """For each column ``part`` selects, in order, the encrypted field it reads (or ``None``), as
    SQLCompiler.get_select() would select them."""
    opts = part.get_meta()
    if part.default_cols:
        mask = part.get_select_mask()
        loaded = [field for field in opts.concrete_fields if not mask or field in mask]
        columns = [field if _is_encrypted(field) else None for field in loaded]
    else:
        columns = [_ciphertext_of(column, part, opts) for column in part.select]
    if part.selected is None:
        annotations = [_ciphertext_of(annotation, part, opts) for annotation in part.annotation_select.values()]
        return [*(None for _ in part.extra_select), *columns, *annotations]
    layout = []
    for expression in part.selected.values():
        if isinstance(expression, str):
            layout.append(_ciphertext_of(part.annotations[expression], part, opts))
        elif isinstance(expression, int):
            layout.append(columns[expression])
        else:
            layout.append(_ciphertext_of(expression, part, opts))
    return layout

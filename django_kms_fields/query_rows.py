"""ORDER BY, DISTINCT, GROUP BY and set operations over ciphertext; part of ``queries``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldError
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col, OrderBy
from django.db.models.options import Options
from django.db.models.sql.query import Query

from .query_expressions import (
    NEVER_EQUAL,
    check_tree,
    ciphertext_of,
    column_of,
    field_named,
    grouping_refusal,
    is_encrypted,
    label,
    ordering_refusal,
    refusal,
)

if TYPE_CHECKING:
    from .fields import EncryptedField

__all__ = ["check_ordering", "check_distinct_on", "check_rows_identified", "check_grouping", "check_combination"]


# -- ORDER BY ---------------------------------------------------------------------------------------


def check_ordering(query: Query, opts: Options | None) -> None:
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
        field = field_named(name, query, opts)
        if field is not None:
            raise ordering_refusal(field)
        _check_related_ordering(name, query, opts, depth)
        return
    if hasattr(item, "resolve_expression"):
        field = ciphertext_of(item.expression if isinstance(item, OrderBy) else item, query, opts)
        if field is not None:
            raise ordering_refusal(field)
        check_tree(item, query, opts)


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


def check_distinct_on(query: Query, opts: Options | None) -> None:
    for name in query.distinct_fields:
        field = field_named(name, query, opts)
        if field is not None:
            raise refusal(
                field,
                f"distinct({name!r}) would compare ciphertexts",
                NEVER_EQUAL,
                "Deduplicate the loaded values in Python.",
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


def check_rows_identified(query: Query, opts: Options | None, why: str) -> None:
    """Rows compared as a whole are right only if equal values are equal ciphertexts, that is if each
    encrypted column comes with the primary key of its row (then two rows with the same ciphertext are
    the same row, and two different rows differ by their key anyway)."""
    field = _unidentified_ciphertext([*query.select, *query.annotation_select.values()], query, opts)
    if field is not None:
        raise refusal(field, why, NEVER_EQUAL, "Select the primary key too, or deduplicate the loaded values in Python.")


def check_grouping(query: Query, opts: Options | None) -> None:
    # What the compiler groups by (SQLCompiler.get_group_by): the GROUP BY set by values(), what is
    # selected, and the grouping columns of the annotations.
    grouped = []
    if isinstance(query.group_by, tuple):
        grouped += [expression for expression in query.group_by if not isinstance(expression, str)]
    grouped += query.select
    for annotation in query.annotation_select.values():
        grouped += annotation.get_group_by_cols()
    field = _unidentified_ciphertext(grouped, query, opts)
    if field is not None:
        raise grouping_refusal(field)


def _unidentified_ciphertext(expressions: list[Any], query: Query, opts: Options | None) -> EncryptedField | None:
    """The first encrypted field among ``expressions`` whose column comes without its row's primary key."""
    identified = _Identified(query, map(column_of, expressions))
    for expression in expressions:
        field = ciphertext_of(expression, query, opts)
        if field is None:
            continue
        column = column_of(expression)
        if column is None or column.alias not in identified:
            return field
    return None


def check_combination(query: Query) -> None:
    parts = [_as_compiled(part, query) for part in _leaf_queries(query)]
    layouts = [_selected_fields(part) for part in parts]
    if not any(field is not None for layout in layouts for field in layout):
        return
    operation = f"{query.combinator}()"
    for layout in layouts[1:]:
        for position, (first, other) in enumerate(zip(layouts[0], layout), start=1):
            if first is not other:
                encrypted = first if first is not None else other
                where = f"the column of {label(first)}" if first is not None else "a column that is not encrypted"
                what = f"ciphertext of {label(other)}" if other is not None else "values that are not encrypted"
                raise refusal(
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
        check_rows_identified(part, part.get_meta(), why)


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
        columns = [field if is_encrypted(field) else None for field in loaded]
    else:
        columns = [ciphertext_of(column, part, opts) for column in part.select]
    if part.selected is None:
        annotations = [ciphertext_of(annotation, part, opts) for annotation in part.annotation_select.values()]
        return [*(None for _ in part.extra_select), *columns, *annotations]
    layout = []
    for expression in part.selected.values():
        if isinstance(expression, str):
            layout.append(ciphertext_of(part.annotations[expression], part, opts))
        elif isinstance(expression, int):
            layout.append(columns[expression])
        else:
            layout.append(ciphertext_of(expression, part, opts))
    return layout

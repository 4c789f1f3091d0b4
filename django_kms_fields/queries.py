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

import sys
import weakref
from collections.abc import Iterator
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Col
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import AggregateQuery, DeleteQuery, InsertQuery, UpdateQuery

from . import query_expressions, query_rows

__all__ = ["EncryptedCol", "check_compilation", "check_query"]


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
            query_expressions.check_tree(expression, query, opts)
        return
    query_expressions.check_tree(query.where, query, opts)
    if isinstance(query, UpdateQuery):
        query_expressions.check_update_values(query, opts)
    if isinstance(query, (UpdateQuery, DeleteQuery, InsertQuery)):
        return
    for expression in query.annotations.values():
        query_expressions.check_tree(expression, query, opts)
    if isinstance(query.group_by, tuple):
        for expression in query.group_by:
            query_expressions.check_tree(expression, query, opts)
    query_rows.check_ordering(query, opts)
    if query.distinct:
        if query.distinct_fields:
            query_rows.check_distinct_on(query, opts)
        else:
            query_rows.check_rows_identified(query, opts, "distinct() compares whole rows, ciphertexts included")
    if query.group_by is not None:
        query_rows.check_grouping(query, opts)
    if query.combinator:
        query_rows.check_combination(query)

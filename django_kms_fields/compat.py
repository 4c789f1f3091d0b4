"""Differences between the Django lines this app supports (5.2 LTS, 6.0, 6.1), in one place.

Django 6.1 replaced ``Field.get_placeholder()`` with ``get_placeholder_sql()`` (returning SQL and
parameters) and gave ``DatabaseOperations.binary_placeholder_sql()`` a required ``compiler`` argument;
it deprecates the old field hook (``RemovedInDjango2028Warning``). 5.2 and 6.0 know only the old API.
When 6.0 support ends, keep the second branch of each ``if`` and inline it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import django
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["PLACEHOLDER_SQL_API", "binary_placeholder", "BinaryPlaceholderHook"]

# Django 6.1 and later: get_placeholder_sql() and binary_placeholder_sql(value, compiler).
PLACEHOLDER_SQL_API = django.VERSION >= (6, 1)


def binary_placeholder(connection: BaseDatabaseWrapper, value: bytes | None) -> str:
    """The backend's SQL placeholder for one bytes parameter (``%s``, or ``_binary %s`` on MySQL)."""
    if PLACEHOLDER_SQL_API:
        # The compiler is only used to compile expressions; a plain value needs none.
        sql, _params = connection.ops.binary_placeholder_sql(value, None)
        return sql
    return connection.ops.binary_placeholder_sql(value)


class BinaryPlaceholderHook:
    """The field's placeholder hook for a binary column, calling ``check_placeholder_value`` first.

    ``QuerySet.update()`` hands resolved expressions to this hook, and nowhere else before compiling
    them, so this is where a field refuses an expression that would write something it must not.
    """

    check_placeholder_value: Callable[[Any], None]

    if PLACEHOLDER_SQL_API:

        def get_placeholder_sql(
            self, value: Any, compiler: Any, connection: BaseDatabaseWrapper
        ) -> tuple[str, Sequence[Any]]:
            self.check_placeholder_value(value)
            return connection.ops.binary_placeholder_sql(value, compiler)

    else:

        def get_placeholder(self, value: Any, compiler: Any, connection: BaseDatabaseWrapper) -> str:
            self.check_placeholder_value(value)
            return connection.ops.binary_placeholder_sql(value)

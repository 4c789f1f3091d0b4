"""Batched compare-and-swap rewrites of one column, the machinery under ``rewrite``.

Rows are read past the ORM (which would decrypt), in primary-key order after the last pk of the
previous batch, outside any transaction; a batch's new values are then written in one short
transaction of ``UPDATE ... WHERE pk = %s AND column = <what was read>``, so a row the application
changed in between is left alone and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connections, models, transaction

from .compat import binary_placeholder

__all__ = ["RewriteStats", "Progress", "Swap", "batches", "count", "land"]

_INTEGER_PKS = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}


@dataclass
class RewriteStats:
    scanned: int = 0
    rewritten: int = 0
    current: int = 0  # already under the current keys: nothing to do
    changed_meanwhile: int = 0  # the application wrote the row after it was read: left alone
    plaintext: int = 0  # legacy plaintext among the rewritten
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, pk: object, err: Exception) -> None:
        self.failed += 1
        if len(self.failures) < 20:
            self.failures.append(f"pk={pk!r}: {err}")


@dataclass(frozen=True)
class Progress:
    label: str
    done: int
    total: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


def row_filter(
    model: type[models.Model],
    column: str,
    *,
    shard: tuple[int, int] | None,
    only_null: str | None,
    qn: Callable[[str], str],
) -> tuple[str, list[Any]]:
    """The WHERE condition (and its parameters) of the rows a rewrite visits, for counting and reading."""
    condition, params = f"{qn(column)} IS NOT NULL", []
    if only_null is not None:
        condition += f" AND {qn(only_null)} IS NULL"
    if shard is not None:
        if model._meta.pk.get_internal_type() not in _INTEGER_PKS:
            raise ValueError(f"{model._meta.label} has a non-integer primary key; --shard needs an integer one.")
        index, count = shard
        # SQL's % keeps the dividend's sign; adding N once more puts negative keys in a shard too.
        pk_column = qn(model._meta.pk.column)
        condition += f" AND ((({pk_column} %% %s) + %s) %% %s) = %s"
        params = [count, count, count, index]
    return condition, params


def batches(
    model: type[models.Model],
    column: str,
    *,
    using: str,
    batch_size: int,
    shard: tuple[int, int] | None,
    only_null: str | None = None,
    also_read: tuple[str, ...] = (),
) -> Iterator[list[tuple[Any, ...]]]:
    """Yields (pk, stored value, *the also_read columns) batches in primary-key order."""
    connection = connections[using]
    qn = connection.ops.quote_name
    table, pk_column = qn(model._meta.db_table), qn(model._meta.pk.column)
    condition, condition_params = row_filter(model, column, shard=shard, only_null=only_null, qn=qn)
    last_pk = None
    while True:
        after = "" if last_pk is None else f" AND {pk_column} > %s"
        params = condition_params + ([] if last_pk is None else [last_pk])
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join([pk_column, qn(column), *map(qn, also_read)])} FROM {table} WHERE {condition}{after} "
                f"ORDER BY {pk_column} LIMIT {int(batch_size)}",
                params,
            )
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last_pk = rows[-1][0]


def count(model: type[models.Model], column: str, *, using: str, shard: tuple[int, int] | None,
           only_null: str | None = None) -> int:
    connection = connections[using]
    qn = connection.ops.quote_name
    condition, params = row_filter(model, column, shard=shard, only_null=only_null, qn=qn)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {qn(model._meta.db_table)} WHERE {condition}", params)
        return cursor.fetchone()[0]


@dataclass(frozen=True)
class Swap:
    pk: Any
    new: bytes | str
    expected: Any  # what was read; None with expect_null
    expect_null: bool = False
    source_column: str | None = None  # also require this column to still hold source_value
    source_value: Any = None
    plaintext: bool = False  # legacy plaintext being encrypted, for the statistics
    also_set: tuple[tuple[str, Any], ...] = ()  # further (column, text value) pairs written with it


def write_batch(model: type[models.Model], column: str, swaps: list[Swap], *, using: str) -> list[Swap]:
    """Applies compare-and-swap updates in one short transaction; returns the swaps that landed."""
    connection = connections[using]
    qn = connection.ops.quote_name
    binary = connection.Database.Binary
    landed = []
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for swap in swaps:
            guards, params = [], [swap.new if isinstance(swap.new, str) else binary(swap.new), swap.pk]
            if swap.expect_null:
                guards.append(f"{qn(column)} IS NULL")
            elif isinstance(swap.expected, str):
                guards.append(f"{qn(column)} = %s")
                params.append(swap.expected)
            else:
                guards.append(f"{qn(column)} = {binary_placeholder(connection, swap.expected)}")
                params.append(binary(swap.expected))
            if swap.source_column is not None:
                if isinstance(swap.source_value, str):
                    # Byte-exact on MySQL/MariaDB too, whose default collations ignore case.
                    compare = f"BINARY {qn(swap.source_column)}" if connection.vendor == "mysql" else qn(swap.source_column)
                    guards.append(f"{compare} = %s")
                    params.append(swap.source_value)
                else:
                    guards.append(f"{qn(swap.source_column)} = {binary_placeholder(connection, swap.source_value)}")
                    params.append(binary(swap.source_value))
            # A blind index is text; everything else written here is a message.
            new = "%s" if isinstance(swap.new, str) else binary_placeholder(connection, swap.new)
            assignments = [f"{qn(column)} = {new}", *(f"{qn(name)} = %s" for name, _ in swap.also_set)]
            params[1:1] = [value for _, value in swap.also_set]
            cursor.execute(
                f"UPDATE {qn(model._meta.db_table)} SET {', '.join(assignments)} "
                f"WHERE {qn(model._meta.pk.column)} = %s AND " + " AND ".join(guards),
                params,
            )
            if cursor.rowcount == 1:
                landed.append(swap)
    return landed


def land(model: type[models.Model], column: str, swaps: list[Swap], stats: RewriteStats, *, using: str) -> None:
    """Writes a batch's swaps and counts which landed and which lost to a concurrent write.

    A swap that breaks a unique index (a blind index written for a value another row already has: the
    rows were written before the index existed) is a failure of that row alone; the others land.
    """
    if not swaps:
        return
    duplicates = 0
    try:
        landed = write_batch(model, column, swaps, using=using)
    except IntegrityError:
        landed = []
        for swap in swaps:
            try:
                landed += write_batch(model, column, [swap], using=using)
            except IntegrityError:
                duplicates += 1
                stats.fail(swap.pk, UniqueValueError(f"another row of {model._meta.label} already has this value, which must be unique"))
    stats.rewritten += len(landed)
    stats.changed_meanwhile += len(swaps) - len(landed) - duplicates
    stats.plaintext += sum(swap.plaintext for swap in landed)


class UniqueValueError(Exception):
    """A rewritten row would break a unique index."""

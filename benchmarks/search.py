"""Equality search through a blind index, next to the same lookup on an indexed plaintext column.

Run as part of ``python -m benchmarks`` (``--search-rows``, default 100000; 0 skips it). Both tables get
the same values; each lookup is ``Model.objects.get(value=v)`` of a random existing value, the encrypted
value left unread (reading it is a decryption, measured in the main table). The added cost of a saved
value is the blind index (one HMAC-SHA256 with a field key held in memory) against the encryption of
that value, both per value, best of 5 rounds.
"""

from __future__ import annotations

import random
import sys
import time

LOOKUPS = 2000
PER_VALUE = 5000


def best_of(rounds: int, function) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def run(rows: int) -> dict[str, float]:
    from django.db import connection

    from benchmarks.benchapp.models import IndexedPlainRow, SearchableRow
    from django_kms_fields import conf, crypto

    with connection.schema_editor() as editor:
        editor.create_model(IndexedPlainRow)
        editor.create_model(SearchableRow)
    values = [f"{i:08d}-{random.getrandbits(64):016x}" for i in range(rows)]
    print(f"  filling 2 x {rows} rows for the search benchmark ...", file=sys.stderr, flush=True)
    IndexedPlainRow.objects.bulk_create([IndexedPlainRow(value=v) for v in values], batch_size=2000)
    SearchableRow.objects.bulk_create([SearchableRow(value=v) for v in values], batch_size=2000)
    targets = random.Random(7).sample(values, LOOKUPS)
    SearchableRow.objects.get(value=targets[0])  # the completeness check and the root: once per process

    def plain_lookups():
        for value in targets:
            IndexedPlainRow.objects.get(value=value)

    def searchable_lookups():
        for value in targets:
            SearchableRow.objects.get(value=value)

    field = SearchableRow._meta.get_field("value")
    keyring, binding = conf.get_keyring(field.keyring), field.field_binding()
    plaintext = values[0]

    def encryptions():
        for _ in range(PER_VALUE):
            crypto.encrypt(plaintext.encode(), keyring, binding)

    def indexes():
        for _ in range(PER_VALUE):
            field.blind_index(plaintext)

    return {
        "rows": rows,
        "plain lookup": best_of(5, plain_lookups) / LOOKUPS,
        "searchable lookup": best_of(5, searchable_lookups) / LOOKUPS,
        "encrypt one value": best_of(5, encryptions) / PER_VALUE,
        "index one value": best_of(5, indexes) / PER_VALUE,
    }


def report(results: dict[str, float]) -> list[str]:
    lookup_ratio = results["searchable lookup"] / results["plain lookup"]
    index_share = results["index one value"] / results["encrypt one value"]
    us = 1e6
    return [
        "",
        f"## Equality search, one row among {int(results['rows']):,} (best of 5 rounds of {LOOKUPS} lookups)",
        "",
        "| measure | indexed plaintext column | searchable encrypted field | ratio | target | |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| `get(value=v)` | {results['plain lookup'] * us:.0f} us | {results['searchable lookup'] * us:.0f} us | "
        f"{lookup_ratio:.2f}x | <= 2x | {'met' if lookup_ratio <= 2 else 'MISSED'} |",
        f"| added cost per saved value: blind index / encryption | | {results['index one value'] * us:.1f} us / "
        f"{results['encrypt one value'] * us:.1f} us | {index_share:.1%} | < 10% | {'met' if index_share < 0.10 else 'MISSED'} |",
    ]

"""What the driver is given for an encrypted value: ``bytes`` (this app) or the driver's ``Binary``.

    python -m benchmarks.driver_value [--rows 10000] [--rounds 8]

Django's ``BinaryField`` hands the driver ``connection.Database.Binary(value)``, and so did this app's
fields until 2026-12-03. SQLite's ``Binary`` is a ``memoryview``: two objects per value that the garbage
collector tracks, alive until the batch is sent. This times a ``bulk_create`` of ``--rows`` values both
ways, in interleaved rounds in one process (every round from empty caches, the same KMS calls), and
counts the collections of each generation it set off. See docs/design.md, "What the driver is given".
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics

from benchmarks.__main__ import VALUE, positive, start_kms, timed, warm_up


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.driver_value", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=positive, default=10_000)
    parser.add_argument("--rounds", type=positive, default=8)
    args = parser.parse_args()
    local_kms, front, key_arn = start_kms()
    os.environ.update(DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_DATABASE=":memory:",
                      BENCH_KMS_ENDPOINT=front.endpoint, BENCH_KEY_ARN=key_arn)
    import django

    django.setup()
    from django.db import connection

    from benchmarks.benchapp.models import CachedRow
    from django_kms_fields import conf

    with connection.schema_editor() as editor:
        editor.create_model(CachedRow)
    field = CachedRow._meta.get_field("value")
    app_save_hook = type(field).get_db_prep_save

    def wrapped_in_binary(value, connection):
        return connection.Database.Binary(app_save_hook(field, value, connection))

    seconds: dict[str, list[float]] = {"bytes": [], "Binary": []}
    collections: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for mode in seconds:
            conf.reset()
            warm_up(CachedRow)
            CachedRow.objects.all().delete()
            if mode == "Binary":
                field.get_db_prep_save = wrapped_in_binary  # this field only, for this round
            before = [generation["collections"] for generation in gc.get_stats()]
            try:
                seconds[mode].append(timed(lambda: CachedRow.objects.bulk_create(
                    [CachedRow(value=VALUE) for _ in range(args.rows)], batch_size=1000)))
            finally:
                field.__dict__.pop("get_db_prep_save", None)
            # Less the one full collection timed() makes before it starts the clock.
            after = [generation["collections"] for generation in gc.get_stats()]
            collections[mode] = [end - start for start, end in zip(before, after)]
            collections[mode][2] -= 1
    front.stop()
    local_kms.stop()

    print(f"## bulk_create of {args.rows}: the driver given bytes or Binary ({connection.Database.Binary.__name__} "
          f"here), {args.rounds} interleaved rounds\n")
    print("| driver is given | best s | median s | collections in a round (generation 0 / 1 / 2) |")
    print("| --- | --- | --- | --- |")
    for mode, times in seconds.items():
        print(f"| {mode} | {min(times):.3f} | {statistics.median(times):.3f} | {' / '.join(map(str, collections[mode]))} |")


if __name__ == "__main__":
    main()

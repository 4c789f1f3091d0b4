"""A separate process that saves and loads rows from several threads; used by test_threads.py.

Usage: python -m tests.concurrency_worker WORKER_ID THREADS ROWS, with KMS_FIELDS_TEST_DB_NAME naming
the test database and KMS_FIELDS_JSON the KMS_FIELDS setting. Prints one JSON line: rows written and
errors seen.
"""

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    worker, threads, rows = (int(arg) for arg in sys.argv[1:4])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["KMS_FIELDS_TEST_DB_NAME"]
    settings.KMS_FIELDS = json.loads(os.environ["KMS_FIELDS_JSON"])
    import django

    django.setup()
    from django.db import connections

    from tests.testapp.models import Patient

    start = threading.Barrier(threads)

    def work(thread: int) -> tuple[int, list[str]]:
        start.wait(timeout=60)
        written, errors = 0, []
        try:
            for row in range(rows):
                value = f"p{worker}-t{thread}-r{row}"
                try:
                    patient = Patient.objects.create(name=value, ssn=value, xray=value.encode())
                    loaded = Patient.objects.get(pk=patient.pk)
                    if (loaded.ssn, loaded.xray) != (value, value.encode()):
                        errors.append(f"{value}: read back {loaded.ssn!r}")
                    written += 1
                except Exception as err:  # noqa: BLE001 - counted and reported to the test
                    errors.append(f"{value}: {type(err).__name__}: {err}")
        finally:
            connections.close_all()
        return written, errors

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    print(json.dumps({"written": sum(w for w, _ in results), "errors": [e for _, es in results for e in es][:20]}))


if __name__ == "__main__":
    main()

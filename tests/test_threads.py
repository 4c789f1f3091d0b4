"""Many threads, and several processes, saving and loading at once.

Clients are shared between threads; master key providers never are. On PostgreSQL the load is the
full size the reliability issue asks for; on the other backends it is smaller, to keep the suite fast.
"""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from django_kms_fields import conf, crypto
from tests.testapp.models import Patient

THREADS = 8
ROWS_PER_THREAD = 200 if connection.vendor == "postgresql" else 25
PROCESSES = 2
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)
def test_threads_save_and_load_concurrently():
    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[tuple[str, str]]:
        start.wait(timeout=30)
        try:
            seen = []
            for row in range(ROWS_PER_THREAD):
                value = f"worker-{worker}-row-{row}-" + "x" * (row % 40)
                patient = Patient.objects.create(name=f"{worker}/{row}", ssn=value, xray=value.encode())
                loaded = Patient.objects.get(pk=patient.pk)
                seen.append((loaded.ssn, loaded.xray.decode()))
            return seen
        finally:
            connections.close_all()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS), timeout=600))

    for worker, seen in enumerate(results):
        expected = [f"worker-{worker}-row-{row}-" + "x" * (row % 40) for row in range(ROWS_PER_THREAD)]
        assert seen == [(value, value) for value in expected]
    assert Patient.objects.count() == THREADS * ROWS_PER_THREAD
    assert sorted(p.ssn for p in Patient.objects.all()) == sorted(s for seen in results for s, _ in seen)


@pytest.mark.django_db(transaction=True)
def test_processes_with_threads_save_and_load_concurrently():
    env = {
        **os.environ,
        "KMS_FIELDS_TEST_DB_NAME": connection.settings_dict["NAME"],
        "KMS_FIELDS_JSON": json.dumps(django_settings.KMS_FIELDS),
    }
    threads = THREADS // PROCESSES
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrency_worker", str(worker), str(threads), str(ROWS_PER_THREAD)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for worker in range(PROCESSES)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))

    assert [report["errors"] for report in reports] == [[]] * PROCESSES
    assert sum(report["written"] for report in reports) == PROCESSES * threads * ROWS_PER_THREAD
    values = sorted(Patient.objects.values_list("ssn", flat=True))
    assert values == sorted(
        f"p{worker}-t{thread}-r{row}"
        for worker in range(PROCESSES) for thread in range(threads) for row in range(ROWS_PER_THREAD)
    )


@pytest.mark.django_db
def test_threads_encrypt_and_decrypt_concurrently_through_the_field():
    """The field's own save and load hooks, from many threads at once, with no database in between."""
    field = Patient._meta.get_field("ssn")
    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[str]:
        start.wait(timeout=30)
        values = [f"{worker}-{n}" for n in range(25)]
        messages = [field.get_db_prep_save(value, connection) for value in values]
        return [field.from_db_value(message, None, connection) for message in messages]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS), timeout=120))

    assert results == [[f"{worker}-{n}" for n in range(25)] for worker in range(THREADS)]


def test_each_thread_has_its_own_master_key_provider_over_one_shared_data_key_cache():
    """Master key providers are not thread safe, so no two threads may share one; the data-key cache is
    shared, or each thread would make its own KMS calls for the same data keys."""
    keyring = conf.get_keyring("default")
    binding = Patient._meta.get_field("ssn").field_binding()
    records = []

    def build() -> None:
        records.append(crypto._field_crypto(keyring, binding))

    # One after the other, so the second thread finds whatever the first left behind.
    for _ in range(2):
        thread = threading.Thread(target=build)
        thread.start()
        thread.join(timeout=30)

    first, second = records
    assert first.manager.backing_materials_manager.master_key_provider is not (
        second.manager.backing_materials_manager.master_key_provider
    )
    assert first.manager.cache is second.manager.cache

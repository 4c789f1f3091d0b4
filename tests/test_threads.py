"""Many threads saving and loading at once share clients but never a master key provider."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from tests.testapp.models import Patient

THREADS = 8
ROWS_PER_THREAD = 15


@pytest.mark.django_db(transaction=True)
def test_threads_save_and_load_concurrently():
    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[tuple[str, str]]:
        start.wait(timeout=30)
        try:
            seen = []
            for row in range(ROWS_PER_THREAD):
                value = f"worker-{worker}-row-{row}-" + "x" * row
                patient = Patient.objects.create(name=f"{worker}/{row}", ssn=value, xray=value.encode())
                loaded = Patient.objects.get(pk=patient.pk)
                seen.append((loaded.ssn, loaded.xray.decode()))
            return seen
        finally:
            connections.close_all()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS), timeout=120))

    for worker, seen in enumerate(results):
        expected = [f"worker-{worker}-row-{row}-" + "x" * row for row in range(ROWS_PER_THREAD)]
        assert seen == [(value, value) for value in expected]
    assert Patient.objects.count() == THREADS * ROWS_PER_THREAD
    assert sorted(p.ssn for p in Patient.objects.all()) == sorted(s for seen in results for s, _ in seen)


@pytest.mark.django_db
def test_threads_encrypt_and_decrypt_concurrently_through_the_field():
    """On every backend: the field's own save and load hooks, from many threads at once."""
    field = Patient._meta.get_field("ssn")
    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[str]:
        start.wait(timeout=30)
        values = [f"{worker}-{n}" for n in range(ROWS_PER_THREAD)]
        # Each driver wraps bytes its own way (psycopg's Binary keeps them in .obj).
        prepared = [field.get_db_prep_save(value, connection) for value in values]
        messages = [bytes(getattr(message, "obj", message)) for message in prepared]
        return [field.from_db_value(message, None, connection) for message in messages]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS), timeout=120))

    assert results == [[f"{worker}-{n}" for n in range(ROWS_PER_THREAD)] for worker in range(THREADS)]

"""Async code never decrypts on the event loop: ``adecrypt`` decrypts in the ORM's worker thread, and a
sync read of a still-encrypted value on the loop raises ``SynchronousOnlyOperation`` before any KMS call.

Each scenario is a coroutine run with ``async_to_sync``, as Django's own test case runs async tests:
the event loop runs in a thread of its own, and the sync halves of the async ORM (``sync_to_async``,
thread-sensitive) run in the test's thread, on its database connection and in its transaction. KMS
sits behind the loopback front, which holds each Decrypt until a heartbeat task on the loop has ticked
a few times: a decryption that blocked the loop would never be answered from it.
"""

import asyncio
import contextlib

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.exceptions import FieldDoesNotExist, SynchronousOnlyOperation
from django.http import HttpResponse
from django.test import AsyncClient
from django.urls import path

from django_kms_fields import adecrypt
from django_kms_fields.exceptions import DecryptionError
from django_kms_fields.fields import PendingDecryption
from tests.helpers import keyring, secrets_reachable_from, stored, write_raw
from tests.kms import Fault, Gate
from tests.testapp import views
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db

TICK = 0.01  # the heartbeat's period
# KMS sits on each Decrypt until the heartbeat has run this many times since the request arrived, so a
# decryption on the loop (which would block it on the socket) never gets its answer from the loop.
TICKS_PER_ANSWER = 5
# A Decrypt the heartbeat never lets through is answered after this long, so a broken test ends with
# a clear count instead of a read timeout; below READ_TIMEOUT.
GATE_TIMEOUT = 4

SSN = "078-05-1120"


@pytest.fixture
def held_kms(settings, keys, front):
    """Both keyrings through the front, each Decrypt held at a gate, no data-key caching: a KMS call per value."""
    settings.KMS_FIELDS = {
        "default": keyring([keys.first], front.endpoint, CACHE=None, READ_TIMEOUT=10),
        "archive": keyring(
            [keys.archive], front.endpoint, CACHE=None, READ_TIMEOUT=10, ENCRYPTION_CONTEXT={"purpose": "archive"}
        ),
    }
    gate = Gate(timeout=GATE_TIMEOUT)
    front.set_fault(Fault(kind="pass", operations=("Decrypt",), gate=gate))
    return gate


class Heartbeat:
    """A task on the event loop that ticks every TICK seconds while open, and lets each Decrypt held at
    the gate through once it has ticked TICKS_PER_ANSWER times while the request waited."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def __aenter__(self) -> "Heartbeat":
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)  # the first tick, before the work under watch starts
        return self

    async def _beat(self) -> None:
        ticks_while_waiting = 0
        while True:
            if self.gate.waiting:
                ticks_while_waiting += 1
                if ticks_while_waiting == TICKS_PER_ANSWER:
                    self.gate.let_one_through()
                    ticks_while_waiting = 0
            await asyncio.sleep(TICK)

    async def __aexit__(self, *exc_info: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def decrypts(kms_calls):
    return [call for call in kms_calls if call["operation"] == "Decrypt"]


def assert_loop_kept_running(gate, answers):
    # Every Decrypt was answered because the loop ticked while KMS sat on it; none waited out the gate.
    assert (gate.let_through, gate.timed_out) == (answers, 0), "the event loop stopped while KMS was being asked"


# --- the event loop keeps running -------------------------------------------------------------------


def test_adecrypt_decrypts_an_instance_from_aget_in_a_worker_thread_while_the_loop_keeps_ticking(held_kms, kms_calls):
    patient = Patient.objects.create(name="a", ssn=SSN, notes="allergic to penicillin", xray=b"\x89PNG")
    kms_calls.clear()

    async def scenario():
        loaded = await Patient.objects.aget(pk=patient.pk)
        assert all(isinstance(loaded.__dict__[name], PendingDecryption) for name in ("ssn", "notes", "xray"))
        async with Heartbeat(held_kms):
            await adecrypt(loaded)
        # Read on the loop, now without KMS.
        return loaded.ssn, loaded.notes, loaded.xray

    values = run(scenario)

    assert values == (SSN, "allergic to penicillin", b"\x89PNG")
    assert len(decrypts(kms_calls)) == 3
    assert_loop_kept_running(held_kms, answers=3)


def test_async_for_then_adecrypt_of_one_field_decrypts_only_that_field(held_kms, kms_calls):
    for i in range(2):
        Patient.objects.create(name=f"p{i}", ssn=f"ssn-{i}", notes=f"note-{i}")
    kms_calls.clear()

    async def scenario():
        patients = [patient async for patient in Patient.objects.order_by("name")]
        assert decrypts(kms_calls) == []  # loading stays lazy
        async with Heartbeat(held_kms):
            await adecrypt(patients, "ssn")
        return [patient.ssn for patient in patients], patients

    ssns, patients = run(scenario)

    assert ssns == ["ssn-0", "ssn-1"]
    assert len(decrypts(kms_calls)) == 2
    assert all(isinstance(patient.__dict__["notes"], PendingDecryption) for patient in patients)
    assert_loop_kept_running(held_kms, answers=2)


def test_values_list_and_reads_inside_sync_to_async_decrypt_in_the_worker_thread(held_kms, kms_calls):
    patient = Patient.objects.create(name="a", ssn=SSN)
    kms_calls.clear()

    async def scenario():
        async with Heartbeat(held_kms):
            listed = [ssn async for ssn in Patient.objects.values_list("ssn", flat=True)]
            loaded = await Patient.objects.aget(pk=patient.pk)
            read_in_worker = await sync_to_async(lambda: loaded.ssn)()  # sync code, lazy as ever
        return listed, read_in_worker

    listed, read_in_worker = run(scenario)

    assert (listed, read_in_worker) == ([SSN], SSN)
    assert len(decrypts(kms_calls)) == 2
    assert_loop_kept_running(held_kms, answers=2)


# --- a sync read on the loop is refused -------------------------------------------------------------


def test_reading_a_pending_value_on_the_event_loop_raises_without_calling_kms(held_kms, kms_calls, monkeypatch):
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    patient = Patient.objects.create(ssn=SSN)
    kms_calls.clear()

    async def scenario():
        loaded = await Patient.objects.aget(pk=patient.pk)
        with pytest.raises(SynchronousOnlyOperation) as refused:
            loaded.ssn  # noqa: B018
        return loaded, str(refused.value)

    loaded, message = run(scenario)

    assert message.startswith(f"testapp.Patient.ssn (pk={patient.pk}) is still encrypted")
    assert "await django_kms_fields.adecrypt(instance)" in message
    assert decrypts(kms_calls) == []
    assert isinstance(loaded.__dict__["ssn"], PendingDecryption)
    held_kms.let_one_through()  # no heartbeat out here
    assert loaded.ssn == SSN  # in sync code, as before
    assert (held_kms.let_through, held_kms.timed_out) == (1, 0)


def test_django_allow_async_unsafe_lets_a_read_on_the_loop_decrypt(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    patient = Patient.objects.create(ssn=SSN)

    async def scenario():
        return (await Patient.objects.aget(pk=patient.pk)).ssn

    assert run(scenario) == SSN


def test_a_value_the_app_assigned_reads_on_the_loop_and_adecrypt_of_it_calls_no_kms(kms_calls):
    async def scenario():
        created = await Patient.objects.acreate(ssn=SSN)
        kms_calls.clear()
        await adecrypt(created)  # nothing pending: nothing to do
        return created.ssn

    assert run(scenario) == SSN
    assert kms_calls == []


# --- async writes encrypt ---------------------------------------------------------------------------


def test_acreate_then_aget_round_trip_stores_ciphertext():
    async def scenario():
        created = await Patient.objects.acreate(name="a", ssn=SSN, xray=b"scan")
        at_rest = await sync_to_async(stored)(Patient, created.pk, "ssn")
        loaded = await Patient.objects.aget(pk=created.pk)
        await adecrypt(loaded)
        return at_rest, loaded.ssn, loaded.xray

    at_rest, ssn, xray = run(scenario)

    assert SSN.encode() not in at_rest
    assert (ssn, xray) == (SSN, b"scan")


def test_abulk_create_encrypts_every_row():
    async def scenario():
        created = await Patient.objects.abulk_create([Patient(name=f"p{i}", ssn=f"ssn-{i}") for i in range(3)])
        loaded = [patient async for patient in Patient.objects.order_by("name")]
        await adecrypt(loaded)
        return [patient.ssn for patient in created], [patient.ssn for patient in loaded]

    assigned, read_back = run(scenario)

    assert assigned == read_back == ["ssn-0", "ssn-1", "ssn-2"]
    for patient in Patient.objects.all():
        at_rest = stored(Patient, patient.pk, "ssn")
        assert b"ssn-" not in at_rest
        assert len(at_rest) > 100


def test_aupdate_still_encrypts():
    patient = Patient.objects.create(ssn="before")
    before = stored(Patient, patient.pk, "ssn")

    async def scenario():
        updated = await Patient.objects.filter(pk=patient.pk).aupdate(ssn=SSN)
        loaded = await Patient.objects.aget(pk=patient.pk)
        await adecrypt(loaded, "ssn")
        return updated, loaded.ssn

    assert run(scenario) == (1, SSN)
    at_rest = stored(Patient, patient.pk, "ssn")
    assert at_rest != before
    assert SSN.encode() not in at_rest


# --- adecrypt's contract ----------------------------------------------------------------------------


def test_adecrypt_leaves_alone_a_value_the_app_assigned_while_it_ran(held_kms):
    patient = Patient.objects.create(ssn=SSN)

    async def scenario():
        loaded = await Patient.objects.aget(pk=patient.pk)
        decrypting = asyncio.create_task(adecrypt(loaded, "ssn"))
        for _ in range(int(GATE_TIMEOUT / TICK)):  # until KMS has the Decrypt request and sits on it
            if held_kms.waiting:
                break
            await asyncio.sleep(TICK)
        loaded.ssn = "assigned meanwhile"
        held_kms.let_one_through()
        await decrypting
        return loaded.ssn

    assert run(scenario) == "assigned meanwhile"
    assert (held_kms.let_through, held_kms.timed_out) == (1, 0)


def test_a_failed_adecrypt_keeps_the_values_before_it_and_its_error_holds_no_plaintext(kms_calls):
    Patient.objects.create(ssn=SSN)  # read before the bad one, by pk order
    bad = Patient.objects.create(ssn="x")
    write_raw(Patient, bad.pk, "ssn", b"left-over plaintext")

    async def scenario():
        loaded = [patient async for patient in Patient.objects.order_by("pk")]
        with pytest.raises(DecryptionError) as failed:
            await adecrypt(loaded, "ssn")
        return loaded, failed.value

    (good_loaded, bad_loaded), error = run(scenario)

    assert f"(pk={bad.pk})" in str(error)
    assert good_loaded.__dict__["ssn"] == SSN
    assert isinstance(bad_loaded.__dict__["ssn"], PendingDecryption)
    assert secrets_reachable_from(error, [SSN.encode()]) == []
    assert error.__context__ is None


def test_adecrypt_refuses_a_queryset_and_names_that_are_not_encrypted_fields():
    patient = Patient(ssn=SSN)

    async def scenario():
        with pytest.raises(TypeError, match=r"not a QuerySet .* \[obj async for obj in queryset\]"):
            await adecrypt(Patient.objects.all())
        with pytest.raises(ValueError, match=r"testapp\.Patient\.name is not an encrypted field"):
            await adecrypt(patient, "name")
        with pytest.raises(FieldDoesNotExist):
            await adecrypt([patient], "nonexistent")

    run(scenario)


# --- views under ASGI -------------------------------------------------------------------------------


async def patient_ssn_async(request, pk):
    """What the README tells an async view to do."""
    patient = await Patient.objects.aget(pk=pk)
    await adecrypt(patient, "ssn")
    return HttpResponse(patient.ssn, content_type="text/plain")


async def patient_ssn_async_forgetting_adecrypt(request, pk):
    patient = await Patient.objects.aget(pk=pk)
    return HttpResponse(patient.ssn, content_type="text/plain")


urlpatterns = [
    path("sync/<int:pk>", views.patient_ssn),
    path("async/<int:pk>", patient_ssn_async),
    path("async-forgetting/<int:pk>", patient_ssn_async_forgetting_adecrypt),
]


@pytest.mark.urls(__name__)
def test_sync_and_async_views_under_asgi(kms_calls):
    patient = Patient.objects.create(ssn=SSN)

    async def scenario():
        client = AsyncClient()
        responses = [await client.get(f"/{kind}/{patient.pk}") for kind in ("sync", "async")]
        with pytest.raises(SynchronousOnlyOperation):
            await client.get(f"/async-forgetting/{patient.pk}")
        return [response.content.decode() for response in responses]

    assert run(scenario) == [SSN, SSN]

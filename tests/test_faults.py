"""Every fault a real KMS endpoint shows, through model save and load: bounded, counted, nothing lost.

KMS sits behind ``tests.kms.KMSFront`` on 127.0.0.1; attempts are counted there, at the server.
"""

import time

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from django.db import transaction

from django_kms_fields import conf
from django_kms_fields.clients import kms_client, worst_case_call_seconds
from django_kms_fields.exceptions import KMSCircuitOpenError, KMSRequestError, KMSUnavailableError
from tests.helpers import REGION, keyring
from tests.kms import Fault
from tests.testapp.models import ArchivedDocument, Patient

pytestmark = pytest.mark.django_db(transaction=True)


def route_default_through(settings, keys, front, **options):
    """The default keyring (one key, to keep counts simple) talks to KMS through the front.

    Without data-key caching unless asked for: these tests are about the KMS calls themselves.
    """
    options.setdefault("CACHE", None)
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], front.endpoint, **options)}


# --- transient faults: retried, then KMSUnavailableError ---------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Fault(kind="reset"), (ConnectionClosedError, ClientError)),
        (Fault(kind="status", status=503), ClientError),
        (Fault(kind="error", error_code="ThrottlingException"), ClientError),
    ],
    ids=["reset", "503", "throttling"],
)
@pytest.mark.parametrize("retry_mode", ["standard", "legacy", "adaptive"])
def test_transient_faults_use_every_attempt_in_each_retry_mode(settings, keys, front, fault, cause, retry_mode):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=3, RETRY_MODE=retry_mode, BREAKER_THRESHOLD=None)
    front.set_fault(fault)

    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.create(ssn="s")

    assert front.stats.requests == {"GenerateDataKey": 3}
    assert isinstance(caught.value.__cause__, cause)
    assert Patient.objects.count() == 0


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "KMSInvalidStateException", "NotFoundException", "DisabledException"]
)
@pytest.mark.parametrize("operation", ["GenerateDataKey", "Decrypt"])
def test_permanent_refusals_are_sent_exactly_once(settings, keys, front, code, operation):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=3)
    patient = Patient.objects.create(ssn="s") if operation == "Decrypt" else None
    front.set_fault(Fault(kind="error", error_code=code, operations=(operation,)))

    with pytest.raises(KMSRequestError, match=code):
        if patient is None:
            Patient.objects.create(ssn="s")
        else:
            Patient.objects.get(pk=patient.pk).ssn

    assert front.stats.requests == {operation: 1}
    assert Patient.objects.count() == (0 if patient is None else 1)


def test_latency_within_the_read_timeout_is_only_slower(settings, keys, front, kms_calls):
    route_default_through(settings, keys, front, READ_TIMEOUT=5)
    front.set_fault(Fault(kind="pass", delay=0.2))

    patient = Patient.objects.create(ssn="slow")

    assert Patient.objects.get(pk=patient.pk).ssn == "slow"
    assert [c["attempts"] for c in kms_calls] == [1, 1]
    assert front.stats.total == 2


def test_latency_beyond_the_read_timeout_is_retried_then_unavailable(settings, keys, front):
    route_default_through(settings, keys, front, READ_TIMEOUT=0.3, MAX_ATTEMPTS=2)
    front.set_fault(Fault(kind="pass", delay=1.0))

    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.create(ssn="s")

    assert isinstance(caught.value.__cause__, ReadTimeoutError)
    assert front.stats.requests == {"GenerateDataKey": 2}


# --- the bound ---------------------------------------------------------------------------------------


def test_a_silent_kms_fails_inside_the_documented_bound(settings, keys, local_kms):
    # Tight settings prove the same formula the README gives for the defaults (5 s connect, 8 s read,
    # 3 attempts: 42 s) without waiting 24 s; test_settings proves the defaults reach the client.
    options = {"CONNECT_TIMEOUT": 1, "READ_TIMEOUT": 0.5, "MAX_ATTEMPTS": 3}
    from tests.kms import KMSFront

    front = KMSFront(local_kms, hold_seconds=30).start()
    try:
        settings.KMS_FIELDS = {
            **settings.KMS_FIELDS,
            "default": {"KEY_ARNS": [keys.first], "ENDPOINT_URL": front.endpoint, "CACHE": None, **options},
        }
        keyring_config = conf.get_keyring("default")
        bound = worst_case_call_seconds(keyring_config)
        front.set_fault(Fault(kind="hang"))

        started = time.monotonic()
        with pytest.raises(KMSUnavailableError):
            Patient.objects.create(ssn="s")
        elapsed = time.monotonic() - started

        assert front.stats.requests == {"GenerateDataKey": keyring_config.max_attempts}
        # Each attempt waited out the read timeout: the configured value is the one in use.
        assert elapsed >= keyring_config.max_attempts * keyring_config.read_timeout
        assert elapsed <= bound, f"{elapsed:.1f}s against a bound of {bound:.1f}s"
        assert Patient.objects.count() == 0
    finally:
        front.stop()


# --- nothing is lost ---------------------------------------------------------------------------------


def test_two_saves_in_one_atomic_block_where_the_second_fails_leave_the_database_as_it_was(settings, keys, front):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=1)
    kept = Patient.objects.create(name="kept", ssn="old")
    # The first save of the block gets its data key; the second does not.
    front.set_fault(Fault(kind="status", status=503, operations=("GenerateDataKey",), after=1))

    with pytest.raises(KMSUnavailableError), transaction.atomic():
        kept.ssn = "new"
        kept.save()
        Patient.objects.create(name="added", ssn="x")
    assert front.stats.requests == {"GenerateDataKey": 2}
    front.set_fault(Fault())

    assert list(Patient.objects.values_list("name", "ssn")) == [("kept", "old")]


# --- circuit breaker ---------------------------------------------------------------------------------


def open_breaker(settings, keys, front, threshold=2, cooldown=60.0):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=1, BREAKER_THRESHOLD=threshold, BREAKER_COOLDOWN=cooldown)
    front.set_fault(Fault(kind="status", status=503))
    for _ in range(threshold):
        with pytest.raises(KMSUnavailableError) as caught:
            Patient.objects.create(ssn="s")
        assert not isinstance(caught.value, KMSCircuitOpenError)
    assert front.stats.total == threshold


def test_an_open_breaker_fails_fast_without_calling_kms(settings, keys, front, kms_calls):
    open_breaker(settings, keys, front)

    with pytest.raises(KMSCircuitOpenError, match="BREAKER_COOLDOWN"):
        Patient.objects.create(ssn="s")

    assert front.stats.total == 2  # the third save never reached KMS
    assert kms_calls[-1]["outcome"] == "KMSCircuitOpenError"
    assert kms_calls[-1]["attempts"] == 0
    assert Patient.objects.count() == 0


def test_an_open_breaker_fails_reads_too_with_its_own_error(settings, keys, front):
    route_default_through(settings, keys, front)
    patient = Patient.objects.create(ssn="s")
    open_breaker(settings, keys, front)
    front.stats.requests.clear()

    with pytest.raises(KMSCircuitOpenError):
        Patient.objects.get(pk=patient.pk).ssn
    assert front.stats.total == 0


def test_after_the_cooldown_one_trial_closes_the_breaker(settings, keys, front):
    open_breaker(settings, keys, front, cooldown=0.3)
    front.set_fault(Fault())
    time.sleep(0.35)

    Patient.objects.create(ssn="after")
    Patient.objects.create(ssn="again")

    assert Patient.objects.count() == 2


def test_a_failed_trial_opens_the_breaker_for_another_cooldown(settings, keys, front):
    # Long enough that, on a busy machine, the next call still lands inside the new cooldown.
    open_breaker(settings, keys, front, cooldown=1.5)
    time.sleep(1.55)

    with pytest.raises(KMSUnavailableError) as trial:
        Patient.objects.create(ssn="s")
    with pytest.raises(KMSCircuitOpenError):
        Patient.objects.create(ssn="s")

    assert not isinstance(trial.value, KMSCircuitOpenError)
    assert front.stats.total == 3


def test_an_answer_from_kms_resets_the_failure_count(settings, keys, front):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=1, BREAKER_THRESHOLD=2)
    for fault in ("status", "refusal", "status", "refusal", "status"):
        if fault == "status":
            front.set_fault(Fault(kind="status", status=503))
            expected = KMSUnavailableError
        else:
            front.set_fault(Fault(kind="error", error_code="AccessDeniedException"))
            expected = KMSRequestError
        with pytest.raises(expected) as caught:
            Patient.objects.create(ssn="s")
        assert not isinstance(caught.value, KMSCircuitOpenError)


def test_one_keyring_open_leaves_another_working(settings, keys, front):
    open_breaker(settings, keys, front)

    ArchivedDocument.objects.create(body=b"archive keyring, straight to KMS")

    assert ArchivedDocument.objects.get().body == b"archive keyring, straight to KMS"


def test_a_settings_change_resets_the_breaker(settings, keys, front):
    open_breaker(settings, keys, front)
    front.set_fault(Fault())

    route_default_through(settings, keys, front, MAX_ATTEMPTS=1, BREAKER_THRESHOLD=2, BREAKER_COOLDOWN=59)
    Patient.objects.create(ssn="s")

    assert Patient.objects.count() == 1


def test_the_breaker_can_be_turned_off(settings, keys, front):
    route_default_through(settings, keys, front, MAX_ATTEMPTS=1, BREAKER_THRESHOLD=None)
    front.set_fault(Fault(kind="status", status=503))

    for _ in range(8):
        with pytest.raises(KMSUnavailableError) as caught:
            Patient.objects.create(ssn="s")
        assert not isinstance(caught.value, KMSCircuitOpenError)
    assert front.stats.total == 8


def test_a_trial_call_that_dies_without_a_kms_outcome_does_not_wedge_the_breaker(settings, keys, front):
    from django_kms_fields.clients import kms_client

    open_breaker(settings, keys, front, cooldown=0.2)
    front.set_fault(Fault())
    time.sleep(0.25)
    events = kms_client(conf.get_keyring("default"), "eu-west-1").meta.events

    def die(**kwargs):
        raise KeyboardInterrupt  # stands in for a worker timeout landing inside the trial call

    events.register("before-send.kms", die, unique_id="die")
    try:
        with pytest.raises(KeyboardInterrupt):
            Patient.objects.create(ssn="s")
    finally:
        events.unregister("before-send.kms", unique_id="die")

    Patient.objects.create(ssn="after")  # the next caller becomes the trial, and it succeeds
    assert Patient.objects.count() == 1


def test_an_endpoint_that_never_accepts_fails_on_the_connect_timeout(settings, keys):
    """A listener whose backlog is full drops new SYNs, so connecting hangs until CONNECT_TIMEOUT."""
    import socket

    from botocore.exceptions import ConnectTimeoutError

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; these are never accepted
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)
        route_default_through(settings, keys, type("Endpoint", (), {"endpoint": f"http://127.0.0.1:{port}"}),
                              CONNECT_TIMEOUT=0.5, READ_TIMEOUT=30, MAX_ATTEMPTS=2)
        # Build the client first (no network): on a busy machine building it can take longer than
        # the margin the bound below leaves.
        kms_client(conf.get_keyring("default"), REGION)

        started = time.monotonic()
        with pytest.raises(KMSUnavailableError) as caught:
            Patient.objects.create(ssn="s")
        elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        listener.close()

    assert isinstance(caught.value.__cause__, ConnectTimeoutError)
    # Two attempts of 0.5 s each plus a short backoff, about 1 s in all. The bound leaves a loaded
    # machine room, and is still below two attempts at the default 5 s connect timeout, so it shows
    # that the configured one (not the default, the 30 s read timeout or botocore's 60 s) was used.
    assert elapsed < 8, f"took {elapsed:.1f}s"

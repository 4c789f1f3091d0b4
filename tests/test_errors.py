"""Faults and bad input raise the documented error, quickly, and never write or return a wrong value.

KMS runs behind ``tests.kms.KMSFront`` on 127.0.0.1, which counts the requests it sees and injects
one fault at a time.
"""

import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from django_kms_fields import conf
from django_kms_fields.clients import worst_case_call_seconds
from django_kms_fields.exceptions import (
    DecryptionError,
    EncryptionError,
    KMSFieldsConfigurationError,
    KMSRequestError,
    KMSUnavailableError,
)
from tests.helpers import keyring, stored, write_raw
from tests.kms import Fault, closed_port_endpoint
from tests.testapp.models import Invoice, Patient

pytestmark = pytest.mark.django_db

# For tests that prove nothing was written: rows are really committed, so no enclosing test
# transaction can hide a partial write.
committed = pytest.mark.django_db(transaction=True)

SSN = "219-09-9999"


def use_endpoint(settings, keys, endpoint, **options):
    """The default keyring through ``endpoint``, without data-key caching: every operation needs KMS."""
    options.setdefault("CACHE", None)
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": keyring([keys.first, keys.second], endpoint, **options),
    }


def assert_no_secret_in(error, *secrets):
    text = "".join(str(e) for e in (error, error.__cause__) if e is not None)
    for secret in secrets:
        assert secret not in text


# --- KMS refuses -------------------------------------------------------------------------------------


@committed
def test_an_unknown_key_is_refused_once_and_nothing_is_written(settings, local_kms, keys, front):
    missing = keys.first.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([missing], front.endpoint, CACHE=None)}

    with pytest.raises(KMSRequestError) as caught:
        Patient.objects.create(ssn=SSN)

    assert "NotFoundException" in str(caught.value)
    assert "testapp.Patient.ssn" in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientError)
    assert front.stats.requests == {"GenerateDataKey": 1}
    assert Patient.objects.count() == 0
    assert_no_secret_in(caught.value, SSN)


@pytest.mark.parametrize("code", ["AccessDeniedException", "DisabledException", "KMSInvalidStateException"])
def test_a_refusal_on_read_is_a_request_error_naming_the_real_cause(settings, keys, front, code):
    use_endpoint(settings, keys, front.endpoint)
    patient = Patient.objects.create(ssn=SSN)
    front.set_fault(Fault(kind="error", error_code=code, operations=("Decrypt",)))

    with pytest.raises(KMSRequestError) as caught:
        Patient.objects.get(pk=patient.pk).ssn

    assert code in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientError)
    # Refusals are not retried; each of the two keys that wrap the data key is asked once.
    assert front.stats.requests == {"Decrypt": 2}
    assert_no_secret_in(caught.value, SSN)


def test_a_read_falls_back_to_the_next_key_when_the_first_is_refused(settings, keys, front, kms_calls):
    use_endpoint(settings, keys, front.endpoint)
    patient = Patient.objects.create(ssn=SSN)
    front.set_fault(Fault(kind="error", error_code="AccessDeniedException", operations=("Decrypt",), times=1))
    kms_calls.clear()

    assert Patient.objects.get(pk=patient.pk).ssn == SSN
    assert [(c["key_arn"], c["outcome"]) for c in kms_calls] == [
        (keys.first, "KMSRequestError"),
        (keys.second, "ok"),
    ]


# --- KMS unavailable ---------------------------------------------------------------------------------


@committed
@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="error", error_code="ThrottlingException"),
        Fault(kind="status", status=503),
        Fault(kind="status", status=500),
        Fault(kind="error", error_code="KMSInternalException", status=500),
    ],
    ids=["throttling", "503", "500", "internal"],
)
def test_transient_failures_are_retried_up_to_max_attempts_then_unavailable(settings, keys, front, fault):
    use_endpoint(settings, keys, front.endpoint, MAX_ATTEMPTS=3)
    front.set_fault(fault)

    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.create(ssn=SSN)

    assert front.stats.requests == {"GenerateDataKey": 3}
    assert isinstance(caught.value.__cause__, ClientError)
    assert Patient.objects.count() == 0


@committed
def test_a_silent_endpoint_fails_within_the_configured_bound(settings, keys, front):
    """The configured timeouts and attempts are what the SDK's calls actually use.

    botocore's defaults (60 s connect, 60 s read, 3 attempts) would hold this save for minutes.
    """
    use_endpoint(settings, keys, front.endpoint, CONNECT_TIMEOUT=1, READ_TIMEOUT=0.5, MAX_ATTEMPTS=3)
    front.set_fault(Fault(kind="hang"))
    bound = worst_case_call_seconds(conf.get_keyring("default"))

    started = time.monotonic()
    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.create(ssn=SSN)
    elapsed = time.monotonic() - started

    assert front.stats.requests == {"GenerateDataKey": 3}
    assert elapsed < bound + 1.0, f"took {elapsed:.1f}s, bound {bound:.1f}s"
    assert isinstance(caught.value.__cause__, ReadTimeoutError)
    assert Patient.objects.count() == 0


@committed
def test_a_refused_connection_is_unavailable_and_writes_nothing(settings, keys):
    use_endpoint(settings, keys, closed_port_endpoint(), MAX_ATTEMPTS=2)

    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.create(ssn=SSN)

    assert isinstance(caught.value.__cause__, EndpointConnectionError)
    assert Patient.objects.count() == 0


def test_an_outage_during_a_read_is_unavailable_not_a_generic_failure(settings, keys, front):
    use_endpoint(settings, keys, front.endpoint)
    patient = Patient.objects.create(ssn=SSN)
    # The short READ_TIMEOUT only for the read that meets the outage: a loaded machine can take longer
    # than that to answer a save.
    use_endpoint(settings, keys, front.endpoint, MAX_ATTEMPTS=2, READ_TIMEOUT=0.5)
    front.set_fault(Fault(kind="hang"))

    with pytest.raises(KMSUnavailableError) as caught:
        Patient.objects.get(pk=patient.pk).ssn

    assert isinstance(caught.value.__cause__, ReadTimeoutError)
    assert front.stats.requests == {"Decrypt": 4}  # two attempts for each of the two keys


@committed
def test_a_failed_bulk_create_writes_no_row(settings, keys, front):
    use_endpoint(settings, keys, front.endpoint, MAX_ATTEMPTS=1)
    Patient.objects.create(ssn="kept")
    front.set_fault(Fault(kind="status", status=503))

    with pytest.raises(KMSUnavailableError):
        Patient.objects.bulk_create([Patient(ssn=f"new-{i}") for i in range(3)])
    front.set_fault(Fault())

    assert list(Patient.objects.values_list("ssn", flat=True)) == ["kept"]


@committed
def test_a_failed_save_inside_atomic_rolls_back_the_earlier_save(settings, keys, front):
    use_endpoint(settings, keys, front.endpoint, MAX_ATTEMPTS=1)
    existing = Patient.objects.create(ssn="before")
    encryptions = {"n": 0}

    from django_kms_fields.signals import kms_call

    def fail_after_first_save(sender, operation, **kwargs):
        if operation == "Encrypt":
            encryptions["n"] += 1
            if encryptions["n"] == 1:
                front.set_fault(Fault(kind="status", status=503))

    kms_call.connect(fail_after_first_save, weak=False, dispatch_uid="fail_after_first_save")
    try:
        with pytest.raises(KMSUnavailableError), transaction.atomic():
            Patient.objects.filter(pk=existing.pk).update(ssn="during")
            Invoice.objects.create(iban="second")
    finally:
        kms_call.disconnect(dispatch_uid="fail_after_first_save")
    front.set_fault(Fault())

    assert Patient.objects.get(pk=existing.pk).ssn == "before"
    assert Invoice.objects.count() == 0


@committed
def test_missing_credentials_are_a_configuration_error(settings, keys, local_kms, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    use_endpoint(settings, keys, local_kms.endpoint)

    with pytest.raises(KMSFieldsConfigurationError) as caught:
        Patient.objects.create(ssn=SSN)

    assert isinstance(caught.value, ImproperlyConfigured)
    assert "credentials" in str(caught.value)
    assert Patient.objects.count() == 0


# --- stored values that are not this field's messages ------------------------------------------------


def test_a_value_copied_into_another_column_fails_without_a_kms_call(kms_calls):
    patient = Patient.objects.create(ssn=SSN, notes="n")
    invoice = Invoice.objects.create(iban="x")
    ssn_message = stored(Patient, patient.pk, "ssn")
    write_raw(Patient, patient.pk, "notes", ssn_message)
    write_raw(Invoice, invoice.pk, "iban", ssn_message)
    kms_calls.clear()

    with pytest.raises(DecryptionError) as same_model:
        Patient.objects.values_list("notes").get(pk=patient.pk)
    with pytest.raises(DecryptionError) as other_model:
        Invoice.objects.get(pk=invoice.pk).iban

    assert "testapp.Patient.notes" in str(same_model.value)
    assert "'testapp.patient.ssn'" in str(same_model.value)
    assert "testapp.Invoice.iban" in str(other_model.value)
    assert kms_calls == []
    assert_no_secret_in(same_model.value, SSN)


def test_a_value_whose_keys_are_not_in_the_keyring_fails_without_a_kms_call(settings, local_kms, keys, kms_calls):
    patient = Patient.objects.create(ssn=SSN)
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.stranger], local_kms.endpoint)}
    kms_calls.clear()

    with pytest.raises(DecryptionError) as caught:
        Patient.objects.values_list("ssn", flat=True).get(pk=patient.pk)

    assert "no key of keyring 'default'" in str(caught.value)
    assert kms_calls == []


def test_a_value_of_another_keyring_and_field_fails_without_a_kms_call(kms_calls):
    patient = Patient.objects.create(ssn=SSN, xray=b"scan")
    write_raw(Patient, patient.pk, "ssn", stored(Patient, patient.pk, "xray"))
    kms_calls.clear()

    with pytest.raises(DecryptionError, match="written for 'testapp.patient.xray'"):
        Patient.objects.values_list("ssn", flat=True).get(pk=patient.pk)
    assert kms_calls == []


def test_a_changed_keyring_encryption_context_is_detected(settings, local_kms, keys):
    patient = Patient.objects.create(ssn=SSN, xray=b"scan")
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "archive": keyring([keys.archive], local_kms.endpoint, ENCRYPTION_CONTEXT={"purpose": "other"}),
    }

    with pytest.raises(DecryptionError, match="purpose"):
        Patient.objects.get(pk=patient.pk).xray


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: b"",
        lambda m: SSN.encode(),
        lambda m: b"\x00" * 64,
        lambda m: m[:-1],
        lambda m: m[: len(m) // 2],
        lambda m: m + b"\x00",
        lambda m: m[:-5] + bytes([m[-5] ^ 0x01]) + m[-4:],
        lambda m: m[:40] + bytes([m[40] ^ 0x80]) + m[41:],
    ],
    ids=["empty", "legacy-plaintext", "zeros", "truncated-1", "truncated-half", "extended", "tag-flip", "header-flip"],
)
def test_a_tampered_or_foreign_value_is_a_decryption_error_never_a_value(corrupt):
    patient = Patient.objects.create(ssn=SSN)
    write_raw(Patient, patient.pk, "ssn", corrupt(stored(Patient, patient.pk, "ssn")))

    with pytest.raises(DecryptionError) as caught:
        Patient.objects.get(pk=patient.pk).ssn

    assert "testapp.Patient.ssn" in str(caught.value)
    assert_no_secret_in(caught.value, SSN)


# --- values that cannot be encrypted -------------------------------------------------------------------


@committed
def test_a_binary_field_refuses_text_before_any_kms_call(kms_calls):
    with pytest.raises(EncryptionError, match="takes bytes"):
        Invoice.objects.create(scan="not bytes")

    assert kms_calls == []
    assert Invoice.objects.count() == 0


def test_text_that_is_not_valid_unicode_is_refused():
    with pytest.raises(EncryptionError, match="not valid Unicode"):
        Patient.objects.create(ssn="half a surrogate \ud800")

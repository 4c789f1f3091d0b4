"""Someone who can write the database, but has no KMS access, cannot turn the app against itself:
no secret reaches an error page, a planted value costs a bounded amount to read, and what it claims
about its keys, regions, suite and context is checked before any KMS call."""

import html
import io

import pytest
from aws_encryption_sdk.identifiers import Algorithm
from django.core.management import call_command
from django.test import Client

from django_kms_fields import conf
from django_kms_fields.exceptions import DecryptionError
from django_kms_fields.headers import body_shape
from tests.helpers import (
    REGION,
    keyring,
    message_secrets,
    regions_of,
    sdk_message,
    secrets_reachable_from,
    stored,
    write_raw,
)
from tests.kms import Fault
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db

SSN = "078-05-1120-secret"
FIELD_CONTEXT = {"kms-fields:field": "testapp.patient.ssn"}


def read_raises_decryption_error(pk) -> DecryptionError:
    with pytest.raises(DecryptionError) as refused:
        Patient.objects.get(pk=pk).ssn
    return refused.value


def uncached(settings, endpoint, key_arns, **options):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring(key_arns, endpoint, CACHE=None, **options)}


# --- 1. no secret in a traceback ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m + b"!",  # appended: decrypts fully, then refused
        lambda m: m[:-1] + bytes([m[-1] ^ 1]),  # the last frame's tag
    ],
    ids=["appended-byte", "last-frame-tag"],
)
def test_the_debug_page_of_a_view_reading_a_tampered_value_shows_no_plaintext_or_key(settings, local_kms, tamper):
    patient = Patient.objects.create(ssn=SSN)
    message = stored(Patient, patient.pk, "ssn")
    secrets = message_secrets(message, local_kms, SSN.encode())
    write_raw(Patient, patient.pk, "ssn", tamper(message))
    settings.DEBUG = True

    response = Client(raise_request_exception=False).get(f"/patients/{patient.pk}/ssn")

    assert response.status_code == 500
    page = html.unescape(response.content.decode())
    assert "DecryptionError" in page  # the technical 500 page, with its frames and their variables
    assert "Local vars" in page
    assert SSN not in page
    for key in secrets[1:]:
        # The page shows bytes as their repr (pretty-printed, so possibly broken across lines): look
        # for the start of it, long enough not to occur by chance.
        assert repr(key)[2:26] not in page
        assert key.hex()[:24] not in page


def test_a_header_tag_flip_leaves_no_derived_key_in_any_frame(local_kms):
    patient = Patient.objects.create(ssn=SSN)
    message = stored(Patient, patient.pk, "ssn")
    secrets = message_secrets(message, local_kms, SSN.encode())
    tag = regions_of(message).header_tag
    write_raw(Patient, patient.pk, "ssn", message[: tag.start] + bytes([message[tag.start] ^ 1]) + message[tag.start + 1 :])

    error = read_raises_decryption_error(patient.pk)

    assert error.code == "SerializationError" or error.code == "InvalidTag"
    assert secrets_reachable_from(error, secrets) == []
    assert error.__context__ is None


# --- 2. bounded cost per read ------------------------------------------------------------------------


def test_a_value_framed_otherwise_than_this_app_writes_is_refused_before_any_kms_call(local_kms, keys, kms_calls):
    patient = Patient.objects.create(ssn="x")
    small_frames = sdk_message(local_kms, keys.first, b"y" * 5000, FIELD_CONTEXT, frame_length=128)
    write_raw(Patient, patient.pk, "ssn", small_frames)
    kms_calls.clear()

    error = read_raises_decryption_error(patient.pk)

    assert error.code == "FrameLength"
    assert kms_calls == []
    # The same value framed as the app frames it reads: the refusal is about framing, nothing else.
    write_raw(Patient, patient.pk, "ssn", sdk_message(local_kms, keys.first, b"y" * 5000, FIELD_CONTEXT))
    assert Patient.objects.get(pk=patient.pk).ssn == "y" * 5000


def test_a_value_over_max_message_bytes_is_refused_before_any_kms_call(settings, local_kms, keys, kms_calls):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint, MAX_MESSAGE_BYTES=4096)}
    patient = Patient.objects.create(ssn="z" * 5000)
    kms_calls.clear()

    error = read_raises_decryption_error(patient.pk)

    assert error.code == "MessageTooLarge"
    assert kms_calls == []


def test_a_header_listing_one_key_many_times_costs_one_kms_call(settings, local_kms, keys, kms_calls):
    uncached(settings, local_kms.endpoint, [keys.first])
    patient = Patient.objects.create(ssn=SSN)
    message = stored(Patient, patient.pk, "ssn")
    write_raw(Patient, patient.pk, "ssn", repeated_data_key(message, times=9))
    kms_calls.clear()

    read_raises_decryption_error(patient.pk)

    assert [c["operation"] for c in kms_calls] == ["Decrypt"]


def test_discovery_reaches_only_the_allowed_regions(settings, local_kms, keys, kms_calls):
    elsewhere = local_kms.create_key("ap-south-1", "another region of the same account")
    account = keys.first.split(":")[4]
    patient = Patient.objects.create(ssn="x")
    write_raw(Patient, patient.pk, "ssn", sdk_message(local_kms, elsewhere, SSN.encode(), FIELD_CONTEXT))
    discovery = {"ACCOUNT_IDS": [account], "PARTITION": "aws"}
    uncached(settings, local_kms.endpoint, [keys.first], DISCOVERY=discovery)
    kms_calls.clear()

    error = read_raises_decryption_error(patient.pk)

    assert "wrapped by no key of keyring" in str(error)
    assert kms_calls == []
    assert conf.get_keyring("default").discovery.regions == {REGION}
    uncached(settings, local_kms.endpoint, [keys.first], DISCOVERY={**discovery, "REGIONS": [REGION, "ap-south-1"]})
    assert Patient.objects.get(pk=patient.pk).ssn == SSN
    assert [(c["operation"], c["region"]) for c in kms_calls] == [("Decrypt", "ap-south-1")]


def test_a_relabelled_wrapped_key_is_a_decryption_error_not_a_refusal(settings, keys, front):
    uncached(settings, front.endpoint, [keys.first, keys.second])
    patient = Patient.objects.create(ssn=SSN)
    message = stored(Patient, patient.pk, "ssn")
    # Both data keys now claim to be wrapped by the second key; the first one's blob is not. Real KMS
    # answers IncorrectKeyException; moto answers AccessDeniedException, which cannot be told apart
    # from an IAM denial, so the front gives KMS's answer here.
    write_raw(Patient, patient.pk, "ssn", message.replace(keys.first.encode(), keys.second.encode()))
    front.set_fault(Fault(kind="error", error_code="IncorrectKeyException", operations=("Decrypt",)))

    error = read_raises_decryption_error(patient.pk)

    assert (error.operation, error.key_arn, error.code) == ("Decrypt", keys.second, "IncorrectKeyException")
    assert front.stats.requests == {"Decrypt": 1}


# --- 3. who can write valid values -------------------------------------------------------------------


def test_require_algorithm_refuses_values_of_another_suite_even_valid_ones(settings, local_kms, keys, kms_calls):
    patient = Patient.objects.create(ssn=SSN)  # the default, unsigned suite
    forged = sdk_message(local_kms, keys.first, b"FORGED", FIELD_CONTEXT)  # as a Decrypt-only role could
    write_raw(Patient, patient.pk, "ssn", forged)
    signed = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint, ALGORITHM=signed)}
    assert Patient.objects.get(pk=patient.pk).ssn == "FORGED"  # what the option is for

    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint, ALGORITHM=signed, REQUIRE_ALGORITHM=True)}
    kms_calls.clear()

    error = read_raises_decryption_error(patient.pk)

    assert error.code == "AlgorithmSuite" and kms_calls == []
    fresh = Patient.objects.create(ssn="signed now")
    assert Patient.objects.get(pk=fresh.pk).ssn == "signed now"


def test_reserved_pairs_the_sdk_did_not_write_are_refused(local_kms, keys):
    patient = Patient.objects.create(ssn="x")
    forged = sdk_message(local_kms, keys.first, b"FORGED", FIELD_CONTEXT, extra_reserved={"aws-crypto-forged": "1"})
    write_raw(Patient, patient.pk, "ssn", forged)

    error = read_raises_decryption_error(patient.pk)

    assert "reserved pairs" in str(error) and "'aws-crypto-forged'" in str(error)


# --- 4. what comes from the stored value is escaped and bounded --------------------------------------


def test_labels_and_keys_from_a_stored_value_are_escaped_and_cut_in_errors(local_kms, keys):
    patient = Patient.objects.create(ssn="x")
    hostile_context = {"kms-fields:field": "L" * 60000, "forged\nWARNING root: all is well": "v"}
    write_raw(Patient, patient.pk, "ssn", sdk_message(local_kms, keys.first, b"v", hostile_context))

    error = read_raises_decryption_error(patient.pk)

    assert "\n" not in str(error)
    assert len(str(error)) < 400
    assert "60000 characters" in str(error)


def repeated_data_key(message: bytes, *, times: int) -> bytes:
    """``message`` with its first data key listed ``times`` times, each copy's wrapped key altered at
    another byte (identical copies would collapse into one: the SDK keeps data keys in a set), as
    someone who can write the column could store it."""
    regions = regions_of(message)
    keys_region = message[regions.data_keys.start : regions.data_keys.stop]
    offset = 2
    for _ in range(3):  # provider id, key info, wrapped key: each length-prefixed
        offset += 2 + int.from_bytes(keys_region[offset : offset + 2], "big")
    first = keys_region[2:offset]
    copies = []
    for i in range(times):
        copy = bytearray(first)
        copy[-1 - i] ^= 1
        copies.append(bytes(copy))
    return message[: regions.data_keys.start] + times.to_bytes(2, "big") + b"".join(copies) + message[regions.data_keys.stop :]


def test_moving_to_the_signed_suite_rewrites_old_values_then_require_algorithm_reads_them(settings, local_kms, keys):
    patients = [Patient.objects.create(ssn=f"ssn-{i}") for i in range(3)]
    signed = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint, ALGORITHM=signed)}

    out = io.StringIO()
    call_command("kms_fields_reencrypt", "testapp.Patient.ssn", "--dry-run", stdout=out)
    assert "would rewrite 3" in out.getvalue()
    call_command("kms_fields_reencrypt", "testapp.Patient.ssn", stdout=io.StringIO())

    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint, ALGORITHM=signed, REQUIRE_ALGORITHM=True)}
    assert [Patient.objects.get(pk=p.pk).ssn for p in patients] == ["ssn-0", "ssn-1", "ssn-2"]
    assert all(body_shape(stored(Patient, p.pk, "ssn")).suite_id == Algorithm[signed].algorithm_id for p in patients)


def test_error_reports_with_debug_off_hide_the_value_being_encrypted(settings, keys, front):
    from django.views.debug import SafeExceptionReporterFilter

    uncached(settings, front.endpoint, [keys.first])
    front.set_fault(Fault(kind="error", error_code="AccessDeniedException", operations=("GenerateDataKey",)))
    with pytest.raises(Exception) as refused:
        Patient(ssn=SSN).save()

    tb, shown = refused.value.__traceback__, {}
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "get_db_prep_value":
            shown = dict(SafeExceptionReporterFilter().get_traceback_frame_variables(None, tb.tb_frame))
        tb = tb.tb_next
    assert shown["value"] == SafeExceptionReporterFilter.cleansed_substitute

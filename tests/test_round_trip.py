"""Values go in encrypted and come back decrypted through every ORM path a user relies on."""

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from django.db import connection

from tests.helpers import keyring, stored
from tests.testapp.models import Invoice, Patient

pytestmark = pytest.mark.django_db

SSN = "078-05-1120"


def test_save_and_get_round_trip_text_and_bytes():
    patient = Patient(name="Ada", ssn=SSN, xray=b"\x89PNG\r\n\x1a\n\x00")
    patient.save()

    loaded = Patient.objects.get(pk=patient.pk)

    assert loaded.ssn == SSN
    assert isinstance(loaded.ssn, str)
    assert loaded.xray == b"\x89PNG\r\n\x1a\n\x00"
    assert isinstance(loaded.xray, bytes)


def test_the_column_holds_an_encryption_sdk_message_not_the_plaintext():
    patient = Patient.objects.create(ssn=SSN, xray=b"secret-scan-bytes")

    raw_ssn = stored(Patient, patient.pk, "ssn")
    raw_xray = stored(Patient, patient.pk, "xray")

    assert SSN.encode() not in raw_ssn
    assert b"secret-scan-bytes" not in raw_xray
    assert raw_ssn[0] == 2  # AWS Encryption SDK message format version 2 (committing suites)
    # The non-signing committing suite by default: 0x0478 AES_256_GCM_HKDF_SHA512_COMMIT_KEY.
    assert raw_ssn[1:3] == b"\x04\x78"


def test_equal_values_are_stored_as_different_messages():
    first = Patient.objects.create(ssn=SSN)
    second = Patient.objects.create(ssn=SSN)

    assert stored(Patient, first.pk, "ssn") != stored(Patient, second.pk, "ssn")


def test_none_is_stored_as_null_and_empty_values_are_encrypted():
    patient = Patient.objects.create(ssn="", notes=None, xray=b"")

    assert stored(Patient, patient.pk, "notes") is None
    assert stored(Patient, patient.pk, "ssn")[0] == 2
    assert stored(Patient, patient.pk, "xray")[0] == 2
    loaded = Patient.objects.get(pk=patient.pk)
    assert loaded.ssn == ""
    assert loaded.notes is None
    assert loaded.xray == b""


@pytest.mark.parametrize("value", [b"abc\x00", bytearray(b"abc\x00"), memoryview(b"abc\x00")])
def test_binary_field_accepts_bytes_like_values_and_returns_bytes(value):
    patient = Patient.objects.create(ssn=SSN, xray=value)

    assert Patient.objects.get(pk=patient.pk).xray == b"abc\x00"


def test_unicode_text_round_trips():
    text = "Zoë 🧬 \u00a0 ∑ — \U0010ffff"
    patient = Patient.objects.create(ssn=text)

    assert Patient.objects.get(pk=patient.pk).ssn == text


def test_large_binary_value_round_trips():
    blob = bytes(range(256)) * 4096  # 1 MiB: several SDK frames

    patient = Patient.objects.create(ssn=SSN, xray=blob)

    assert Patient.objects.get(pk=patient.pk).xray == blob


def test_bulk_create_bulk_update_and_queryset_update():
    patients = Patient.objects.bulk_create([Patient(name=f"p{i}", ssn=f"ssn-{i}") for i in range(5)])
    if patients[0].pk is None:  # backends that cannot return ids from a bulk insert
        patients = list(Patient.objects.order_by("name"))
    for patient in patients:
        patient.ssn = patient.ssn.upper()
        patient.xray = patient.name.encode()
    Patient.objects.bulk_update(patients, ["ssn", "xray"])

    assert {p.name: (p.ssn, p.xray) for p in Patient.objects.all()} == {
        f"p{i}": (f"SSN-{i}", f"p{i}".encode()) for i in range(5)
    }

    updated = Patient.objects.filter(name__in=["p1", "p2"]).update(notes="seen", ssn="redacted")

    assert updated == 2
    assert sorted(Patient.objects.values_list("name", "ssn", "notes")) == [
        ("p0", "SSN-0", None),
        ("p1", "redacted", "seen"),
        ("p2", "redacted", "seen"),
        ("p3", "SSN-3", None),
        ("p4", "SSN-4", None),
    ]
    assert b"redacted" not in stored(Patient, Patient.objects.get(name="p1").pk, "ssn")


def test_values_iteration_refresh_defer_and_only():
    patient = Patient.objects.create(name="Ada", ssn=SSN, notes="allergic", xray=b"img")

    assert list(Patient.objects.values("ssn", "xray")) == [{"ssn": SSN, "xray": b"img"}]
    assert list(Patient.objects.values_list("notes", flat=True)) == ["allergic"]
    assert [p.ssn for p in Patient.objects.all()] == [SSN]
    assert [p.ssn for p in Patient.objects.iterator(chunk_size=10)] == [SSN]

    deferred = Patient.objects.defer("ssn").get(pk=patient.pk)
    assert deferred.get_deferred_fields() == {"ssn"}
    assert deferred.ssn == SSN
    only = Patient.objects.only("name").get(pk=patient.pk)
    assert only.notes == "allergic"

    Patient.objects.filter(pk=patient.pk).update(notes="changed")
    patient.refresh_from_db()
    assert patient.notes == "changed"
    patient.refresh_from_db(fields=["ssn"])
    assert patient.ssn == SSN


def test_messages_carry_the_field_binding_and_keyring_context_and_decrypt_with_the_official_sdk(
    local_kms, keys, monkeypatch
):
    patient = Patient.objects.create(ssn=SSN, xray=b"scan")
    # The official SDK with its own discovery-free provider, pointed at the same local KMS.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", local_kms.endpoint)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[keys.first], botocore_session=botocore.session.Session()
    )
    sdk = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)

    plaintext, header = sdk.decrypt(source=stored(Patient, patient.pk, "ssn"), key_provider=provider)

    assert plaintext == SSN.encode()
    assert header.encryption_context == {"kms-fields:field": "testapp.patient.ssn"}
    archive_provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[keys.archive], botocore_session=botocore.session.Session()
    )
    plaintext, header = sdk.decrypt(source=stored(Patient, patient.pk, "xray"), key_provider=archive_provider)
    assert plaintext == b"scan"
    assert header.encryption_context == {"kms-fields:field": "testapp.patient.xray", "purpose": "archive"}


@pytest.mark.parametrize("only_key", ["first", "second"])
def test_every_key_of_the_keyring_wraps_the_data_key(settings, local_kms, keys, only_key, kms_calls):
    patient = Patient.objects.create(ssn=SSN)
    assert [(c["operation"], c["key_arn"]) for c in kms_calls] == [
        ("GenerateDataKey", keys.first),
        ("Encrypt", keys.second),
    ]
    kms_calls.clear()
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": keyring([getattr(keys, only_key)], local_kms.endpoint),
    }

    assert Patient.objects.get(pk=patient.pk).ssn == SSN
    assert [(c["operation"], c["key_arn"]) for c in kms_calls] == [("Decrypt", getattr(keys, only_key))]


def test_the_first_listed_key_is_tried_first_on_read(settings, local_kms, keys, kms_calls):
    patient = Patient.objects.create(ssn=SSN)
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.second, keys.first], local_kms.endpoint)}
    kms_calls.clear()

    assert Patient.objects.get(pk=patient.pk).ssn == SSN
    assert [c["key_arn"] for c in kms_calls] == [keys.second]


def test_signing_suite_by_name(settings, local_kms, keys):
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": keyring(
            [keys.first], local_kms.endpoint, ALGORITHM="AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
        ),
    }
    patient = Patient.objects.create(ssn=SSN)

    assert stored(Patient, patient.pk, "ssn")[1:3] == b"\x05\x78"
    assert Patient.objects.get(pk=patient.pk).ssn == SSN


def test_each_field_and_model_uses_its_own_keyring(kms_calls, keys):
    Invoice.objects.create(iban="DE89 3704 0044 0532 0130 00", scan=b"pdf")
    Patient.objects.create(ssn=SSN, xray=b"img")

    generated = [(c["keyring"], c["key_arn"]) for c in kms_calls if c["operation"] == "GenerateDataKey"]
    assert generated == [("default", keys.first), ("default", keys.first), ("default", keys.first), ("archive", keys.archive)]


def test_binding_can_be_pinned_so_a_renamed_field_keeps_reading_old_values():
    from django_kms_fields.fields import EncryptedTextField

    field = EncryptedTextField(binding="testapp.patient.ssn")
    field.set_attributes_from_name("social_security_number")
    field.model = Patient

    assert field.field_binding().label == "testapp.patient.ssn"
    patient = Patient.objects.create(ssn=SSN)
    assert field.from_db_value(stored(Patient, patient.pk, "ssn"), None, connection) == SSN

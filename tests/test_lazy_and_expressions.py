"""Model instances decrypt on first access; expressions can never write plaintext."""

import pickle

import pytest
from django.db.models import F, Value
from django.db.models.functions import Upper

from django_kms_fields.exceptions import DecryptionError, EncryptionError
from django_kms_fields.fields import PendingDecryption
from tests.helpers import keyring, stored, write_raw
from tests.testapp.models import Patient, Referral

pytestmark = pytest.mark.django_db


@pytest.fixture
def uncached(settings, local_kms, keys):
    """Caching off, so every decryption shows up as a KMS call."""
    settings.KMS_FIELDS = {
        "default": keyring([keys.first], local_kms.endpoint, CACHE=None),
        "archive": keyring([keys.archive], local_kms.endpoint, CACHE=None, ENCRYPTION_CONTEXT={"purpose": "archive"}),
    }


def decrypts(kms_calls):
    return [c for c in kms_calls if c["operation"] == "Decrypt"]


def test_loading_instances_decrypts_nothing_until_an_attribute_is_read(uncached, kms_calls):
    for i in range(3):
        Patient.objects.create(name=f"p{i}", ssn=f"ssn-{i}", notes=f"note-{i}")
    kms_calls.clear()

    patients = list(Patient.objects.order_by("name"))
    assert decrypts(kms_calls) == []

    assert patients[1].ssn == "ssn-1"
    assert patients[1].ssn == "ssn-1"
    assert len(decrypts(kms_calls)) == 1
    assert [p.name for p in patients] == ["p0", "p1", "p2"]
    assert len(decrypts(kms_calls)) == 1


def test_select_related_columns_and_a_subclass_overriding_get_col_stay_lazy(uncached, kms_calls):
    # Guards the Django internal lazy decryption relies on (SQLCompiler.get_default_columns calling
    # Field.get_col), on every Django line CI runs.
    patient = Patient.objects.create(name="p", ssn="ssn-p")
    Referral.objects.create(patient=patient, reason="cardiology")
    kms_calls.clear()

    referral = Referral.objects.select_related("patient").get()

    assert isinstance(referral.__dict__["reason"], PendingDecryption)
    assert isinstance(referral.patient.__dict__["ssn"], PendingDecryption)
    assert decrypts(kms_calls) == []
    assert (referral.reason, referral.patient.ssn) == ("cardiology", "ssn-p")
    assert len(decrypts(kms_calls)) == 2


def test_values_and_annotations_are_plaintext_at_once(uncached, kms_calls):
    Patient.objects.create(name="a", ssn="s", notes="n")

    assert list(Patient.objects.values("ssn")) == [{"ssn": "s"}]
    assert list(Patient.objects.values_list("notes", flat=True)) == ["n"]
    annotated = Patient.objects.annotate(copy=F("ssn")).get()
    assert annotated.copy == "s"
    assert not isinstance(annotated.__dict__["copy"], PendingDecryption)


def test_a_read_error_names_model_field_and_pk():
    patient = Patient.objects.create(ssn="s")
    write_raw(Patient, patient.pk, "ssn", b"left-over plaintext")
    loaded = Patient.objects.get(pk=patient.pk)

    with pytest.raises(DecryptionError, match=rf"testapp\.Patient\.ssn \(pk={patient.pk}\)"):
        loaded.ssn
    with pytest.raises(DecryptionError, match=rf"\(pk={patient.pk}\)"):
        Patient.objects.defer("ssn").get(pk=patient.pk).ssn


def test_saving_an_instance_whose_value_was_never_read_keeps_the_message_without_kms(uncached, kms_calls):
    patient = Patient.objects.create(name="a", ssn="s", notes="n")
    before = stored(Patient, patient.pk, "ssn")
    loaded = Patient.objects.get(pk=patient.pk)
    kms_calls.clear()

    loaded.name = "b"
    loaded.save()

    assert kms_calls == []
    assert stored(Patient, patient.pk, "ssn") == before
    assert Patient.objects.get(pk=patient.pk).ssn == "s"


def test_a_read_value_is_encrypted_again_on_save(uncached):
    patient = Patient.objects.create(ssn="s")
    before = stored(Patient, patient.pk, "ssn")
    loaded = Patient.objects.get(pk=patient.pk)

    loaded.ssn = loaded.ssn + "!"
    loaded.save()

    assert stored(Patient, patient.pk, "ssn") != before
    assert Patient.objects.get(pk=patient.pk).ssn == "s!"


def test_a_loaded_instance_pickles_without_decrypting_and_never_shows_ciphertext(uncached, kms_calls):
    patient = Patient.objects.create(ssn="secret-ssn")
    loaded = Patient.objects.get(pk=patient.pk)
    kms_calls.clear()

    pending = loaded.__dict__["ssn"]
    clone = pickle.loads(pickle.dumps(loaded))

    assert isinstance(pending, PendingDecryption)
    assert repr(pending) == "<PendingDecryption of testapp.Patient.ssn>"
    assert kms_calls == []
    assert clone.ssn == "secret-ssn"


@pytest.mark.parametrize(
    "expression",
    [lambda: Value("SECRET-123"), lambda: Upper(Value("secret")), lambda: F("name")],
    ids=["value", "function", "other-column"],
)
@pytest.mark.django_db(transaction=True)
def test_update_with_an_expression_that_would_store_plaintext_is_refused(expression):
    patient = Patient.objects.create(name="SECRET-NAME", ssn="s")
    before = stored(Patient, patient.pk, "ssn")

    with pytest.raises(EncryptionError, match="without encryption"):
        Patient.objects.filter(pk=patient.pk).update(ssn=expression())

    assert stored(Patient, patient.pk, "ssn") == before


@pytest.mark.django_db(transaction=True)
def test_saving_an_expression_that_would_store_plaintext_is_refused():
    with pytest.raises(EncryptionError, match="without encryption"):
        Patient(ssn=Upper(Value("secret"))).save()
    with pytest.raises(EncryptionError, match="without encryption"):
        Patient.objects.bulk_create([Patient(ssn=Value("secret"))])

    assert Patient.objects.count() == 0


def test_an_expression_that_encrypts_is_accepted():
    field = Patient._meta.get_field("ssn")
    patient = Patient.objects.create(ssn="s")

    Patient.objects.filter(pk=patient.pk).update(ssn=Value("via expression", output_field=field), notes=F("notes"))

    assert b"via expression" not in stored(Patient, patient.pk, "ssn")
    assert Patient.objects.get(pk=patient.pk).ssn == "via expression"

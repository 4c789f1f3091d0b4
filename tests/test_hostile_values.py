"""A seeded fuzz over stored values: every hostile value raises DecryptionError (or KMSRequestError
where KMS refuses the wrapped key), never another exception, never a value, never a hang.

Values are read through the field's ``from_db_value``, the hook Django calls for every loaded row; a
sample also goes through the database and the ORM.
"""

import random
import time

import pytest
from django.db import connection

from django_kms_fields import fastpath
from django_kms_fields.exceptions import DecryptionError, KMSRequestError
from tests.helpers import (
    keyring,
    message_secrets,
    regions_of,
    sdk_message,
    secrets_reachable_from,
    stored,
    write_raw,
)
from tests.testapp.models import Device, Invoice, Patient, Typed

pytestmark = pytest.mark.django_db

SEED = 20261129
FLIPS_PER_REGION = 160
VALUE = "fuzz-target-value-0123456789abcd"  # 32 characters


def hostile_values(message: bytes, others: dict[str, bytes], rng: random.Random):
    regions = regions_of(message)
    for name, region in vars(regions).items():
        for _ in range(FLIPS_PER_REGION):
            position = rng.choice(region)
            flipped = bytearray(message)
            flipped[position] ^= 1 << rng.randrange(8)
            yield f"flip {name}@{position}", bytes(flipped)
    for _ in range(200):
        length = rng.randrange(0, len(message))
        yield f"truncate to {length}", message[:length]
    for _ in range(100):
        yield "extend", message + rng.randbytes(rng.randrange(1, 64))
    for _ in range(100):
        yield "random", rng.randbytes(rng.randrange(0, 600))
    for _ in range(100):
        yield "random after a valid prefix", message[: rng.randrange(3, 200)] + rng.randbytes(rng.randrange(0, 400))
    for _ in range(50):
        yield "legacy plaintext", "".join(rng.choice("0123456789-abcdefXYZ ") for _ in range(rng.randrange(1, 40))).encode()
    for name, other in others.items():
        yield name, other


def test_hostile_stored_values_raise_decryption_error_and_nothing_else(settings, local_kms, keys, kms_calls, monkeypatch):
    rng = random.Random(SEED)
    # The fuzz goes through the fast path (django_kms_fields/fastpath.py), and through its checks.
    fast_path_answers = []
    real_read = fastpath.read

    def recording_read(*args):
        answer = real_read(*args)
        fast_path_answers.append(answer)
        return answer

    monkeypatch.setattr(fastpath, "read", recording_read)
    field = Patient._meta.get_field("ssn")
    patient = Patient.objects.create(ssn=VALUE, notes=VALUE, xray=VALUE.encode())
    invoice = Invoice.objects.create(iban=VALUE)
    message = stored(Patient, patient.pk, "ssn")
    # A message for the same field under a key of no keyring here.
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.stranger], local_kms.endpoint)}
    stranger_patient = Patient.objects.create(ssn=VALUE)
    from_stranger_key = stored(Patient, stranger_patient.pk, "ssn")
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], local_kms.endpoint)}
    others = {
        "another field": stored(Patient, patient.pk, "notes"),
        "another model": stored(Invoice, invoice.pk, "iban"),
        "another keyring": stored(Patient, patient.pk, "xray"),
        "another key": from_stranger_key,
    }

    secrets = message_secrets(message, local_kms, VALUE.encode())
    field.from_db_value(message, None, connection)  # the data key is cached from here on, as in production
    assert fast_path_answers == [VALUE.encode()]
    fast_path_answers.clear()

    outcomes: dict[str, int] = {}
    cases = 0
    slowest, most_kms_calls = 0.0, 0
    for name, value in hostile_values(message, others, rng):
        cases += 1
        kms_calls.clear()
        started = time.monotonic()
        try:
            result = field.from_db_value(value, None, connection)
        except (DecryptionError, KMSRequestError) as err:
            outcomes[type(err).__name__] = outcomes.get(type(err).__name__, 0) + 1
            assert VALUE not in str(err), name
            # No frame the error reaches (traceback, cause, context) holds the plaintext or a key.
            assert secrets_reachable_from(err, secrets) == [], name
        except Exception as err:  # noqa: BLE001 - the point is that nothing else escapes
            pytest.fail(f"{name}: {type(err).__name__} escaped: {err}")
        else:
            # A flip can only be harmless if it changed nothing the SDK authenticates; none is expected.
            pytest.fail(f"{name}: returned {result!r} instead of raising")
        slowest = max(slowest, time.monotonic() - started)
        most_kms_calls = max(most_kms_calls, len(kms_calls))

    assert cases >= 2000
    assert not any(isinstance(answer, bytes) for answer in fast_path_answers)
    # Declined after the data key was obtained, that is by one of the fast path's own checks.
    checked = sum(1 for answer in fast_path_answers if isinstance(answer, fastpath.Declined) and answer.materials_manager.__class__.__name__ == "_ObtainedMaterials")
    assert checked >= 1000, checked
    # Against this KMS every case is caught before or by the data key's own authentication; a real
    # KMS may also refuse an altered wrapped key (KMSRequestError), which the loop above allows.
    assert outcomes == {"DecryptionError": cases}
    # Bounded cost per hostile value: at most one KMS call per key of the keyring, and no value that
    # takes more than a moment (the bound is generous: it catches runaway work, not slowness).
    assert most_kms_calls <= 2
    assert slowest < 5, f"one hostile value took {slowest:.1f}s"


def test_a_sample_of_hostile_values_through_the_database():
    rng = random.Random(SEED + 1)
    patient = Patient.objects.create(ssn=VALUE)
    message = stored(Patient, patient.pk, "ssn")

    for _name, value in list(hostile_values(message, {}, rng))[::80]:
        write_raw(Patient, patient.pk, "ssn", value)
        with pytest.raises((DecryptionError, KMSRequestError)):
            Patient.objects.get(pk=patient.pk).ssn


@pytest.mark.parametrize(
    ("model", "column", "label", "plaintext"),
    [
        # Written for the field by anyone who may encrypt under its key (the SDK, the CLI), or left by
        # a field whose class changed under the same binding: valid messages the field cannot read.
        (Patient, "ssn", "testapp.patient.ssn", b"\xff\xfe not UTF-8: secret-4242"),
        (Typed, "e_integer", "testapp.typed.e_integer", b"secret-4242 is no integer"),
        (Typed, "e_data", "testapp.typed.e_data", b"{secret-4242: no JSON"),
        (Typed, "e_day", "testapp.typed.e_day", b"secret-4242 is no date"),
        # A user's own type (the README's UUID field), whose parser raises ValueError.
        (Device, "serial", "testapp.device.serial", b"secret-4242: 16 bytes? no"),
    ],
)
def test_a_valid_message_the_field_cannot_read_is_a_decryption_error_that_keeps_no_plaintext(
    local_kms, keys, model, column, label, plaintext
):
    row = model.objects.create(ssn="placeholder") if model is Patient else model.objects.create(**{column: None})
    write_raw(model, row.pk, column, sdk_message(local_kms, keys.first, plaintext, {"kms-fields:field": label}))

    with pytest.raises(DecryptionError) as raised:
        getattr(model.objects.get(pk=row.pk), column)

    assert "secret-4242" not in str(raised.value)
    assert f"(pk={row.pk!r})" in str(raised.value)
    # Neither the frames the error passes through nor the decoding error it replaced (whose own
    # attributes and message quote the plaintext) are reachable from it.
    assert secrets_reachable_from(raised.value, [plaintext]) == []
    assert raised.value.__context__ is None and raised.value.__cause__ is None


def test_legacy_plaintext_the_field_cannot_read_is_a_decryption_error_that_keeps_no_plaintext(monkeypatch):
    # A text column moving off plaintext (accept_plaintext=True) that holds bytes which are not UTF-8.
    monkeypatch.setattr(Patient._meta.get_field("notes"), "accept_plaintext", True)
    patient = Patient.objects.create(ssn="placeholder")
    legacy = b"\xff\xfe legacy secret-4242"
    write_raw(Patient, patient.pk, "notes", legacy)

    with pytest.raises(DecryptionError) as raised:
        Patient.objects.get(pk=patient.pk).notes

    assert "secret-4242" not in str(raised.value)
    assert raised.value.__context__ is None
    # A legacy value is the stored column itself, which the instance and its pending value hold as the
    # ORM loaded it; no copy of it made while reading (the decoded plaintext) is reachable.
    reachable = secrets_reachable_from(raised.value, [legacy])
    assert [place for place in reachable if place.endswith((" local stored", " local plaintext"))] == []

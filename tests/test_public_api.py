"""The public surface: import paths, errors that carry data, commands that fail in one line, and a
signal receiver that can never change the outcome of a write."""

import importlib.resources
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_encryption_sdk.streaming_client import StreamDecryptor

from django_kms_fields import fastpath
from django_kms_fields.exceptions import KMSRequestError
from django_kms_fields.signals import kms_call
from tests.helpers import REGION, keyring
from tests.kms import Fault
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db


def test_the_fields_import_from_the_package_and_the_package_is_typed():
    import django_kms_fields
    from django_kms_fields import EncryptedBinaryField, EncryptedField, EncryptedTextField
    from django_kms_fields.fields import EncryptedFieldMixin

    assert Patient._meta.get_field("ssn").__class__ is EncryptedTextField
    assert Patient._meta.get_field("xray").__class__ is EncryptedBinaryField
    assert EncryptedFieldMixin is EncryptedField  # the 0.1 name keeps working
    assert importlib.resources.files(django_kms_fields).joinpath("py.typed").is_file()
    with pytest.raises(AttributeError):
        django_kms_fields.EncryptedNothing  # noqa: B018


def test_a_kms_refusal_carries_operation_key_region_and_code(settings, keys, front):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], front.endpoint, CACHE=None)}
    front.set_fault(Fault(kind="error", error_code="AccessDeniedException", operations=("GenerateDataKey",)))

    with pytest.raises(KMSRequestError) as refused:
        Patient.objects.create(ssn="s")

    error = refused.value
    assert (error.operation, error.key_arn, error.region, error.code) == (
        "GenerateDataKey", keys.first, REGION, "AccessDeniedException",
    )
    assert str(error).startswith("testapp.Patient.ssn: KMS GenerateDataKey with key")


def test_a_receiver_that_raises_changes_no_outcome_and_is_logged(caplog):
    def broken_receiver(sender, **kwargs):
        raise RuntimeError("receiver bug holding 219-09-9999")

    kms_call.connect(broken_receiver, weak=False, dispatch_uid="tests.broken_receiver")
    try:
        with caplog.at_level(logging.ERROR, logger="django_kms_fields"):
            patient = Patient.objects.create(ssn="219-09-9999")
    finally:
        kms_call.disconnect(dispatch_uid="tests.broken_receiver")

    assert Patient.objects.get(pk=patient.pk).ssn == "219-09-9999"
    ours = [r.getMessage() for r in caplog.records if r.name == "django_kms_fields"]
    assert any("receiver" in m and "raised RuntimeError" in m and "succeeded" in m for m in ours), ours
    # What the receiver's exception says is its own business (Django logs it too): we log its type only.
    assert all("219-09-9999" not in m for m in ours)


@pytest.mark.parametrize("where", ["fast path", "SDK"])
def test_a_bug_inside_decryption_is_not_reported_as_a_tampered_value(monkeypatch, where):
    patient = Patient.objects.create(ssn="s")
    loaded = Patient.objects.get(pk=patient.pk)

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug, or an SDK upgrade")

    if where == "fast path":
        monkeypatch.setattr(fastpath, "_read_frames", bug)
    else:
        monkeypatch.setattr(fastpath, "ENABLED", False)
        monkeypatch.setattr(StreamDecryptor, "read", bug)
    with pytest.raises(ZeroDivisionError):
        loaded.ssn
    monkeypatch.undo()
    assert Patient.objects.get(pk=patient.pk).ssn == "s"


@pytest.mark.parametrize("shard", ["2/2", "1/0", "abc"])
def test_a_bad_shard_on_the_command_line_is_one_line_not_a_traceback(shard):
    # Through manage.py, as an operator runs it: argparse's own usage error, exit status 2.
    done = subprocess.run(
        [sys.executable, "-m", "django", "kms_fields_reencrypt", "testapp.Patient.ssn", f"--shard={shard}"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "kms_fields_reencrypt: error: argument --shard: " in done.stderr.strip().splitlines()[-1]

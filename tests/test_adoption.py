"""Adopting the fields in an existing project: the small things a user trips on."""

import io

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils.translation import gettext_lazy

from django_kms_fields.exceptions import EncryptionError
from tests.helpers import keyring
from tests.testapp.models import LegacyRecord, Patient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", [b"raw", ["a"], 7, {"k": "v"}], ids=["bytes", "list", "int", "dict"])
@pytest.mark.django_db(transaction=True)
def test_a_text_field_refuses_anything_but_text(value, kms_calls):
    with pytest.raises(EncryptionError, match=rf"testapp\.Patient\.ssn takes text \(str\), not {type(value).__name__}"):
        Patient.objects.create(ssn=value)
    assert Patient.objects.count() == 0
    assert kms_calls == []


def test_a_lazy_translation_is_text():
    patient = Patient.objects.create(ssn=gettext_lazy("not a secret, but text"))
    assert Patient.objects.get(pk=patient.pk).ssn == "not a secret, but text"


@pytest.mark.parametrize("option", [{"keyring": "archive"}, {"binding": "testapp.patient.old_ssn"}, {"accept_plaintext": True}])
@pytest.mark.django_db(transaction=True)
def test_changing_only_how_values_are_encrypted_alters_nothing_in_the_database(option):
    old = Patient._meta.get_field("ssn")
    name, path, args, kwargs = old.deconstruct()
    new = type(old)(*args, **{**kwargs, **option})
    new.set_attributes_from_name(name)
    new.model = Patient

    with connection.schema_editor(collect_sql=True) as editor:
        editor.alter_field(Patient, old, new)

    assert editor.collected_sql == []


def test_a_missing_profile_is_named_as_missing_by_the_deploy_check(settings, keys, local_kms):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], local_kms.endpoint, PROFILE_NAME="nope")}
    out = io.StringIO()

    with pytest.raises(CommandError, match="PROFILE_NAME='nope' names an AWS profile that does not exist"):
        call_command("kms_fields_check", "--keyring", "default", stdout=out)


def test_accept_plaintext_is_a_deploy_warning_for_each_field_that_has_it():
    deploy = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    plain = checks.run_checks(tags=[checks.Tags.security])

    warnings = [m for m in deploy if m.id == "kms_fields.W002"]
    assert [w.obj for w in warnings] == [LegacyRecord._meta.get_field("scan")]
    assert "accept_plaintext=True" in warnings[0].msg
    assert not [m for m in plain if m.id == "kms_fields.W002"]

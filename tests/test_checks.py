"""System checks catch every configuration mistake before the first request does."""

import logging

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import models
from django.test.utils import isolate_apps

from django_kms_fields.checks import check_botocore_logging, check_settings
from django_kms_fields.fields import EncryptedBinaryField, EncryptedTextField

ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_REGION_ARN = "arn:aws:kms:us-east-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"


def ids(settings, kms_fields):
    settings.KMS_FIELDS = kms_fields
    return [error.id for error in check_settings()]


def test_a_valid_configuration_passes(settings):
    assert ids(settings, {"default": {"KEY_ARNS": [ARN, OTHER_REGION_ARN], "CLIENT_CONFIG": {"max_pool_connections": 20}}}) == []
    assert ids(settings, {"default": {"KEY_ARNS": [ARN], "CACHE": None, "BREAKER_THRESHOLD": None}}) == []
    assert ids(settings, {"default": {"KEY_ARNS": [ARN], "CACHE": {"MAX_AGE": 60}, "BREAKER_COOLDOWN": 0.5}}) == []
    assert ids(settings, {"default": {
        "KEY_ARNS": [ARN], "DECRYPT_KEY_ARNS": [ARN.replace("1234abcd", "9999abcd")],
        "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws"},
    }}) == []


@pytest.mark.parametrize("value", [None, {}, "default", [ARN]])
def test_missing_or_empty_setting(settings, value):
    assert ids(settings, value) == ["kms_fields.E001"]


def test_missing_setting_entirely(settings):
    del settings.KMS_FIELDS
    assert [e.id for e in check_settings()] == ["kms_fields.E001"]


def test_missing_default_keyring(settings):
    assert ids(settings, {"archive": {"KEY_ARNS": [ARN]}}) == ["kms_fields.E002"]


@pytest.mark.parametrize(
    ("keyring", "expected"),
    [
        ([ARN], "kms_fields.E003"),
        ({"KEY_ARNS": [ARN], "READ_TIMEOUTS": 3}, "kms_fields.E004"),
        ({}, "kms_fields.E005"),
        ({"KEY_ARNS": []}, "kms_fields.E005"),
        ({"KEY_ARNS": ARN}, "kms_fields.E005"),
        ({"KEY_ARNS": [ARN, ARN]}, "kms_fields.E024"),
        ({"KEY_ARNS": ["1234abcd-12ab-34cd-56ef-1234567890ab"]}, "kms_fields.E006"),
        ({"KEY_ARNS": ["arn:aws:kms:eu-west-1:111122223333:alias/app"]}, "kms_fields.E006"),
        ({"KEY_ARNS": [[ARN]]}, "kms_fields.E006"),
        ({"KEY_ARNS": [ARN], "BREAKER_THRESHOLD": 0}, "kms_fields.E017"),
        ({"KEY_ARNS": [ARN], "BREAKER_COOLDOWN": 0}, "kms_fields.E018"),
        ({"KEY_ARNS": [ARN], "CACHE": "on"}, "kms_fields.E019"),
        ({"KEY_ARNS": [ARN], "CACHE": {"MAX_AGE": 0}}, "kms_fields.E028"),
        ({"KEY_ARNS": [ARN], "CACHE": {"MAX_MESSAGES": 2**32 + 1}}, "kms_fields.E028"),
        ({"KEY_ARNS": [ARN], "CACHE": {"CAPACITY": 0}}, "kms_fields.E028"),
        ({"KEY_ARNS": [ARN], "CACHE": {"TTL": 5}}, "kms_fields.E019"),
        ({"KEY_ARNS": [ARN], "DECRYPT_KEY_ARNS": "old"}, "kms_fields.E022"),
        ({"KEY_ARNS": [ARN], "DECRYPT_KEY_ARNS": ["not-an-arn"]}, "kms_fields.E022"),
        ({"KEY_ARNS": [ARN], "DECRYPT_KEY_ARNS": [ARN]}, "kms_fields.E029"),
        ({"KEY_ARNS": [ARN], "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"]}}, "kms_fields.E023"),
        ({"KEY_ARNS": [ARN], "DISCOVERY": {"ACCOUNT_IDS": [], "PARTITION": "aws"}}, "kms_fields.E023"),
        ({"KEY_ARNS": [ARN], "DISCOVERY": {"ACCOUNT_IDS": ["12"], "PARTITION": "aws"}}, "kms_fields.E023"),
        ({"KEY_ARNS": [ARN], "REGION_NAME": "us-east-1"}, "kms_fields.E025"),
        ({"KEY_ARNS": [ARN], "REGION_NAME": ""}, "kms_fields.E007"),
        ({"KEY_ARNS": [ARN, OTHER_REGION_ARN], "ENDPOINT_URL": "https://kms.example"}, "kms_fields.E008"),
        ({"KEY_ARNS": [ARN], "CONNECT_TIMEOUT": 0}, "kms_fields.E009"),
        ({"KEY_ARNS": [ARN], "READ_TIMEOUT": -1}, "kms_fields.E009"),
        ({"KEY_ARNS": [ARN], "READ_TIMEOUT": "5"}, "kms_fields.E009"),
        ({"KEY_ARNS": [ARN], "MAX_ATTEMPTS": 0}, "kms_fields.E010"),
        ({"KEY_ARNS": [ARN], "MAX_ATTEMPTS": 2.5}, "kms_fields.E010"),
        ({"KEY_ARNS": [ARN], "MAX_ATTEMPTS": True}, "kms_fields.E010"),
        ({"KEY_ARNS": [ARN], "RETRY_MODE": "aggressive"}, "kms_fields.E011"),
        ({"KEY_ARNS": [ARN], "ALGORITHM": "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"}, "kms_fields.E012"),
        ({"KEY_ARNS": [ARN], "ENCRYPTION_CONTEXT": {"tenant": 7}}, "kms_fields.E013"),
        ({"KEY_ARNS": [ARN], "ENCRYPTION_CONTEXT": {"aws-crypto-public-key": "x"}}, "kms_fields.E026"),
        ({"KEY_ARNS": [ARN], "ENCRYPTION_CONTEXT": {"kms-fields:field": "x"}}, "kms_fields.E026"),
        ({"KEY_ARNS": [ARN], "CLIENT_CONFIG": {"read_timeout": 3}}, "kms_fields.E027"),
        ({"KEY_ARNS": [ARN], "CLIENT_CONFIG": {"retries": {"max_attempts": 3}}}, "kms_fields.E027"),
        ({"KEY_ARNS": [ARN], "CLIENT_CONFIG": {"no_such_option": 1}}, "kms_fields.E014"),
        ({"KEY_ARNS": [ARN], "CLIENT_CONFIG": "proxies"}, "kms_fields.E014"),
        ({"KEY_ARNS": [ARN], "PROFILE_NAME": 3}, "kms_fields.E015"),
        ({"KEY_ARNS": [ARN], "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws", "REGIONS": []}}, "kms_fields.E023"),
        ({"KEY_ARNS": [ARN], "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws", "REGIONS": ["mars"]}}, "kms_fields.E023"),
        ({"KEY_ARNS": [ARN], "MAX_MESSAGE_BYTES": 100}, "kms_fields.E030"),
        ({"KEY_ARNS": [ARN], "MAX_MESSAGE_BYTES": "16MB"}, "kms_fields.E030"),
        ({"KEY_ARNS": [ARN], "REQUIRE_ALGORITHM": "yes"}, "kms_fields.E031"),
        ({"KEY_ARNS": [ARN], "ENDPOINT_URL": "kms.local:4566"}, "kms_fields.E016"),
    ],
)
def test_each_keyring_mistake_has_its_own_check(settings, keyring, expected):
    assert ids(settings, {"default": keyring}) == [expected]



def test_a_check_error_says_where_and_how_to_fix(settings):
    settings.KMS_FIELDS = {"default": {"KEY_ARNS": [ARN], "MAX_ATTEMPTS": 0}}

    assert check_settings() == [
        checks.Error(
            "KMS_FIELDS['default']['MAX_ATTEMPTS'] must be a whole number of at least 1, not 0.",
            hint="MAX_ATTEMPTS counts every attempt, the first included: 1 means no retry.",
            id="kms_fields.E010",
        )
    ]


def test_several_mistakes_are_all_reported(settings):
    assert ids(settings, {"default": {"KEY_ARNS": [ARN], "MAX_ATTEMPTS": 0, "RETRY_MODE": "x"}, "archive": {}}) == [
        "kms_fields.E010",
        "kms_fields.E011",
        "kms_fields.E005",
    ]


@pytest.mark.django_db(databases=["default", "other"])  # JSONField's check asks each database about JSON
def test_manage_py_check_fails_on_a_broken_setting(settings):
    settings.KMS_FIELDS = {"default": {"KEY_ARNS": ["not-an-arn"]}}

    with pytest.raises(SystemCheckError, match="kms_fields.E006"):
        call_command("check")


@pytest.mark.django_db(databases=["default", "other"])
def test_manage_py_check_passes_on_the_test_settings(capsys):
    call_command("check")
    assert "no issues" in capsys.readouterr().out


def test_the_first_use_of_a_broken_keyring_raises_the_check_text(settings):
    from django_kms_fields.conf import get_keyring
    from django_kms_fields.exceptions import KMSFieldsConfigurationError

    settings.KMS_FIELDS = {"default": {"KEY_ARNS": [ARN], "RETRY_MODE": "aggressive"}}

    with pytest.raises(KMSFieldsConfigurationError, match=r"RETRY_MODE.*\(kms_fields.E011\)"):
        get_keyring("default")
    with pytest.raises(KMSFieldsConfigurationError, match="no keyring 'missing'"):
        get_keyring("missing")


# --- field checks --------------------------------------------------------------------------------------


def field_check_ids(field):
    # A throwaway model per call, in a registry of its own: the project's app registry never sees it.
    with isolate_apps("tests.testapp"):

        class Model(models.Model):
            value = field

            class Meta:
                app_label = "testapp"

        return [error.id for error in Model._meta.get_field("value").check()]


def test_two_fields_with_one_binding_can_read_each_others_values_so_both_are_errors():
    with isolate_apps("tests.testapp"):

        class Model(models.Model):
            first = EncryptedTextField(binding="testapp.shared")
            second = EncryptedTextField(binding="testapp.shared")
            third = EncryptedTextField()

            class Meta:
                app_label = "testapp"

        errors = {name: Model._meta.get_field(name).check() for name in ("first", "second", "third")}

    assert [e.id for e in errors["first"]] == ["kms_fields.E032"]
    assert errors["first"][0].msg == "binding 'testapp.shared' is also the binding of testapp.Model.second."
    assert [e.id for e in errors["second"]] == ["kms_fields.E032"]
    assert errors["third"] == []


def model_check_ids(meta_options=None, **field_options):
    with isolate_apps("tests.testapp"):
        meta = type("Meta", (), {"app_label": "testapp", **(meta_options or {})})
        Model = type("Model", (models.Model,), {
            "__module__": __name__, "Meta": meta, "name": models.CharField(max_length=10),
            "secret": EncryptedTextField(**field_options),
        })
        return [error.id for error in Model._meta.get_field("secret").check()]


@pytest.mark.parametrize(
    ("meta_options", "expected"),
    [
        ({"indexes": [models.Index(fields=["secret"], name="i_secret")]}, ["kms_fields.E033"]),
        ({"indexes": [models.Index(models.functions.Upper("secret"), name="i_upper")]}, ["kms_fields.E033"]),
        ({"constraints": [models.UniqueConstraint(fields=["name", "secret"], name="u_secret")]}, ["kms_fields.E033"]),
        ({"constraints": [models.CheckConstraint(condition=models.Q(secret__gt="a"), name="c_secret")]}, ["kms_fields.E033"]),
        ({"unique_together": [("name", "secret")]}, ["kms_fields.E033"]),
        ({"ordering": ["-secret"]}, ["kms_fields.E034"]),
        ({"ordering": [models.F("secret").asc()]}, ["kms_fields.E034"]),
        # What the database can answer for ciphertext stays allowed.
        ({"constraints": [models.CheckConstraint(condition=models.Q(secret__isnull=False), name="c_null")]}, []),
        ({"indexes": [models.Index(fields=["name"], name="i_name")], "ordering": ["name"]}, []),
    ],
)
def test_model_options_that_compare_or_sort_ciphertext_are_errors(meta_options, expected):
    assert model_check_ids(meta_options) == expected


@pytest.mark.django_db(transaction=True)
def test_a_db_default_is_an_error_and_never_reaches_the_database(kms_calls):
    from django.db import connection

    assert model_check_ids(db_default="shared") == ["kms_fields.E035"]
    with isolate_apps("tests.testapp"):
        class Unshared(models.Model):
            secret = EncryptedTextField(db_default="shared")

            class Meta:
                app_label = "testapp"

        with connection.schema_editor(collect_sql=True) as editor:
            editor.create_model(Unshared)
    secret_column = " ".join(editor.collected_sql).upper().split("SECRET", 1)[1]
    assert "DEFAULT" not in secret_column
    assert kms_calls == []


def test_a_field_naming_an_unknown_keyring():
    assert field_check_ids(EncryptedTextField(keyring="arhcive")) == ["kms_fields.E020"]


@pytest.mark.parametrize("options", [{"unique": True}, {"db_index": True}])
def test_encrypted_fields_cannot_be_indexed_or_unique(options):
    assert field_check_ids(EncryptedTextField(**options)) == ["kms_fields.E021"]


def test_an_encrypted_field_cannot_be_the_primary_key():
    assert "kms_fields.E021" in field_check_ids(EncryptedBinaryField(primary_key=True))


def test_a_well_formed_field_passes():
    assert field_check_ids(EncryptedTextField(keyring="archive", null=True)) == []


# --- logging -------------------------------------------------------------------------------------------


@pytest.fixture
def botocore_level():
    logger = logging.getLogger("botocore")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_botocore_at_debug_is_a_warning(botocore_level):
    botocore_level.setLevel(logging.DEBUG)

    warnings = check_botocore_logging()

    assert [w.id for w in warnings] == ["kms_fields.W001"]
    assert isinstance(warnings[0], checks.Warning)


def test_botocore_at_info_is_fine(botocore_level):
    botocore_level.setLevel(logging.INFO)
    assert check_botocore_logging() == []

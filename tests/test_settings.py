"""KMS_FIELDS drives the clients the SDK uses, and a change takes effect on the next operation."""

import boto3
import botocore
import pytest
from django.db import transaction

from django_kms_fields import conf
from django_kms_fields.clients import kms_client
from django_kms_fields.exceptions import KMSFieldsConfigurationError, KMSUnavailableError
from tests.helpers import keyring
from tests.kms import closed_port_endpoint
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db


def test_defaults_are_filled_in(settings, keys):
    settings.KMS_FIELDS = {"default": {"KEY_ARNS": [keys.first]}}

    config = conf.get_keyring("default")

    assert (config.connect_timeout, config.read_timeout, config.max_attempts, config.retry_mode) == (5, 8, 3, "standard")
    assert config.algorithm == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
    assert (config.breaker_threshold, config.breaker_cooldown) == (5, 30)
    assert (config.cache.max_age, config.cache.max_messages, config.cache.capacity) == (300, 1000, 1000)
    assert config.endpoint_url is None and config.region_name is None
    assert dict(config.encryption_context) == {}


def test_the_client_is_built_from_the_keyring(settings, keys, local_kms):
    settings.KMS_FIELDS = {
        "default": keyring(
            [keys.first], local_kms.endpoint, CONNECT_TIMEOUT=1.5, READ_TIMEOUT=2.5, MAX_ATTEMPTS=4,
            RETRY_MODE="adaptive", CLIENT_CONFIG={"max_pool_connections": 31, "user_agent_extra": "clinic/1"},
        )
    }
    keyring_config = conf.get_keyring("default")

    client = kms_client(keyring_config, "eu-west-1")

    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 2.5)
    assert config.retries == {"total_max_attempts": 4, "mode": "adaptive"}
    assert config.max_pool_connections == 31
    assert config.user_agent_extra == "clinic/1"
    assert client.meta.endpoint_url == local_kms.endpoint
    assert client.meta.region_name == "eu-west-1"
    assert kms_client(keyring_config, "eu-west-1") is client


def test_each_key_is_used_in_the_region_of_its_arn(settings, local_kms, kms_calls, monkeypatch):
    # No ENDPOINT_URL: botocore's own per-service endpoint variable points both regions at moto.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", local_kms.endpoint)
    ireland, virginia = local_kms.create_key("eu-west-1"), local_kms.create_key("us-east-1")
    settings.KMS_FIELDS = {"default": {"KEY_ARNS": [ireland, virginia]}, "archive": {"KEY_ARNS": [ireland]}}

    patient = Patient.objects.create(ssn="s")
    settings.KMS_FIELDS = {"default": {"KEY_ARNS": [virginia]}, "archive": {"KEY_ARNS": [ireland]}}

    assert Patient.objects.get(pk=patient.pk).ssn == "s"
    assert [(c["operation"], c["region"]) for c in kms_calls] == [
        ("GenerateDataKey", "eu-west-1"),
        ("Encrypt", "us-east-1"),
        ("Decrypt", "us-east-1"),
    ]


def test_a_settings_change_takes_effect_on_the_next_operation(settings, keys, local_kms):
    patient = Patient.objects.create(ssn="s")
    working = settings.KMS_FIELDS

    settings.KMS_FIELDS = {**working, "default": keyring([keys.first, keys.second], closed_port_endpoint(), MAX_ATTEMPTS=1)}
    with pytest.raises(KMSUnavailableError):
        Patient.objects.get(pk=patient.pk).ssn

    settings.KMS_FIELDS = working
    assert Patient.objects.get(pk=patient.pk).ssn == "s"


def test_an_unknown_profile_is_a_configuration_error_until_the_profile_exists(settings, keys, local_kms, monkeypatch, tmp_path):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], local_kms.endpoint, PROFILE_NAME="nope")}

    with pytest.raises(KMSFieldsConfigurationError, match="profile 'nope'"), transaction.atomic():
        Patient.objects.create(ssn="s")

    # Created afterwards, with no settings change: the next operation finds it.
    config_file = tmp_path / "config"
    config_file.write_text("[profile nope]\nregion = eu-west-1\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    assert Patient.objects.get(pk=Patient.objects.create(ssn="s").pk).ssn == "s"


def test_kms_sees_the_user_agent_of_a_boto3_client(settings, keys, front):
    # CloudTrail records it, and IAM conditions and alerts may test it (aws:UserAgent).
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], front.endpoint, CACHE=None)}

    Patient.objects.create(ssn="s")

    assert front.stats.user_agents
    for user_agent in front.stats.user_agents:
        assert user_agent.startswith(f"Boto3/{boto3.__version__} ") and f"Botocore/{botocore.__version__}" in user_agent


def test_a_field_on_an_unconfigured_keyring_raises_a_configuration_error(settings, keys, local_kms):
    settings.KMS_FIELDS = {"default": keyring([keys.first], local_kms.endpoint)}

    with pytest.raises(KMSFieldsConfigurationError, match="no keyring 'archive'"):
        Patient.objects.create(ssn="s", xray=b"x")


def test_a_thread_holding_the_old_settings_cannot_leave_a_stale_client_behind(settings, keys, local_kms):
    old_keyring = conf.get_keyring("default")
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], local_kms.endpoint, READ_TIMEOUT=3.5)}

    stale = kms_client(old_keyring, "eu-west-1")  # a thread that read the settings just before the change
    current = kms_client(conf.get_keyring("default"), "eu-west-1")

    assert stale is not current
    assert current.meta.config.read_timeout == 3.5
    assert kms_client(conf.get_keyring("default"), "eu-west-1") is current

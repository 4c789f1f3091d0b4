"""Logs and signals carry what operators need and never a secret."""

import base64
import logging

import pytest

from django_kms_fields.checks import check_botocore_logging
from tests.helpers import keyring
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db

CANARY = "canary-7f3a9c-do-not-log"


def captured_text(caplog):
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


def secret_forms(data_key_b64):
    raw = base64.b64decode(data_key_b64)
    return [data_key_b64, raw.hex(), repr(raw)[2:-1]]


@pytest.fixture
def everything_at_debug_but_botocore(caplog):
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.WARNING if logger.name.startswith("botocore") else logging.DEBUG)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    yield caplog
    for logger, level in levels.items():
        logger.setLevel(level)


def test_a_save_and_load_cycle_logs_neither_the_value_nor_the_data_key(
    settings, keys, front, everything_at_debug_but_botocore
):
    caplog = everything_at_debug_but_botocore
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first, keys.second], front.endpoint)}

    patient = Patient.objects.create(ssn=CANARY, notes=CANARY)
    assert Patient.objects.get(pk=patient.pk).ssn == CANARY
    Patient.objects.filter(pk=patient.pk).update(ssn=CANARY + "2")
    patient.refresh_from_db()

    text = captured_text(caplog)
    assert front.stats.data_keys, "the front saw no data key: the test would prove nothing"
    assert CANARY not in text
    for data_key in front.stats.data_keys:
        for form in secret_forms(data_key):
            assert form not in text
    # One record per KMS call, with what an operator needs.
    ours = [r.getMessage() for r in caplog.records if r.name == "django_kms_fields"]
    assert len(ours) == front.stats.total
    assert all("duration_ms=" in m and "outcome=ok" in m and "attempts=1" in m for m in ours)
    assert any(keys.first in m and "GenerateDataKey" in m and "region=eu-west-1" in m for m in ours)


def test_botocore_at_debug_would_leak_the_data_key_and_the_check_says_so(settings, keys, front, caplog):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], front.endpoint)}
    caplog.set_level(logging.DEBUG, logger="botocore")
    try:
        Patient.objects.create(ssn=CANARY)

        assert [w.id for w in check_botocore_logging()] == ["kms_fields.W001"]
    finally:
        logging.getLogger("botocore").setLevel(logging.NOTSET)

    text = captured_text(caplog)
    assert any(data_key in text for data_key in front.stats.data_keys)
    assert check_botocore_logging() == []

"""Data-key caching: KMS calls per N values, per field, per period, across threads and outages."""

import io
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_encryption_sdk.caches import build_decryption_materials_cache_key, build_encryption_materials_cache_key
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.materials_managers import DecryptionMaterialsRequest, EncryptionMaterialsRequest
from django.db import connections

from django_kms_fields import conf, crypto, fastpath
from django_kms_fields.exceptions import KMSUnavailableError
from tests.helpers import keyring, regions_of, stored
from tests.kms import Fault
from tests.testapp.models import Invoice, Patient

pytestmark = pytest.mark.django_db


def wrapped_data_keys(message):
    """The encrypted data keys of a message: equal for messages that share a data key."""
    region = regions_of(message).data_keys
    return message[region.start : region.stop]


def calls(kms_calls, operation):
    return sum(1 for c in kms_calls if c["operation"] == operation)


def use_cache(settings, endpoint, keys, **cache):
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": keyring([keys.first, keys.second], endpoint, CACHE=cache),
    }


@pytest.fixture(params=["fast path", "SDK streams"])
def message_path(request, monkeypatch):
    """Runs a test with the fast path on and off: the cache must count the same either way."""
    monkeypatch.setattr(fastpath, "ENABLED", request.param == "fast path")
    return request.param


@pytest.mark.parametrize(("saves", "max_messages"), [(25, 10), (30, 10), (7, 1000), (5, 1)])
def test_n_saves_make_one_data_key_per_max_messages(settings, local_kms, keys, kms_calls, saves, max_messages, message_path):
    use_cache(settings, local_kms.endpoint, keys, MAX_MESSAGES=max_messages)

    patients = [Patient.objects.create(ssn=f"v{i}") for i in range(saves)]

    expected = math.ceil(saves / max_messages)
    assert calls(kms_calls, "GenerateDataKey") == expected
    assert calls(kms_calls, "Encrypt") == expected  # the second key wraps each data key once
    assert len({wrapped_data_keys(stored(Patient, p.pk, "ssn")) for p in patients}) == expected


def test_reading_rows_makes_one_decrypt_call_per_distinct_data_key(settings, local_kms, keys, kms_calls, message_path):
    use_cache(settings, local_kms.endpoint, keys, MAX_MESSAGES=10)
    for i in range(25):
        Patient.objects.create(ssn=f"v{i}")
    use_cache(settings, local_kms.endpoint, keys, MAX_MESSAGES=10)  # a fresh, empty cache
    kms_calls.clear()

    assert sorted(p.ssn for p in Patient.objects.all()) == sorted(f"v{i}" for i in range(25))
    assert calls(kms_calls, "Decrypt") == 3


def test_the_cache_is_per_field_because_the_context_is(settings, local_kms, keys, kms_calls):
    use_cache(settings, local_kms.endpoint, keys)

    for i in range(5):
        Patient.objects.create(ssn=f"s{i}", notes=f"n{i}")
        Invoice.objects.create(iban=f"i{i}")

    assert calls(kms_calls, "GenerateDataKey") == 3


def test_a_data_key_is_not_used_past_max_age(settings, local_kms, keys, kms_calls, message_path):
    use_cache(settings, local_kms.endpoint, keys, MAX_AGE=0.2)
    Patient.objects.create(ssn="a")
    Patient.objects.create(ssn="b")
    time.sleep(0.3)
    Patient.objects.create(ssn="c")

    assert calls(kms_calls, "GenerateDataKey") == 2


def test_a_settings_change_empties_the_cache(settings, local_kms, keys, kms_calls):
    use_cache(settings, local_kms.endpoint, keys)
    patient = Patient.objects.create(ssn="a")
    Patient.objects.get(pk=patient.pk).ssn

    use_cache(settings, local_kms.endpoint, keys)
    Patient.objects.create(ssn="b")
    Patient.objects.get(pk=patient.pk).ssn

    assert calls(kms_calls, "GenerateDataKey") == 2
    assert calls(kms_calls, "Decrypt") == 2


def test_without_a_cache_every_value_calls_kms(settings, local_kms, keys, kms_calls, message_path):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.first], local_kms.endpoint, CACHE=None)}
    for i in range(4):
        Patient.objects.create(ssn=f"v{i}")
    list(p.ssn for p in Patient.objects.all())

    assert (calls(kms_calls, "GenerateDataKey"), calls(kms_calls, "Decrypt")) == (4, 4)


@pytest.mark.django_db(transaction=True)
def test_threads_share_one_cache(settings, local_kms, keys, kms_calls):
    use_cache(settings, local_kms.endpoint, keys, MAX_MESSAGES=1000)
    threads, saves = 8, 10

    def work(worker):
        try:
            return [Patient.objects.create(ssn=f"{worker}-{i}").pk for i in range(saves)]
        finally:
            connections.close_all()

    # One thread fills the cache first, so no two threads can miss an empty cache at the same moment.
    with ThreadPoolExecutor(1) as pool:
        pks = pool.submit(work, 0).result(timeout=120)
    assert calls(kms_calls, "GenerateDataKey") == 1
    start = threading.Barrier(threads - 1)

    def work_together(worker):
        start.wait(timeout=30)
        return work(worker)

    with ThreadPoolExecutor(threads - 1) as pool:
        pks += [pk for done in pool.map(work_together, range(1, threads), timeout=120) for pk in done]

    assert Counter(c["operation"] for c in kms_calls) == {"GenerateDataKey": 1, "Encrypt": 1}
    assert len(pks) == Patient.objects.count() == threads * saves
    assert len({wrapped_data_keys(stored(Patient, pk, "ssn")) for pk in pks}) == 1


@pytest.mark.django_db(transaction=True)
def test_cached_work_goes_on_while_kms_is_down_and_the_breaker_is_open(settings, keys, front):
    use_cache(settings, front.endpoint, keys, MAX_MESSAGES=1000)
    settings.KMS_FIELDS["default"].update(BREAKER_THRESHOLD=1)
    settings.KMS_FIELDS = dict(settings.KMS_FIELDS)
    existing = [Patient.objects.create(ssn=f"before-{i}") for i in range(3)]
    assert [Patient.objects.get(pk=p.pk).ssn for p in existing] == ["before-0", "before-1", "before-2"]
    # KMS refuses every connection: an outage whose failures come at once, so no short READ_TIMEOUT is
    # needed (one timed out on a loaded CI machine before any fault was set).
    front.set_fault(Fault(kind="reset"))

    # Reads and writes whose data key is cached need no KMS call...
    assert [Patient.objects.get(pk=p.pk).ssn for p in existing] == ["before-0", "before-1", "before-2"]
    Patient.objects.create(ssn="during-outage")
    assert front.stats.total == 0
    # ...while a value that needs a new data key fails: a new field opens the breaker, then fails fast.
    with pytest.raises(KMSUnavailableError):
        Patient.objects.create(ssn="x", notes="a field with no cached key yet")
    with pytest.raises(KMSUnavailableError, match="suspended"):
        Patient.objects.create(ssn="y", notes="again")
    assert Patient.objects.filter(ssn__isnull=False).count() == 4


def test_the_remembered_cache_keys_are_the_ones_the_sdk_computes(settings, local_kms, keys):
    use_cache(settings, local_kms.endpoint, keys)
    patient = Patient.objects.create(ssn="a")
    assert Patient.objects.get(pk=patient.pk).ssn == "a"
    keyring = conf.get_keyring("default")
    _sdk, manager = crypto._sdk_objects(keyring)
    context = crypto.encryption_context_for(keyring, Patient._meta.get_field("ssn").field_binding())
    message = stored(Patient, patient.pk, "ssn")
    header, _raw = deserialize_header(io.BytesIO(message), 10)
    encrypting = EncryptionMaterialsRequest(encryption_context=context, frame_length=4096, algorithm=fastpath.SUITE,
                                            commitment_policy=fastpath.COMMITMENT_POLICY)
    decrypting = DecryptionMaterialsRequest(encrypted_data_keys=header.encrypted_data_keys, algorithm=header.algorithm,
                                            encryption_context=header.encryption_context,
                                            commitment_policy=fastpath.COMMITMENT_POLICY)

    assert list(manager._encryption_keys.values()) == [
        build_encryption_materials_cache_key(partition=manager.partition_name, request=encrypting)
    ]
    assert list(manager._decryption_keys.values()) == [
        build_decryption_materials_cache_key(partition=manager.partition_name, request=decrypting)
    ]

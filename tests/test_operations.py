"""Key rotation, multi-Region and discovery decryption, leaving plaintext behind, and the deploy check."""

import io
import re
import logging
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader

from django_kms_fields import crypto
from django_kms_fields.exceptions import DecryptionError, KMSRequestError
from django_kms_fields.rewrite import copy_plaintext_column
from django_kms_fields.signals import kms_call
from tests.helpers import keyring, stored, write_raw
from tests.kms import Fault, closed_port_endpoint
from tests.testapp.models import LegacyRecord, Patient

pytestmark = pytest.mark.django_db(transaction=True)


def default_keyring(settings, endpoint, key_arns, **options):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring(key_arns, endpoint, **options)}


def wrapping(model, pk, column):
    return crypto.wrapping_key_arns(stored(model, pk, column))


def reencrypt(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command("kms_fields_reencrypt", *args, stdout=out, stderr=err, **options)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def rotated(settings, local_kms, keys):
    """Twelve patients written under the first key, then KEY_ARNS rotated to the second."""
    default_keyring(settings, local_kms.endpoint, [keys.first])
    patients = [Patient.objects.create(name=f"p{i:02}", ssn=f"ssn-{i}", notes=f"note-{i}") for i in range(12)]
    default_keyring(settings, local_kms.endpoint, [keys.second], DECRYPT_KEY_ARNS=[keys.first])
    return patients


# --- rotation ------------------------------------------------------------------------------------------


def test_decrypt_only_keys_read_old_values_but_never_wrap_new_ones(rotated, keys):
    assert Patient.objects.get(pk=rotated[0].pk).ssn == "ssn-0"

    fresh = Patient.objects.create(ssn="new")

    assert wrapping(Patient, fresh.pk, "ssn") == {keys.second}
    assert wrapping(Patient, rotated[0].pk, "ssn") == {keys.first}


def test_reencrypt_moves_every_value_to_the_new_key_and_the_old_key_is_no_longer_needed(
    settings, local_kms, keys, rotated
):
    output = reencrypt("testapp.Patient", batch_size=5)

    assert "testapp.Patient.ssn: scanned 12, rewritten 12" in output
    assert "testapp.Patient.notes: scanned 12, rewritten 12" in output
    for column in ("ssn", "notes"):
        assert {p.pk: wrapping(Patient, p.pk, column) for p in rotated} == {p.pk: {keys.second} for p in rotated}
    default_keyring(settings, local_kms.endpoint, [keys.second])  # the old key is gone
    assert sorted(Patient.objects.values_list("ssn", flat=True)) == sorted(f"ssn-{i}" for i in range(12))


def test_reencrypt_is_idempotent(rotated):
    reencrypt("testapp.Patient.ssn")

    output = reencrypt("testapp.Patient.ssn")

    assert "scanned 12, rewritten 0 (0 of them plaintext), skipped 12 already current" in output


def test_a_dry_run_counts_and_writes_nothing(rotated, kms_calls):
    before = {p.pk: stored(Patient, p.pk, "ssn") for p in rotated}

    output = reencrypt("testapp.Patient.ssn", dry_run=True)

    assert "would rewrite 12" in output
    assert {p.pk: stored(Patient, p.pk, "ssn") for p in rotated} == before
    assert kms_calls == []  # decided from the headers alone


def test_shards_are_disjoint_and_together_cover_the_table(rotated, keys):
    first_half = reencrypt("testapp.Patient.ssn", shard=(0, 2))
    done = {p.pk for p in rotated if wrapping(Patient, p.pk, "ssn") == {keys.second}}
    second_half = reencrypt("testapp.Patient.ssn", shard=(1, 2))

    assert done == {p.pk for p in rotated if p.pk % 2 == 0}
    assert "scanned 6, rewritten 6" in first_half
    assert "scanned 6, rewritten 6" in second_half
    assert {p.pk: wrapping(Patient, p.pk, "ssn") for p in rotated} == {p.pk: {keys.second} for p in rotated}


def test_shards_include_negative_primary_keys(rotated, keys):
    negative = Patient.objects.create(pk=-5, ssn="below zero")
    Patient.objects.filter(pk=negative.pk).update(ssn="below zero")  # written under the new key...
    write_raw(Patient, negative.pk, "ssn", stored(Patient, rotated[0].pk, "ssn"))  # ...then an old-key value

    outputs = [reencrypt("testapp.Patient.ssn", shard=(k, 3)) for k in range(3)]

    assert sum(int(o.split("scanned ")[1].split(",")[0]) for o in outputs) == 13
    assert wrapping(Patient, negative.pk, "ssn") == {keys.second}


def test_an_instance_loaded_before_rotation_and_saved_after_never_writes_the_old_message_back(rotated, keys):
    stale = Patient.objects.get(pk=rotated[0].pk)  # loaded, value never read
    reencrypt("testapp.Patient.ssn")

    stale.name = "renamed"
    stale.save()

    assert wrapping(Patient, stale.pk, "ssn") == {keys.second}
    assert Patient.objects.get(pk=stale.pk).ssn == "ssn-0"


def test_a_write_between_read_and_swap_is_never_overwritten(rotated):
    target = rotated[0]
    raced = {"done": False}

    def application_writes(sender, operation, **kwargs):
        # The command has read the batch and is encrypting the first value: the application writes it.
        if operation == "GenerateDataKey" and not raced["done"]:
            raced["done"] = True
            Patient.objects.filter(pk=target.pk).update(ssn="written by the application")

    kms_call.connect(application_writes, weak=False, dispatch_uid="race")
    try:
        output = reencrypt("testapp.Patient.ssn")
    finally:
        kms_call.disconnect(dispatch_uid="race")

    assert "1 changed meanwhile" in output
    assert Patient.objects.get(pk=target.pk).ssn == "written by the application"


def test_a_concurrent_writer_thread_loses_no_update(settings, local_kms, keys):
    default_keyring(settings, local_kms.endpoint, [keys.first])
    patients = [Patient.objects.create(name=f"p{i}", ssn=f"v0-{i}") for i in range(60)]
    default_keyring(settings, local_kms.endpoint, [keys.second], DECRYPT_KEY_ARNS=[keys.first])
    last_written: dict[int, str] = {}
    stop = threading.Event()

    def writer():
        try:
            round_ = 0
            while not stop.is_set() and round_ < 400:
                round_ += 1
                patient = patients[(round_ * 7) % len(patients)]
                value = f"v{round_}-{patient.pk}"
                Patient.objects.filter(pk=patient.pk).update(ssn=value)
                last_written[patient.pk] = value
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reencrypt("testapp.Patient.ssn", batch_size=4)
    finally:
        stop.set()
        thread.join(timeout=60)
    reencrypt("testapp.Patient.ssn")  # a second pass picks up what the writer raced

    values = dict(Patient.objects.values_list("pk", "ssn"))
    for patient in patients:
        assert values[patient.pk] == last_written.get(patient.pk, f"v0-{patients.index(patient)}")
        assert wrapping(Patient, patient.pk, "ssn") == {keys.second}
    default_keyring(settings, local_kms.endpoint, [keys.second])
    assert len([p.ssn for p in Patient.objects.all()]) == 60


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise(rotated):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    call_command("kms_fields_reencrypt", "testapp.Patient.ssn", batch_size=5, stdout=terminal)
    plain = reencrypt("testapp.Patient.notes", batch_size=5)

    assert "\rtestapp.Patient.ssn [" in terminal.getvalue() and "rows/s" in terminal.getvalue()
    assert "testapp.Patient.notes: 5/12 rows" in plain and "ETA" in plain and "\r" not in plain


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["nosuchapp"], {}, "No installed app"),
        (["testapp.Patient.name"], {}, "is not an encrypted field"),
        (["testapp.Patient.ssn"], {"batch_size": 0}, "--batch-size"),
        (["a.b.c.d"], {}, "is not app_label"),
    ],
)
def test_bad_arguments_are_command_errors(args, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("kms_fields_reencrypt", *args, stdout=io.StringIO(), **options)


@pytest.mark.parametrize("shard", ["2/2", "x", "1/0"])
def test_a_bad_shard_is_a_command_error(shard):
    with pytest.raises(CommandError, match="--shard"):
        call_command("kms_fields_reencrypt", "testapp.Patient.ssn", f"--shard={shard}", stdout=io.StringIO())


def test_unreadable_values_are_counted_reported_and_fail_the_command(rotated, keys):
    unreadable = rotated[3]
    write_raw(Patient, unreadable.pk, "ssn", b"\x02\x04\x78garbage")

    with pytest.raises(CommandError, match="1 value"):
        reencrypt("testapp.Patient.ssn")

    # The other rows were still moved to the new key; the unreadable one was left as it was.
    readable = [p for p in rotated if p.pk != unreadable.pk]
    assert {p.pk: wrapping(Patient, p.pk, "ssn") for p in readable} == {p.pk: {keys.second} for p in readable}
    assert stored(Patient, unreadable.pk, "ssn") == b"\x02\x04\x78garbage"


# --- multi-Region keys and discovery -------------------------------------------------------------------


def test_a_multi_region_key_is_decrypted_through_the_listed_replica_in_its_region(settings, local_kms, kms_calls):
    """The value was wrapped by the us-east-1 primary; the keyring lists only the eu-west-1 replica.

    moto cannot play the rest: its ciphertext names the primary's full ARN, region included, and its
    Decrypt refuses any other KeyId, where real KMS accepts a related replica. So this proves what is
    ours, that the Decrypt goes to the replica, by its ARN, through the eu-west-1 client, and that the
    refusal comes back as a KMSRequestError naming the replica.
    """
    primary = local_kms.admin("us-east-1").create_key(MultiRegion=True)["KeyMetadata"]["Arn"]
    replica = local_kms.admin("us-east-1").replicate_key(KeyId=primary.rsplit("/", 1)[1], ReplicaRegion="eu-west-1")[
        "ReplicaKeyMetadata"
    ]["Arn"]
    assert primary.split("/")[-1] == replica.split("/")[-1] and "mrk-" in primary
    default_keyring(settings, local_kms.endpoint, [primary])
    patient = Patient.objects.create(ssn="mrk")
    default_keyring(settings, local_kms.endpoint, [replica])
    kms_calls.clear()

    with pytest.raises(KMSRequestError, match=replica):
        Patient.objects.get(pk=patient.pk).ssn

    assert [(c["operation"], c["key_arn"], c["region"]) for c in kms_calls] == [("Decrypt", replica, "eu-west-1")]
    default_keyring(settings, local_kms.endpoint, [replica.replace("mrk-", "mrk-0")])  # another key: not a replica
    with pytest.raises(DecryptionError, match="no key of keyring"):
        Patient.objects.get(pk=patient.pk).ssn


def test_discovery_decrypts_keys_of_allowed_accounts_only(settings, local_kms, keys, kms_calls):
    patient = Patient.objects.create(ssn="found")
    default_keyring(settings, local_kms.endpoint, [keys.stranger],
                    DISCOVERY={"ACCOUNT_IDS": ["123456789012"], "PARTITION": "aws"})

    assert Patient.objects.get(pk=patient.pk).ssn == "found"
    default_keyring(settings, local_kms.endpoint, [keys.stranger],
                    DISCOVERY={"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws"})
    kms_calls.clear()
    with pytest.raises(DecryptionError, match="no key of keyring"):
        Patient.objects.get(pk=patient.pk).ssn
    assert kms_calls == []


# --- leaving plaintext behind --------------------------------------------------------------------------


def test_legacy_plaintext_is_read_when_accepted_counted_and_encrypted_in_place(caplog):
    field = LegacyRecord._meta.get_field("scan")
    records = [LegacyRecord.objects.create() for _ in range(3)]
    for record in records:
        write_raw(LegacyRecord, record.pk, "scan", f"old scan {record.pk}".encode())
    encrypted = LegacyRecord.objects.create(scan=b"new scan")
    seen_before = field.legacy_plaintext_reads

    with caplog.at_level(logging.WARNING, logger="django_kms_fields"):
        assert [LegacyRecord.objects.get(pk=r.pk).scan for r in records] == [f"old scan {r.pk}".encode() for r in records]
    assert LegacyRecord.objects.get(pk=encrypted.pk).scan == b"new scan"
    assert field.legacy_plaintext_reads - seen_before == 3
    assert "legacy plaintext" in caplog.text and "old scan" not in caplog.text

    output = reencrypt("testapp.LegacyRecord.scan")

    assert "scanned 4, rewritten 3 (3 of them plaintext), skipped 1 already current" in output
    assert all(crypto.looks_like_message(stored(LegacyRecord, r.pk, "scan")) for r in records)
    assert [LegacyRecord.objects.get(pk=r.pk).scan for r in records] == [f"old scan {r.pk}".encode() for r in records]
    assert field.legacy_plaintext_reads - seen_before == 3


def test_saving_an_instance_whose_legacy_plaintext_was_never_read_encrypts_it():
    record = LegacyRecord.objects.create()
    write_raw(LegacyRecord, record.pk, "scan", b"TOP-SECRET-PLAINTEXT")
    loaded = LegacyRecord.objects.get(pk=record.pk)

    loaded.ssn = "touched another column"
    loaded.save()

    assert b"TOP-SECRET" not in stored(LegacyRecord, record.pk, "scan")
    assert LegacyRecord.objects.get(pk=record.pk).scan == b"TOP-SECRET-PLAINTEXT"


def test_copying_a_plaintext_column_stops_the_migration_when_kms_is_down_and_a_rerun_finishes(
    settings, keys, local_kms
):
    from django_kms_fields.rewrite import RewriteIncomplete

    records = [LegacyRecord.objects.create(ssn=f"ssn-{i}") for i in range(4)]
    working = settings.KMS_FIELDS
    default_keyring(settings, closed_port_endpoint(), [keys.first], MAX_ATTEMPTS=1, CACHE=None)

    with pytest.raises(RewriteIncomplete, match="4 row") as caught:
        copy_plaintext_column(LegacyRecord, "ssn", "ssn_encrypted")
    assert caught.value.stats.failed == 4
    assert LegacyRecord.objects.filter(ssn_encrypted__isnull=True).count() == 4

    settings.KMS_FIELDS = working
    assert copy_plaintext_column(LegacyRecord, "ssn", "ssn_encrypted").rewritten == 4
    assert [LegacyRecord.objects.get(pk=r.pk).ssn_encrypted for r in records] == [f"ssn-{i}" for i in range(4)]


def test_a_plaintext_value_changed_during_the_copy_is_copied_on_the_rerun_not_lost(settings, local_kms, keys):
    records = [LegacyRecord.objects.create(ssn=f"ssn-{i}") for i in range(3)]
    default_keyring(settings, local_kms.endpoint, [keys.first], CACHE=None)
    raced = {"done": False}

    def application_writes(sender, operation, **kwargs):
        if operation == "GenerateDataKey" and not raced["done"]:
            raced["done"] = True  # the batch was read; the old code writes the plaintext column
            LegacyRecord.objects.filter(pk=records[0].pk).update(ssn="changed meanwhile")

    kms_call.connect(application_writes, weak=False, dispatch_uid="copy-race")
    try:
        first = copy_plaintext_column(LegacyRecord, "ssn", "ssn_encrypted")
    finally:
        kms_call.disconnect(dispatch_uid="copy-race")
    second = copy_plaintext_column(LegacyRecord, "ssn", "ssn_encrypted")

    assert (first.rewritten, first.changed_meanwhile, second.rewritten) == (2, 1, 1)
    assert LegacyRecord.objects.get(pk=records[0].pk).ssn_encrypted == "changed meanwhile"


def test_a_plaintext_column_is_copied_into_its_encrypted_successor_in_batches_by_a_data_migration():
    records = [LegacyRecord.objects.create(ssn=f"ssn-{i}") for i in range(7)]
    LegacyRecord.objects.create(ssn=None)
    already = LegacyRecord.objects.create(ssn="stale plaintext", ssn_encrypted="written by the new code")
    historical = MigrationLoader(connection).project_state().apps.get_model("testapp", "LegacyRecord")

    stats = copy_plaintext_column(historical, "ssn", "ssn_encrypted", batch_size=3)
    again = copy_plaintext_column(historical, "ssn", "ssn_encrypted", batch_size=3)

    assert (stats.scanned, stats.rewritten, stats.failed) == (7, 7, 0)
    assert (again.scanned, again.rewritten) == (0, 0)
    assert [LegacyRecord.objects.get(pk=r.pk).ssn_encrypted for r in records] == [f"ssn-{i}" for i in range(7)]
    assert LegacyRecord.objects.get(pk=already.pk).ssn_encrypted == "written by the new code"
    assert all(b"ssn-" not in stored(LegacyRecord, r.pk, "ssn_encrypted") for r in records)


# --- the deploy check ----------------------------------------------------------------------------------


def check(*args):
    out = io.StringIO()
    call_command("kms_fields_check", *args, stdout=out)
    return out.getvalue()


def test_the_deploy_check_passes_and_reports_each_key(settings, local_kms, keys, front):
    default_keyring(settings, front.endpoint, [keys.first, keys.second], DECRYPT_KEY_ARNS=[keys.stranger])

    output = check("--keyring", "default")

    assert output.count("ok   default") == 3
    assert f"{keys.first}  region=eu-west-1  endpoint={front.endpoint}  state=Enabled" in output
    assert "(decrypt only)" in output
    # Each key as the keyring uses it: the first generates, the second wraps, the third only decrypts.
    assert front.stats.requests == {"DescribeKey": 3, "GenerateDataKey": 1, "Encrypt": 1, "Decrypt": 2}


def test_the_deploy_check_fails_when_a_wrapping_key_may_not_encrypt(settings, keys, front):
    default_keyring(settings, front.endpoint, [keys.first, keys.second])
    front.set_fault(Fault(kind="error", error_code="AccessDeniedException", operations=("Encrypt",)))
    out = io.StringIO()

    # The error alone (what a readiness probe logs) names the check that failed and what to fix.
    with pytest.raises(CommandError) as failed:
        call_command("kms_fields_check", stdout=out)

    assert str(failed.value).startswith(f"keyring 'default', key {keys.second}: KMS Encrypt with key")
    assert str(failed.value).endswith(
        f"Fix: IAM permission: allow kms:DescribeKey, kms:Encrypt and kms:Decrypt on {keys.second} in the role's "
        "policy and the key policy."
    )
    assert f"FAIL default  {keys.second}" in out.getvalue()
    assert "allow kms:DescribeKey, kms:Encrypt and kms:Decrypt" in out.getvalue()


def test_the_deploy_check_asks_each_index_key_for_a_mac(settings, keys, front):
    default_keyring(
        settings, front.endpoint, [keys.first], INDEX_KEY_ARN=keys.next_index, PREVIOUS_INDEX_KEY_ARNS=[keys.index]
    )

    output = check("--keyring", "default")

    assert output.count("(blind-index key)") == 2 and f"ok   default  {keys.index}" in output
    assert front.stats.requests == {"DescribeKey": 3, "GenerateDataKey": 1, "Decrypt": 1, "GenerateMac": 2}


def test_the_deploy_check_fails_when_the_index_key_may_not_generate_macs(settings, keys, front):
    default_keyring(settings, front.endpoint, [keys.first], INDEX_KEY_ARN=keys.index)
    front.set_fault(Fault(kind="error", error_code="AccessDeniedException", operations=("GenerateMac",)))

    with pytest.raises(CommandError) as failed:
        call_command("kms_fields_check", stdout=io.StringIO())

    assert str(failed.value).startswith(f"keyring 'default', key {keys.index}: KMS GenerateMac with key")
    assert f"allow kms:DescribeKey and kms:GenerateMac on {keys.index}" in str(failed.value)


def test_the_deploy_check_refuses_an_encryption_key_as_index_key(settings, keys, front):
    default_keyring(settings, front.endpoint, [keys.first], INDEX_KEY_ARN=keys.second)

    with pytest.raises(CommandError, match="KeyUsage ENCRYPT_DECRYPT, not GENERATE_VERIFY_MAC") as failed:
        call_command("kms_fields_check", stdout=io.StringIO())
    assert str(failed.value).endswith("Fix: key: use an HMAC key (KeySpec HMAC_256, KeyUsage GENERATE_VERIFY_MAC) as INDEX_KEY_ARN.")


@pytest.mark.parametrize(
    ("setup", "fix"),
    [
        ("disabled", "key disabled"),
        ("missing", "does not exist"),
        ("denied", "IAM permission"),
        ("unreachable", "network"),
        ("bad-credentials", "credentials"),
    ],
)
def test_the_deploy_check_fails_with_what_to_fix(settings, local_kms, keys, front, setup, fix):
    key = keys.first
    endpoint = front.endpoint
    if setup == "disabled":
        key = local_kms.create_key()
        local_kms.admin().disable_key(KeyId=key.rsplit("/", 1)[1])
    elif setup == "missing":
        key = keys.first.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-00000000dead"
    elif setup == "denied":
        front.set_fault(Fault(kind="error", error_code="AccessDeniedException"))
    elif setup == "unreachable":
        endpoint = closed_port_endpoint()
    else:
        front.set_fault(Fault(kind="error", error_code="UnrecognizedClientException"))
    default_keyring(settings, endpoint, [key], MAX_ATTEMPTS=1)
    out = io.StringIO()

    with pytest.raises(CommandError, match=f"Fix: [^.]*{fix}"):
        call_command("kms_fields_check", "--keyring", "default", stdout=out)

    assert "FAIL default" in out.getvalue()
    assert re.search(f"fix:   [^.]*{fix}", out.getvalue())


def test_the_deploy_check_refuses_an_unknown_keyring():
    with pytest.raises(CommandError, match="no keyring 'nope'"):
        call_command("kms_fields_check", "--keyring", "nope", stdout=io.StringIO())


def test_the_deploy_check_is_bounded_by_the_keyring_timeouts(settings, keys, front):
    default_keyring(settings, front.endpoint, [keys.first], READ_TIMEOUT=0.3, MAX_ATTEMPTS=1)
    front.set_fault(Fault(kind="hang"))

    started = time.monotonic()
    with pytest.raises(CommandError):
        call_command("kms_fields_check", "--keyring", "default", stdout=io.StringIO())

    assert time.monotonic() - started < 5
    assert front.stats.requests == {"DescribeKey": 1}

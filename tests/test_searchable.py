"""Equality search through a blind index: searchable=True, unique=True, search_normalizer, the index
key from KMS (GenerateMac), kms_fields_reindex, and every write path keeping the index in step."""

import hashlib
import hmac
import io
import json
import threading

import pytest
from django import forms
from django.core import checks as django_checks
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import Q

from django_kms_fields import blind_index
from django_kms_fields.exceptions import (
    EncryptedLookupError,
    EncryptedQueryError,
    KMSFieldsConfigurationError,
    KMSUnavailableError,
)
from django_kms_fields.rewrite import copy_plaintext_column, reencrypt_column, reindex_column
from django_kms_fields.searchable import IncompleteIndexError, forget_completeness
from tests.kms import Fault
from tests.testapp.models import Member

from .helpers import keyring, stored

pytestmark = pytest.mark.django_db(databases=["default", "other"])


@pytest.fixture(autouse=True)
def fresh_roots():
    blind_index.forget_roots()
    forget_completeness()
    yield
    blind_index.forget_roots()
    forget_completeness()


def index_of(member, field="email", using="default"):
    column = connections[using].ops.quote_name(field + "_blind_index")
    table = connections[using].ops.quote_name(Member._meta.db_table)
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [member.pk])
        return cursor.fetchone()[0]


def members(**values):
    return [Member.objects.create(email=email, **values) for email in ("Ann@Example.org", "bob@example.org", "cy@example.org")]


# --- lookups ------------------------------------------------------------------------------------------


def test_exact_lookups_find_exactly_the_rows_with_that_value():
    ann, bob, cy = members()
    Member.objects.filter(pk=bob.pk).update(national_id="AB123")
    assert list(Member.objects.filter(email="bob@example.org")) == [bob]
    assert Member.objects.get(email="cy@example.org") == cy
    assert set(Member.objects.exclude(email="bob@example.org")) == {ann, cy}
    assert set(Member.objects.filter(email__in=["cy@example.org", "Ann@example.org", None])) == {ann, cy}
    assert set(Member.objects.filter(Q(email="cy@example.org") | Q(national_id="AB123"))) == {bob, cy}
    assert list(Member.objects.filter(national_id="AB123")) == [bob]
    assert not Member.objects.filter(national_id="ab123").exists()  # no normaliser: case counts
    assert not Member.objects.filter(email="nobody@example.org").exists()
    assert list(Member.objects.filter(national_id=None).order_by("pk")) == [ann, cy]
    assert list(Member.objects.filter(email__in=[])) == []


def test_the_normaliser_applies_to_what_is_indexed_and_looked_up_not_to_what_is_stored():
    ann = Member.objects.create(email="  Ann@Example.ORG ")
    assert Member.objects.get(email="ann@example.org") == ann
    assert Member.objects.get(email__iexact="ANN@example.org") == ann
    assert Member.objects.get(pk=ann.pk).email == "  Ann@Example.ORG "


def test_binary_values_are_searchable_too():
    ann, bob, _ = members()
    Member.objects.filter(pk=ann.pk).update(passport=b"\x00P123")
    assert list(Member.objects.filter(passport=b"\x00P123")) == [ann]
    assert not Member.objects.filter(passport=b"P123").exists()


def test_get_or_create_and_update_or_create_find_the_existing_row():
    ann = Member.objects.create(email="ann@example.org", name="Ann")
    found, created = Member.objects.get_or_create(email="ANN@example.org", defaults={"name": "other"})
    assert (found, created) == (ann, False)
    updated, created = Member.objects.update_or_create(email="ann@example.org", defaults={"name": "Ann B"})
    assert (updated, created) == (ann, False) and Member.objects.get(pk=ann.pk).name == "Ann B"
    new, created = Member.objects.get_or_create(email="dee@example.org")
    assert created and Member.objects.get(email="dee@example.org") == new


def test_lookups_an_equality_index_cannot_answer_stay_refused():
    members()
    for lookup in ("contains", "startswith", "gt", "regex"):
        with pytest.raises(EncryptedLookupError, match="not supported .*its blind index answers equality"):
            list(Member.objects.filter(**{f"email__{lookup}": "a"}))
    with pytest.raises(EncryptedQueryError, match="case-sensitive"):
        list(Member.objects.filter(national_id__iexact="ab"))
    with pytest.raises(EncryptedLookupError, match="searchable by value only"):
        list(Member.objects.filter(email=Member.objects.values("national_id")[:1]))
    with pytest.raises(EncryptedQueryError):
        list(Member.objects.order_by("email"))


def test_equal_values_in_other_fields_or_under_other_keys_have_unrelated_indexes(settings, keys, local_kms):
    member = Member.objects.create(email="same", national_id="same")
    email_index, national_index = index_of(member, "email"), index_of(member, "national_id")
    assert len(email_index) == 72 and int(email_index, 16) >= 0
    assert email_index != national_index and email_index[8:] != national_index[8:]
    assert stored(Member, member.pk, "email") != b"same" and b"same" not in stored(Member, member.pk, "email")
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**settings.KMS_FIELDS["default"], "INDEX_KEY_ARN": keys.next_index}}
    other_key = Member.objects.create(email="same2", national_id="same")
    assert index_of(other_key, "national_id") not in (national_index,)
    assert index_of(other_key, "national_id")[8:] != national_index[8:]


def test_the_same_value_gets_the_same_index_in_every_thread_and_process(keys, local_kms):
    member = Member.objects.create(email="x@example.org", national_id="N-1")
    results = []

    def compute():
        blind_index.forget_roots()
        results.append(Member._meta.get_field("national_id").blind_index("N-1"))

    threads = [threading.Thread(target=compute) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [index_of(member, "national_id")] * 4
    # Another process: only the key ARN, the binding and the KMS key's secret go into the index.
    import subprocess
    import sys

    script = (
        "import boto3, hmac, hashlib, sys\n"
        "from cryptography.hazmat.primitives import hashes\n"
        "from cryptography.hazmat.primitives.kdf.hkdf import HKDF\n"
        f"kms = boto3.client('kms', region_name='eu-west-1', endpoint_url={local_kms.endpoint!r})\n"
        f"root = kms.generate_mac(KeyId={keys.index!r}, MacAlgorithm='HMAC_SHA_256', Message=b'django-kms-fields blind index root v1')['Mac']\n"
        "key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b'django-kms-fields blind index field key v1\\x00testapp.member.national_id').derive(root)\n"
        "value = b'N-1'\n"
        "print(hmac.new(key, len(value).to_bytes(8, 'big') + value, hashlib.sha256).hexdigest())\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert output.stdout.strip() == index_of(member, "national_id")[8:]


def test_an_index_is_the_same_without_openssls_hmac_object(monkeypatch):
    # The index copies OpenSSL's HMAC object where CPython has one; any other HMAC object gives the same.
    secret, value, real_hmac = b"s" * 32, b"N-1", hmac.new
    with_openssl = blind_index.FieldIndexKey(key_arn="arn", tag="0000abcd", secret=secret).index(value)

    class HMACWithoutOpenSSLObject:
        def __init__(self, key, digestmod, message=b""):
            self.key, self.digestmod, self.message = key, digestmod, message

        def copy(self):
            return HMACWithoutOpenSSLObject(self.key, self.digestmod, self.message)

        def update(self, data):
            self.message += data

        def hexdigest(self):
            return real_hmac(self.key, self.message, self.digestmod).hexdigest()

    monkeypatch.setattr(blind_index.hmac, "new", lambda key, digestmod: HMACWithoutOpenSSLObject(key, digestmod))
    without = blind_index.FieldIndexKey(key_arn="arn", tag="0000abcd", secret=secret).index(value)

    assert without == with_openssl == "0000abcd" + real_hmac(secret, len(value).to_bytes(8, "big") + value, hashlib.sha256).hexdigest()


# --- the key: KMS calls, faults -------------------------------------------------------------------------


def test_one_generate_mac_per_index_key_and_max_age_whatever_the_rows_and_queries(kms_calls):
    Member.objects.bulk_create([Member(email=f"m{i}@example.org", national_id=str(i)) for i in range(20)])
    for i in range(20):
        assert Member.objects.filter(email=f"M{i}@example.org").count() == 1
    Member.objects.create(email="another@example.org")
    assert [call["operation"] for call in kms_calls].count("GenerateMac") == 1


def test_a_previous_key_costs_one_more_call_and_no_more(settings, keys, kms_calls):
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": {**settings.KMS_FIELDS["default"], "INDEX_KEY_ARN": keys.next_index, "PREVIOUS_INDEX_KEY_ARNS": [keys.index]},
    }
    for i in range(5):
        list(Member.objects.filter(email=f"{i}@example.org"))
    assert sorted(call["key_arn"] for call in kms_calls if call["operation"] == "GenerateMac") == sorted([keys.index, keys.next_index])


def test_kms_down_with_the_root_cached_keeps_lookups_working_and_without_it_fails_fast(settings, keys, front):
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": keyring([keys.first], front.endpoint, INDEX_KEY_ARN=keys.index, MAX_ATTEMPTS=1),
    }
    ann = Member.objects.create(email="ann@example.org")
    front.set_fault(Fault(kind="reset"))
    assert Member.objects.get(email="ann@example.org") == ann
    blind_index.forget_roots()
    with pytest.raises(KMSUnavailableError) as raised:
        Member.objects.get(email="ann@example.org")
    assert raised.value.operation == "GenerateMac" and raised.value.key_arn == keys.index
    assert front.stats.requests["GenerateMac"] <= 2


def test_the_root_expires_after_max_age(settings, kms_calls, monkeypatch):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**settings.KMS_FIELDS["default"], "CACHE": {"MAX_AGE": 60}}}
    now = [1000.0]
    monkeypatch.setattr(blind_index, "_clock", lambda: now[0])
    list(Member.objects.filter(email="a@example.org"))
    now[0] += 59
    list(Member.objects.filter(email="a@example.org"))
    assert [call["operation"] for call in kms_calls].count("GenerateMac") == 1
    now[0] += 2
    list(Member.objects.filter(email="a@example.org"))
    assert [call["operation"] for call in kms_calls].count("GenerateMac") == 2


# --- writes keep the index in step ----------------------------------------------------------------------


def test_update_bulk_update_and_update_fields_write_the_index_too():
    ann, bob, cy = members()
    Member.objects.filter(pk=ann.pk).update(email="ann2@example.org")
    assert Member.objects.get(email="ann2@example.org") == ann
    assert not Member.objects.filter(email="ann@example.org").exists()
    bob.email, cy.email = "bob2@example.org", "cy2@example.org"
    Member.objects.bulk_update([bob, cy], ["email"])
    assert set(Member.objects.filter(email__in=["bob2@example.org", "cy2@example.org"])) == {bob, cy}
    ann.email = "ann3@example.org"
    ann.save(update_fields=["email"])
    assert Member.objects.get(email="ann3@example.org") == ann
    partial = Member.objects.only("email").get(pk=bob.pk)
    partial.email = "bob3@example.org"
    partial.save()
    assert Member.objects.get(email="bob3@example.org") == bob
    Member.objects.filter(pk=cy.pk).update(national_id="N", email="cy4@example.org")
    assert Member.objects.get(national_id="N", email="cy4@example.org") == cy
    Member.objects.filter(pk=cy.pk).update(national_id=None)
    assert index_of(cy, "national_id") is None


def test_assigning_another_rows_unread_value_indexes_that_value():
    ann, bob, _ = members()
    loaded_ann, loaded_bob = Member.objects.get(pk=ann.pk), Member.objects.get(pk=bob.pk)
    loaded_bob.email = loaded_ann.__dict__["email"]  # still encrypted, never read
    Member.objects.filter(pk=ann.pk).update(email="moved@example.org")
    loaded_bob.save()
    assert Member.objects.get(email="ann@example.org") == bob


def test_saving_an_unread_instance_leaves_value_and_index_unchanged_without_kms(kms_calls):
    ann, _, _ = members()
    before = (stored(Member, ann.pk, "email"), index_of(ann))
    loaded = Member.objects.get(pk=ann.pk)
    kms_calls.clear()
    loaded.name = "renamed"
    loaded.save()
    assert (stored(Member, ann.pk, "email"), index_of(ann)) == before
    assert kms_calls == []


def test_loaddata_indexes_what_it_loads(tmp_path):
    ann, _, _ = members()
    fixture = tmp_path / "members.json"
    call_command("dumpdata", "testapp.member", output=str(fixture))
    data = json.loads(fixture.read_text())
    assert all("email_blind_index" not in row["fields"] for row in data)
    Member.objects.all().delete()
    call_command("loaddata", str(fixture), verbosity=0)
    assert Member.objects.get(email="ann@example.org").pk == ann.pk


def test_reencryption_leaves_the_index_as_it_is(settings, keys):
    ann, _, _ = members()
    before = index_of(ann)
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**settings.KMS_FIELDS["default"], "KEY_ARNS": [keys.second]}}
    stats = reencrypt_column(Member, Member._meta.get_field("email"))
    assert stats.rewritten == 3
    assert index_of(ann) == before and Member.objects.get(email="ann@example.org") == ann


# --- uniqueness -----------------------------------------------------------------------------------------


def test_unique_is_validated_through_the_index_with_djangos_message():
    members()
    duplicate = Member(email="ANN@example.org ")
    with pytest.raises(ValidationError) as raised:
        duplicate.validate_unique()
    assert raised.value.message_dict == {"email": ["Member with this Email already exists."]}
    Member.objects.get(email="ann@example.org").validate_unique()  # itself is no duplicate

    class MemberForm(forms.ModelForm):
        class Meta:
            model = Member
            fields = ["name", "email"]

    form = MemberForm(data={"name": "x", "email": "bob@example.org"})
    assert not form.is_valid() and form.errors["email"] == ["Member with this Email already exists."]
    assert MemberForm(data={"name": "x", "email": "new@example.org"}).is_valid()


def test_the_database_refuses_a_duplicate():
    members()
    with pytest.raises(IntegrityError), transaction.atomic():
        Member.objects.create(email="bob@EXAMPLE.org")


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_two_concurrent_inserts_of_one_value_leave_one_row():
    barrier = threading.Barrier(2, timeout=30)
    outcomes = []

    def insert():
        try:
            barrier.wait()
            with transaction.atomic():
                Member.objects.create(email="race@example.org")
            outcomes.append("created")
        except IntegrityError:
            outcomes.append("IntegrityError")
        except Exception as err:  # a lock timeout on SQLite would be a test bug: show it
            outcomes.append(repr(err))
        finally:
            connection.close()

    threads = [threading.Thread(target=insert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["IntegrityError", "created"]
    assert Member.objects.filter(email="race@example.org").count() == 1


# --- existing rows: kms_fields_reindex ------------------------------------------------------------------


def unindex(*rows, field="email_blind_index"):
    Member.objects.filter(pk__in=[row.pk for row in rows]).update(**{field: None})
    forget_completeness()


def test_a_lookup_refuses_while_rows_lack_an_index_and_reindex_fills_them():
    ann, bob, cy = members()
    unindex(ann, bob)
    with pytest.raises(IncompleteIndexError, match="rows in database"):
        list(Member.objects.filter(email="cy@example.org"))
    out = io.StringIO()
    with pytest.raises(CommandError, match="2 row"):
        call_command("kms_fields_reindex", "testapp.Member.email", "--check", stdout=out)
    call_command("kms_fields_reindex", "testapp.Member.email", "--dry-run", stdout=out)
    assert "would index 2" in out.getvalue()
    assert index_of(ann) is None
    call_command("kms_fields_reindex", "testapp.Member", "--batch-size", "1", stdout=out)
    assert "indexed 2, skipped 1 already current" in out.getvalue()
    assert Member.objects.get(email="ann@example.org") == ann
    call_command("kms_fields_reindex", "testapp.Member.email", "--check", stdout=out)
    call_command("kms_fields_reindex", "testapp.Member.email", stdout=out)
    assert "indexed 0, skipped 3 already current" in out.getvalue()


def test_reindex_by_shards_and_on_another_database():
    rows = [Member.objects.using("other").create(email=f"s{i}@example.org") for i in range(6)]
    Member.objects.using("other").update(email_blind_index=None)
    out = io.StringIO()
    for shard in ("0/2", "1/2"):
        call_command("kms_fields_reindex", "testapp.Member.email", "--database", "other", "--shard", shard, stdout=out)
    assert "indexed 3" in out.getvalue()
    assert [Member.objects.using("other").get(email=f"s{i}@example.org") for i in range(6)] == rows


def test_rotating_the_index_key_never_makes_a_row_unfindable(settings, keys):
    rows = [Member.objects.create(email=f"r{i}@example.org", national_id=f"N{i}") for i in range(5)]
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": {**settings.KMS_FIELDS["default"], "INDEX_KEY_ARN": keys.next_index, "PREVIOUS_INDEX_KEY_ARNS": [keys.index]},
    }
    field = Member._meta.get_field("national_id")
    old_indexes = [index_of(row, "national_id") for row in rows]
    seen = []

    def every_row_findable(progress):
        seen.append(progress and progress.done)
        for i, row in enumerate(rows):
            assert Member.objects.get(national_id=f"N{i}") == row
            assert Member.objects.get(email=f"R{i}@example.org") == row

    every_row_findable(None)
    stats = reindex_column(Member, field, batch_size=2, progress=every_row_findable)
    assert stats.rewritten == 5 and seen[1:] == [2, 4, 5]
    assert all(index_of(row, "national_id") not in old_indexes for row in rows)
    settings.KMS_FIELDS = {
        **settings.KMS_FIELDS,
        "default": {**settings.KMS_FIELDS["default"], "PREVIOUS_INDEX_KEY_ARNS": []},
    }
    forget_completeness()
    assert Member.objects.get(national_id="N3") == rows[3]
    with pytest.raises(IncompleteIndexError, match="rows in database"):
        Member.objects.get(email="r3@example.org")  # email was not rebuilt: refused, not missed


def test_a_row_changed_during_reindex_is_left_alone():
    ann, _, _ = members()
    unindex(ann)
    field = Member._meta.get_field("email")

    from django_kms_fields import batches

    original = batches.write_batch

    def write_after_a_change(*args, **kwargs):
        Member.objects.filter(pk=ann.pk).update(email="changed@example.org")
        return original(*args, **kwargs)

    batches.write_batch = write_after_a_change
    try:
        stats = reindex_column(Member, field)
    finally:
        batches.write_batch = original
    assert stats.changed_meanwhile == 1
    assert Member.objects.get(email="changed@example.org") == ann


def test_copy_plaintext_column_writes_the_index(settings):
    member = Member.objects.create(email="x@example.org", name="P-77")
    Member.objects.filter(pk=member.pk).update(national_id=None)
    stats = copy_plaintext_column(Member, "name", "national_id")
    assert stats.rewritten == 3 - 2  # the one row
    assert Member.objects.get(national_id="P-77") == member


# --- the database uses the index ----------------------------------------------------------------------


def test_the_database_answers_a_lookup_from_the_index():
    Member.objects.bulk_create([Member(email=f"e{i}@example.org", national_id=f"N-{i}") for i in range(40)])
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # On a table this small the planner would rather scan; the point is that it can use the index.
            cursor.execute("SET LOCAL enable_seqscan = off")
        plan = Member.objects.filter(national_id="N-1").explain()
        unique_plan = Member.objects.filter(email="e3@example.org").explain()
    assert "national_id_blind_index" in plan and "email_blind_index" in unique_plan
    if connection.vendor == "postgresql":
        assert "Index Scan" in plan or "Index Only Scan" in plan or "Bitmap Index Scan" in plan
    elif connection.vendor == "sqlite":
        assert "USING INDEX" in plan and "USING INDEX" in unique_plan


# --- checks -------------------------------------------------------------------------------------------------


def test_settings_checks_for_the_index_keys(settings, keys):
    base = settings.KMS_FIELDS["default"]
    cases = [
        ({"INDEX_KEY_ARN": "alias/search"}, "E036"),
        ({"PREVIOUS_INDEX_KEY_ARNS": "arn"}, "E036"),
        ({"INDEX_KEY_ARN": None, "PREVIOUS_INDEX_KEY_ARNS": [keys.index]}, "E037"),
        ({"PREVIOUS_INDEX_KEY_ARNS": [keys.index]}, "E037"),
    ]
    for options, check_id in cases:
        settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {**base, **options}}
        ids = {message.id for message in django_checks.run_checks()}
        assert f"kms_fields.{check_id}" in ids, options
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {k: v for k, v in base.items() if k != "INDEX_KEY_ARN"}}
    errors = [m for m in django_checks.run_checks() if m.id == "kms_fields.E038"]
    assert sorted(m.obj.name for m in errors) == ["balance", "email", "joined", "member_no", "national_id", "passport"]


# --- the admin ----------------------------------------------------------------------------------------------

MEMBERS = "/admin/testapp/member/"


def test_the_admin_finds_a_row_by_its_exact_encrypted_value(admin_client):
    ann, bob, cy = members()
    Member.objects.filter(pk=cy.pk).update(name="Cy", national_id="N-9")
    by_email = admin_client.get(MEMBERS, {"q": "BOB@example.org"})
    assert by_email.status_code == 200 and list(by_email.context["cl"].result_list) == [bob]
    by_id = admin_client.get(MEMBERS, {"q": "N-9"})
    assert list(by_id.context["cl"].result_list) == [cy]
    assert list(admin_client.get(MEMBERS, {"q": "Cy"}).context["cl"].result_list) == [cy]
    assert list(admin_client.get(MEMBERS, {"q": "nobody@example.org"}).context["cl"].result_list) == []


def test_the_admin_add_form_reports_a_duplicate_like_django(admin_client):
    members()
    response = admin_client.post(MEMBERS + "add/", {"name": "Imposter", "email": " ann@EXAMPLE.org"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["email"] == ["Member with this Email already exists."]
    assert Member.objects.count() == 3


def test_reindex_without_an_index_key_is_a_command_error_not_a_traceback(settings):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {k: v for k, v in settings.KMS_FIELDS["default"].items() if k != "INDEX_KEY_ARN"}}
    for extra in ([], ["--check"]):
        with pytest.raises(CommandError, match="has no INDEX_KEY_ARN"):
            call_command("kms_fields_reindex", "testapp.Member.email", *extra, stdout=io.StringIO())


def test_saving_a_searchable_value_without_an_index_key_is_a_configuration_error_and_writes_nothing(settings):
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": {k: v for k, v in settings.KMS_FIELDS["default"].items() if k != "INDEX_KEY_ARN"}}

    with pytest.raises(KMSFieldsConfigurationError, match="has no INDEX_KEY_ARN"), transaction.atomic():
        Member.objects.create(email="new@example.org")

    assert Member.objects.count() == 0


def test_typed_fields_are_found_by_any_spelling_of_an_equal_value():
    import datetime
    import decimal
    import zoneinfo

    moment = datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone.utc)
    member = Member.objects.create(email="t@example.org", member_no=42, balance=decimal.Decimal("1.5"), joined=moment)
    Member.objects.create(email="u@example.org", member_no=43, balance=decimal.Decimal("1.51"), joined=moment.replace(minute=31))
    assert Member.objects.get(member_no="42") == member
    assert Member.objects.get(balance=decimal.Decimal("1.50")) == member
    assert Member.objects.get(balance="1.5") == member
    assert Member.objects.get(joined=moment.astimezone(zoneinfo.ZoneInfo("America/New_York"))) == member
    assert Member.objects.get(member_no__in=[42, 44]) == member


def test_reindex_with_no_label_covers_every_searchable_field():
    ann, _, _ = members()
    Member.objects.filter(pk=ann.pk).update(national_id="N-5")
    unindex(ann)
    unindex(ann, field="national_id_blind_index")
    out = io.StringIO()
    call_command("kms_fields_reindex", stdout=out)
    assert "testapp.Member.email: scanned 3, indexed 1" in out.getvalue()
    assert "testapp.Member.national_id: scanned 1, indexed 1" in out.getvalue()
    assert Member.objects.get(national_id="N-5", email="ann@example.org") == ann


def test_exclude_keeps_rows_without_a_value_as_django_does():
    ann, bob, cy = members()
    Member.objects.filter(pk=ann.pk).update(national_id="X")
    Member.objects.filter(pk=bob.pk).update(national_id="Y")
    assert set(Member.objects.exclude(national_id="X")) == {bob, cy}
    assert set(Member.objects.filter(pk__in=Member.objects.filter(national_id="Y").values("pk"))) == {bob}


def test_an_update_keeping_some_rows_own_values_keeps_their_indexes():
    from django.db.models import Case, F, Value, When

    ann, bob, cy = members()
    for row, value in ((ann, "A"), (bob, "B"), (cy, "C")):
        Member.objects.filter(pk=row.pk).update(national_id=value)
    field = Member._meta.get_field("national_id")
    Member.objects.update(national_id=Case(When(pk=ann.pk, then=Value("A2", output_field=field)), default=F("national_id")))
    assert [Member.objects.get(national_id=v) for v in ("A2", "B", "C")] == [ann, bob, cy]


def test_bulk_create_updating_on_conflict_writes_the_index_too():
    ann, _, _ = members()
    Member.objects.filter(pk=ann.pk).update(national_id="OLD")
    options = {"unique_fields": ["email_blind_index"]} if connection.features.supports_update_conflicts_with_target else {}
    Member.objects.bulk_create(
        [Member(email="ann@example.org", national_id="NEW")], update_conflicts=True, update_fields=["national_id"], **options
    )
    assert Member.objects.get(national_id="NEW").pk == ann.pk
    assert not Member.objects.filter(national_id="OLD").exists()


def test_an_override_of_get_db_prep_save_in_between_does_not_lose_the_index(monkeypatch):
    ann, _, _ = members()
    field = Member._meta.get_field("national_id")
    unbound = type(field).get_db_prep_save
    monkeypatch.setattr(field, "get_db_prep_save", lambda value, connection: unbound(field, value, connection))
    Member.objects.filter(pk=ann.pk).update(national_id="Z")
    assert Member.objects.get(national_id="Z") == ann


def test_saving_only_the_unread_field_writes_its_loaded_index_without_kms(kms_calls):
    ann, bob, _ = members()
    before = index_of(ann)
    loaded, other = Member.objects.get(pk=ann.pk), Member.objects.get(pk=bob.pk)
    kms_calls.clear()
    loaded.save(update_fields=["email"])
    other.email = loaded.__dict__["email"]
    Member.objects.filter(pk=ann.pk).update(email="moved@example.org")
    kms_calls.clear()
    other.save(update_fields=["email"])
    assert index_of(bob) == before and kms_calls == []
    assert Member.objects.get(email="ann@example.org") == bob


def test_the_ciphertext_column_never_gets_a_unique_index_the_blind_index_does():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Member._meta.db_table)
    unique_columns = [c["columns"] for c in constraints.values() if c["unique"] and not c["primary_key"]]
    assert ["email_blind_index"] in unique_columns
    assert not any("email" in columns for columns in unique_columns)
    assert Member._meta.get_field("email").unique  # as Django, auth's USERNAME_FIELD check and serializers see it


def test_changing_an_encoding_option_shows_rows_as_not_indexed_until_reindex(settings):
    import decimal

    member = Member.objects.create(email="d@example.org", balance=decimal.Decimal("1.5"))
    field = Member._meta.get_field("balance")
    field.decimal_places = 3
    try:
        forget_completeness()
        with pytest.raises(IncompleteIndexError):
            Member.objects.get(balance="1.5")
        reindex_column(Member, field)
        assert Member.objects.get(balance="1.500") == member
    finally:
        field.decimal_places = 2
        forget_completeness()


def test_reindex_rebuild_rewrites_indexes_that_look_current_but_differ():
    ann, bob, _ = members()
    good = index_of(bob, "email")
    Member.objects.filter(pk=ann.pk).update(email_blind_index=None)
    Member.objects.filter(pk=bob.pk).update(email_blind_index=good[:8] + "0" * 64)  # a current tag, a wrong index
    forget_completeness()
    out = io.StringIO()
    call_command("kms_fields_reindex", "testapp.Member.email", stdout=out)
    assert "indexed 1, skipped 2 already current" in out.getvalue()
    call_command("kms_fields_reindex", "testapp.Member.email", "--rebuild", stdout=out)
    assert "indexed 1, skipped 2 already current" in out.getvalue().splitlines()[-1]
    assert index_of(bob, "email") == good


def test_reindex_reports_duplicates_written_before_the_index_existed_and_indexes_the_rest():
    ann, bob, cy = members()
    Member.objects.update(email_blind_index=None)
    Member.objects.filter(pk=bob.pk).update(email="ANN@example.org")  # a duplicate once normalised
    Member.objects.filter(pk=bob.pk).update(email_blind_index=None)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 value"):
        call_command("kms_fields_reindex", "testapp.Member.email", stdout=out, stderr=err)
    assert f"pk={bob.pk}: another row of testapp.Member already has this value" in err.getvalue()
    assert "ann@example.org" not in (out.getvalue() + err.getvalue()).lower()
    assert index_of(ann) is not None and index_of(cy) is not None and index_of(bob) is None

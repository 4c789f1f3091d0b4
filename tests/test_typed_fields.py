"""Typed encrypted fields behave like their plain counterparts: the same values back from the
database, the same validation and messages, the same form fields, the same fixtures; only the column
holds an AWS Encryption SDK message."""

import datetime
import decimal
import json
import uuid

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_encryption_sdk.key_providers.kms import KMSMasterKey
from django import forms
from django.core import serializers
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import JSONField, Value
from django.test.utils import isolate_apps
from hypothesis import HealthCheck, given, settings, strategies as st

from django_kms_fields import EncryptedCharField, EncryptedDecimalField
from django_kms_fields.exceptions import EncryptedLookupError
from tests.helpers import stored
from tests.testapp.models import Device, Typed

pytestmark = pytest.mark.django_db

PAIRS = ["char", "email", "data", "integer", "big", "amount", "day", "moment"]
# Text the databases store in a text column (PostgreSQL refuses NUL), as the counterpart must.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32) | TEXT
)
JSON = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
VALUES = {
    "char": TEXT,
    "email": st.emails().filter(lambda e: len(e) <= 254),
    "data": JSON,
    "integer": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "big": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "amount": st.decimals(min_value=-(10**10) + 1, max_value=10**10 - 1, places=2, allow_nan=False, allow_infinity=False),
    "day": st.dates(min_value=datetime.date(1000, 1, 1)),
    "moment": st.datetimes(
        min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2100, 1, 1), timezones=st.timezones()
    ),
}
EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def has_float(value):
    if isinstance(value, float):
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(has_float(child) for child in children)


def round_trip(name, value):
    row = Typed.objects.create(**{name: value, f"e_{name}": value})
    loaded = Typed.objects.get(pk=row.pk)
    return getattr(loaded, name), getattr(loaded, f"e_{name}")


@pytest.mark.parametrize("name", PAIRS)
def test_every_type_reads_back_what_its_counterpart_reads_back(name):
    @EXAMPLES
    @given(value=VALUES[name])
    def check(value):
        plain, encrypted = round_trip(name, value)
        if name == "data":
            # Ours is intact. PostgreSQL's jsonb gives floats back through its numeric type (1e16 as an
            # int, and not always the same number): compared only where it keeps them.
            assert json.dumps(encrypted, sort_keys=True) == json.dumps(value, sort_keys=True)
            if connection.vendor != "postgresql" or not has_float(value):
                assert encrypted == plain
        else:
            assert encrypted == plain and type(encrypted) is type(plain), (value, plain, encrypted)
        if name == "amount":
            assert str(encrypted) == str(plain)  # the same places
        if name == "moment":
            assert encrypted.tzinfo is not None and encrypted.utcoffset() == plain.utcoffset()

    check()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("char", ""), ("data", {}), ("data", []), ("data", {"n": 1.5, "b": False, "z": None, "deep": [[{"é": "✓"}]]}),
        ("integer", -(2**31)), ("integer", 2**31 - 1), ("big", -(2**63)), ("big", 2**63 - 1),
        ("amount", decimal.Decimal("-0.00")), ("amount", decimal.Decimal("1.1")), ("amount", decimal.Decimal("99999999.99")),
        ("day", datetime.date(9999, 12, 31)),
        # The hour that repeats when Europe/Paris leaves summer time, both times.
        ("moment", datetime.datetime(2026, 10, 25, 2, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))),
        ("moment", datetime.datetime(2026, 10, 25, 2, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))),
        ("moment", None),
    ],
)
def test_edge_values_read_back_as_the_counterpart_reads_them(name, value):
    plain, encrypted = round_trip(name, value)
    assert encrypted == plain and type(encrypted) is type(plain)
    if name != "data":  # (a JSON object's keys come back sorted: the encoding is canonical)
        assert str(encrypted) == str(plain)


def test_each_column_holds_a_message_whose_plaintext_is_the_documented_encoding(local_kms, keys):
    row = Typed.objects.create(
        e_char="Zoë", e_data={"b": [1, 2.5, None], "a": "✓"}, e_integer=-42, e_amount=decimal.Decimal("-0.001"),
        e_day=datetime.date(2024, 2, 29),
        e_moment=datetime.datetime(2024, 2, 29, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    )
    # What any program with kms:Decrypt reads, through the official SDK alone.
    key = KMSMasterKey(key_id=keys.first, client=local_kms.admin())
    sdk = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    expected = {
        "e_char": "Zoë".encode(),
        "e_data": '{"a":"✓","b":[1,2.5,null]}'.encode(),
        "e_integer": b"-42",
        "e_amount": b"0.00",
        "e_day": b"2024-02-29",
        "e_moment": b"2024-03-01T04:30:00.000000+00:00",
    }
    for column, plaintext in expected.items():
        decrypted, _header = sdk.decrypt(source=stored(Typed, row.pk, column), key_provider=key)
        assert decrypted == plaintext, column


def test_json_null_and_sql_null_are_told_apart_as_jsonfield_does():
    json_null = Typed.objects.create(data=Value(None, JSONField()), e_data=Value(None, JSONField()))
    sql_null = Typed.objects.create(data=None, e_data=None)

    assert stored(Typed, sql_null.pk, "e_data") is None
    assert stored(Typed, json_null.pk, "e_data") is not None
    assert set(Typed.objects.filter(e_data__isnull=True).values_list("pk", flat=True)) == {sql_null.pk}
    assert set(Typed.objects.filter(data__isnull=True).values_list("pk", flat=True)) == {sql_null.pk}
    assert Typed.objects.get(pk=json_null.pk).e_data is None


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        # One past the counterpart's range on this database (SQLite's IntegerField is 64-bit).
        ("integer", lambda: connection.ops.integer_field_range("IntegerField")[1] + 1),
        ("integer", lambda: connection.ops.integer_field_range("IntegerField")[0] - 1),
        ("big", lambda: 2**63),
        ("amount", lambda: decimal.Decimal("123456789012.5")),
        ("char", lambda: "x" * 21),
        ("email", lambda: "not-an-email"),
    ],
    ids=["int-above", "int-below", "big", "decimal", "char", "email"],
)
def test_validation_is_the_counterparts_with_its_messages(name, bad):
    errors = {}
    for field_name in (name, f"e_{name}"):
        with pytest.raises(ValidationError) as invalid:
            Typed(**{field_name: bad()}).full_clean()
        errors[field_name] = invalid.value.message_dict[field_name]
    assert errors[f"e_{name}"] == errors[name]


@pytest.mark.parametrize("name", PAIRS)
def test_the_form_field_and_widget_are_the_counterparts(name):
    plain = Typed._meta.get_field(name).formfield()
    encrypted = Typed._meta.get_field(f"e_{name}").formfield()

    assert type(encrypted) is type(plain)
    assert type(encrypted.widget) is type(plain.widget)
    assert encrypted.validators.__len__() == plain.validators.__len__()


def test_a_model_form_cleans_like_the_counterpart():
    Form = forms.modelform_factory(Typed, fields=["integer", "e_integer", "day", "e_day", "data", "e_data"])
    form = Form(data={"integer": "x", "e_integer": "x", "day": "2024-13-01", "e_day": "2024-13-01", "data": "{", "e_data": "{"})

    assert not form.is_valid()
    for name in ("integer", "day", "data"):
        assert form.errors[f"e_{name}"] == form.errors[name]


def test_dumpdata_and_loaddata_round_trip_like_the_counterparts():
    values = {
        "char": "a", "email": "a@example.com", "data": {"k": [1, None]}, "integer": 7, "big": -(2**40),
        "amount": decimal.Decimal("3.10"), "day": datetime.date(2020, 1, 2),
        "moment": datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    }
    row = Typed.objects.create(**values, **{f"e_{k}": v for k, v in values.items()})
    dumped = json.loads(serializers.serialize("json", [Typed.objects.get(pk=row.pk)]))[0]["fields"]
    for name in values:
        assert dumped[f"e_{name}"] == dumped[name]

    Typed.objects.all().delete()
    for obj in serializers.deserialize("json", json.dumps([{"model": "testapp.typed", "pk": row.pk, "fields": dumped}])):
        obj.save()
    loaded = Typed.objects.get(pk=row.pk)
    assert {name: getattr(loaded, f"e_{name}") for name in values} == {name: getattr(loaded, name) for name in values}


def test_lookups_are_refused_and_the_counterparts_checks_still_run():
    with pytest.raises(EncryptedLookupError):
        list(Typed.objects.filter(e_integer__gt=3))
    with isolate_apps("tests.testapp"):

        class Unbounded(models.Model):
            plain = models.DecimalField(max_digits=2, decimal_places=5)
            encrypted = EncryptedDecimalField(max_digits=2, decimal_places=5)
            plain_text = models.CharField(max_length=-1)
            encrypted_text = EncryptedCharField(max_length=-1)

            class Meta:
                app_label = "testapp"

        ids = {f.name: [e.id for e in f.check()] for f in Unbounded._meta.local_fields if f.name != "id"}
    assert ids["encrypted"] == ids["plain"] != []
    assert ids["encrypted_text"] == ids["plain_text"] == ["fields.E121"]


def test_a_users_own_encrypted_type_built_on_the_public_base_class():
    serial = uuid.uuid4()
    device = Device.objects.create(serial=serial)

    assert Device.objects.get(pk=device.pk).serial == serial
    assert serial.bytes not in stored(Device, device.pk, "serial")
    with pytest.raises(EncryptedLookupError):
        Device.objects.get(serial=serial)


def test_the_admin_adds_changes_and_lists_typed_values_like_their_counterparts(admin_client):
    form = {
        "char": "Zoë", "e_char": "Zoë", "email": "z@example.com", "e_email": "z@example.com",
        "data": '{"a": [1, null]}', "e_data": '{"a": [1, null]}', "integer": "-7", "e_integer": "-7",
        "big": str(2**40), "e_big": str(2**40), "amount": "3.10", "e_amount": "3.10",
        "day": "2024-02-29", "e_day": "2024-02-29",
        "moment_0": "2024-02-29", "moment_1": "23:30:00", "e_moment_0": "2024-02-29", "e_moment_1": "23:30:00",
    }

    added = admin_client.post("/admin/testapp/typed/add/", form)

    assert added.status_code == 302, added.content.decode()[:2000]
    row = Typed.objects.get()
    for name in PAIRS:
        assert getattr(row, f"e_{name}") == getattr(row, name), name
    change = admin_client.get(f"/admin/testapp/typed/{row.pk}/change/").content.decode()
    assert change.count('value="Zoë"') == 2 and change.count('value="3.10"') == 2
    invalid = admin_client.post(f"/admin/testapp/typed/{row.pk}/change/", {**form, "integer": "x", "e_integer": "x"})
    assert invalid.status_code == 200
    errors = invalid.context["adminform"].form.errors
    assert errors["e_integer"] == errors["integer"]
    listed = admin_client.get("/admin/testapp/typed/").content.decode()
    assert "Zoë" in listed and "-7" in listed


@pytest.mark.parametrize(
    "query",
    [
        lambda: list(Typed.objects.order_by("e_integer")),
        lambda: Typed.objects.aggregate(models.Max("e_amount")),
        lambda: list(Typed.objects.values_list("e_day", flat=True).distinct()),
        lambda: list(Typed.objects.filter(e_moment__year=2024)),
    ],
    ids=["order-by-integer", "max-decimal", "distinct-dates", "year-of-datetime"],
)
def test_typed_values_are_never_sorted_aggregated_or_compared_as_ciphertext(query):
    Typed.objects.create(e_integer=2, e_amount=decimal.Decimal("1.00"), e_day=datetime.date(2024, 1, 1))
    with pytest.raises(EncryptedLookupError):
        query()

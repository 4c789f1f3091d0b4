"""Migrations on populated tables: a text column converted in place keeps every byte of every value,
a plain AlterField that would mangle them is stopped before it touches a row, and a rename keeps the
values that a removal would drop."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from django_kms_fields import headers
from django_kms_fields.exceptions import DecryptionError
from django_kms_fields.rewrite import reencrypt_column

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

VALUES = [
    "C:\\temp",
    "x\\\\000y",
    "it's \"quoted\"",
    "emoji \U0001f510 and \u00e9 and e\u0301 (combining)",
    "",
    "m" * (1024 * 1024),
]
TABLES = ["conversion_record", "conversion_card", "conversion_paymentcard", "conversion_person"]


@pytest.fixture
def conversion_app(settings):
    """The conversion test app installed, with the migrations module a test picks; dropped afterwards."""
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "tests.conversion"]

    def use(migrations: str) -> None:
        settings.MIGRATION_MODULES = {"conversion": f"tests.conversion.{migrations}"}

    yield use
    for alias in ("default", "other"):
        db = connections[alias]
        with db.cursor() as cursor:
            existing = set(db.introspection.table_names(cursor))
        with db.schema_editor() as editor:
            for table in TABLES:
                if table in existing:
                    editor.execute(f"DROP TABLE {editor.quote_name(table)}")
        if "django_migrations" in existing:
            with db.cursor() as cursor:
                cursor.execute("DELETE FROM django_migrations WHERE app = %s", ["conversion"])


def migrate(target: str, *, checks: bool = True) -> None:
    # As manage.py migrate runs it: with the system checks (call_command skips them by default). The
    # checks look at every unapplied migration, so the set-up before a bad migration skips them.
    call_command("migrate", "conversion", target, verbosity=0, skip_checks=not checks, stdout=io.StringIO())


def model_at(target: str, name: str):
    loader = MigrationExecutor(connection).loader
    migration = loader.get_migration_by_prefix("conversion", target)
    return loader.project_state(("conversion", migration.name)).apps.get_model("conversion", name)


def raw_column(table: str, column: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def populate_records() -> None:
    with connection.cursor() as cursor:
        for value in VALUES:
            cursor.execute(
                "INSERT INTO conversion_record (body, code, scan) VALUES (%s, %s, %s)",
                [value, value[:64], connection.Database.Binary(value.encode("utf-8"))],
            )


def test_a_text_column_converted_in_place_keeps_every_byte_then_is_encrypted(conversion_app, kms_calls):
    conversion_app("convert")
    migrate("0001")
    populate_records()

    migrate("0002")
    Record = model_at("0002", "Record")
    # Legacy plaintext, every byte kept, read with accept_plaintext before any encryption.
    assert [bytes(v) for v in raw_column("conversion_record", "body")] == [v.encode() for v in VALUES]
    assert list(Record.objects.order_by("id").values_list("body", flat=True)) == VALUES
    assert list(Record.objects.order_by("id").values_list("code", flat=True)) == [v[:64] for v in VALUES]

    for name in ("body", "code", "scan"):
        stats = reencrypt_column(Record, Record._meta.get_field(name))
        assert (stats.rewritten, stats.plaintext, stats.failed) == (len(VALUES), len(VALUES), 0)

    assert all(headers.looks_like_message(bytes(v)) for v in raw_column("conversion_record", "body"))
    assert [r.body for r in Record.objects.order_by("id")] == VALUES
    assert [r.code for r in Record.objects.order_by("id")] == [v[:64] for v in VALUES]
    assert [r.scan for r in Record.objects.order_by("id")] == [v.encode() for v in VALUES]


def test_a_plain_alter_field_from_text_is_stopped_before_it_touches_a_row(conversion_app):
    conversion_app("plain_alter")
    migrate("0001", checks=False)
    populate_records()

    with pytest.raises(SystemCheckError, match="kms_fields.E050"):
        migrate("0002")

    assert raw_column("conversion_record", "body") == VALUES
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = %s", ["conversion"])
        assert [row[0] for row in cursor.fetchall()] == ["0001_initial"]


def test_a_rename_in_two_steps_keeps_the_values_of_a_populated_table(conversion_app):
    conversion_app("rename_in_two_steps")
    migrate("0001")
    Card = model_at("0001", "Card")
    created = [Card.objects.create(number=f"4111-0000-{i}").pk for i in range(3)]

    migrate("0003")

    PaymentCard = model_at("0003", "PaymentCard")
    assert [PaymentCard.objects.get(pk=pk).pan for pk in created] == [f"4111-0000-{i}" for i in range(3)]


def test_a_rename_in_one_step_that_would_drop_the_values_is_stopped(conversion_app):
    conversion_app("rename_in_one_step")
    migrate("0001", checks=False)
    Card = model_at("0001", "Card")
    Card.objects.create(number="4111-1111")

    with pytest.raises(SystemCheckError, match="kms_fields.E051"):
        migrate("0002")

    assert Card.objects.get().number == "4111-1111"


def test_text_left_in_the_column_by_a_plain_alter_field_is_a_decryption_error_never_a_type_error(conversion_app):
    # As an earlier release let it happen on SQLite, which keeps text values in the converted column.
    conversion_app("plain_alter")
    migrate("0001", checks=False)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO conversion_record (body) VALUES (%s)", ["left as text"])
    if connection.vendor != "sqlite":
        # PostgreSQL and MariaDB hold bytes after any conversion: the case cannot arise there.
        return
    call_command("migrate", "conversion", "0002", verbosity=0, skip_checks=True, stdout=io.StringIO())
    Record = model_at("0002", "Record")
    assert Record.objects.get().body == "left as text"  # accept_plaintext: legacy plaintext
    field = Record._meta.get_field("body")
    field.accept_plaintext = False
    try:
        with pytest.raises(DecryptionError, match=r"conversion\.Record\.body \(pk=1\): the column holds text") as refused:
            Record.objects.get().body
    finally:
        field.accept_plaintext = True
    assert refused.value.code == "TextInColumn"


def test_a_latin1_column_on_mariadb_is_converted_to_the_utf8_bytes_of_its_text(conversion_app):
    conversion_app("convert")
    migrate("0001")
    if connection.vendor != "mysql":
        return  # a per-column character set is MySQL's and MariaDB's alone
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE conversion_record MODIFY body LONGTEXT CHARACTER SET latin1 NULL")
        cursor.execute("INSERT INTO conversion_record (body) VALUES (%s)", ["café, naïve"])

    migrate("0002")

    assert [bytes(v) for v in raw_column("conversion_record", "body")] == ["café, naïve".encode("utf-8")]
    assert model_at("0002", "Record").objects.get().body == "café, naïve"


def test_a_data_migration_copies_on_the_database_being_migrated_not_on_default(conversion_app):
    conversion_app("copy_on_other")
    for alias, count in (("default", 2), ("other", 5)):
        call_command("migrate", "conversion", "0001", database=alias, verbosity=0, stdout=io.StringIO())
        with connections[alias].cursor() as cursor:
            for i in range(count):
                cursor.execute("INSERT INTO conversion_person (ssn) VALUES (%s)", [f"{alias}-{i}"])

    call_command("migrate", "conversion", "0002", database="other", verbosity=0, stdout=io.StringIO())

    Person = model_at("0002", "Person")
    assert [p.ssn_encrypted for p in Person.objects.using("other").order_by("id")] == [f"other-{i}" for i in range(5)]
    assert [p.ssn_encrypted for p in Person.objects.using("default").order_by("id")] == [None, None]


def test_reencrypt_takes_the_database_to_rewrite(settings, local_kms, keys):
    from tests.helpers import keyring, stored
    from tests.testapp.models import Patient

    old = settings.KMS_FIELDS["default"]
    on_other = [Patient.objects.using("other").create(ssn=f"o{i}").pk for i in range(3)]
    on_default = Patient.objects.create(ssn="d").pk
    settings.KMS_FIELDS = {**settings.KMS_FIELDS, "default": keyring([keys.second], local_kms.endpoint, DECRYPT_KEY_ARNS=[keys.first])}
    assert old["KEY_ARNS"][0] == keys.first

    call_command("kms_fields_reencrypt", "testapp.Patient.ssn", "--database", "other", stdout=io.StringIO())

    with connections["other"].cursor() as cursor:
        cursor.execute("SELECT id, ssn FROM testapp_patient ORDER BY id")
        rows = cursor.fetchall()
    assert {pk: headers.wrapping_key_arns(bytes(v)) for pk, v in rows} == {pk: {keys.second} for pk in on_other}
    assert headers.wrapping_key_arns(stored(Patient, on_default, "ssn")) == {keys.first, keys.second}
    with pytest.raises(CommandError, match="--database 'nope' is not in DATABASES"):
        call_command("kms_fields_reencrypt", "--database", "nope", stdout=io.StringIO())

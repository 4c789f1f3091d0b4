"""Migrations stay stable and every option survives ``deconstruct()``."""

import pytest
from django.core.management import call_command

from django_kms_fields.fields import EncryptedBinaryField, EncryptedTextField


@pytest.mark.django_db
def test_makemigrations_reports_no_changes(capsys):
    call_command("makemigrations", "testapp", "--check", "--dry-run")
    call_command("makemigrations", "testapp", "--check", "--dry-run")
    assert "No changes detected" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("field_class", "kwargs"),
    [
        (EncryptedTextField, {}),
        (EncryptedTextField, {"keyring": "archive", "null": True, "blank": True, "binding": "app.model.old_name"}),
        (EncryptedBinaryField, {}),
        (EncryptedBinaryField, {"keyring": "archive", "null": True, "editable": True, "max_length": 1024}),
    ],
)
def test_deconstruct_round_trips_every_option(field_class, kwargs):
    field = field_class(**kwargs)

    name, path, args, deconstructed = field.deconstruct()
    rebuilt = field_class(*args, **deconstructed)

    assert path == f"django_kms_fields.fields.{field_class.__name__}"
    assert deconstructed == kwargs
    assert rebuilt.deconstruct()[3] == kwargs
    assert (rebuilt.keyring, rebuilt.binding) == (field.keyring, field.binding)


BINARY_COLUMN_TYPES = {"sqlite": "blob", "postgresql": "bytea", "mysql": "longblob"}


def declared_column_types(table):
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA table_info({table})")
            return {row[1]: row[2].lower() for row in cursor.fetchall()}
        schema = "current_schema()" if connection.vendor == "postgresql" else "DATABASE()"
        cursor.execute(
            f"SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = {schema} AND table_name = %s",
            [table],
        )
        return {name.lower(): data_type.lower() for name, data_type in cursor.fetchall()}


@pytest.mark.django_db
def test_the_columns_are_binary_in_the_real_schema():
    from django.db import connection

    from tests.testapp.models import Patient

    types = declared_column_types(Patient._meta.db_table)

    assert types["name"] != BINARY_COLUMN_TYPES[connection.vendor]  # the probe tells column types apart
    assert {types["ssn"], types["notes"], types["xray"]} == {BINARY_COLUMN_TYPES[connection.vendor]}

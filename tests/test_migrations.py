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


def test_the_column_is_binary_on_every_backend():
    from django.db import connection

    assert EncryptedTextField().db_type(connection) == connection.data_types["BinaryField"]

"""Migration operations for moving an existing column to encryption in place.

A plain ``AlterField`` from a ``TextField``/``CharField`` to an encrypted field loses or mangles data:
PostgreSQL converts with ``USING column::bytea``, which reads backslashes as escapes (``C:\\temp``
fails, ``x\\\\000y`` becomes ``x\\000y``), and SQLite keeps the text values as text in the new
column. ``ConvertToEncryptedField`` converts every value to the UTF-8 bytes of the same text on every
backend, in the migration's transaction; the column then holds legacy plaintext, which the field reads
with ``accept_plaintext=True`` until ``kms_fields_reencrypt`` has encrypted it. The system check
``kms_fields.E050`` stops ``migrate`` before a plain ``AlterField`` of that kind touches any row.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.state import ProjectState

__all__ = ["ConvertToEncryptedField", "TEXT_TYPES"]

# Field types whose values are text in the database; a binary field needs no conversion.
TEXT_TYPES = frozenset({"TextField", "CharField", "SlugField", "EmailField", "URLField"})


class ConvertToEncryptedField(migrations.AlterField):
    """``AlterField`` from a text field to an encrypted one, keeping each value's UTF-8 bytes.

    Use it where ``makemigrations`` wrote ``migrations.AlterField(...)`` for the field, with the same
    arguments. Give the new field ``accept_plaintext=True``, migrate, then run ``kms_fields_reencrypt``.
    """

    reversible = False

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        old_field = from_state.apps.get_model(app_label, self.model_name)._meta.get_field(self.name)
        from_text = old_field.get_internal_type() in TEXT_TYPES
        table, column = model._meta.db_table, old_field.column
        qn = schema_editor.quote_name
        vendor = schema_editor.connection.vendor
        if from_text and vendor == "mysql":
            # A text column converts to a blob as the bytes of its own character set: make that UTF-8
            # first (lossless for every character the old one could hold).
            null = "NULL" if old_field.null else "NOT NULL"
            schema_editor.execute(
                f"ALTER TABLE {qn(table)} MODIFY {qn(column)} LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {null}"
            )
        if from_text and vendor == "postgresql":
            # convert_to() gives the text's bytes in UTF-8; Django's own USING column::bytea would read
            # backslashes as escape sequences.
            schema_editor.execute(
                f"ALTER TABLE {qn(table)} ALTER COLUMN {qn(column)} TYPE bytea USING convert_to({qn(column)}, 'UTF8')"
            )
        super().database_forwards(app_label, schema_editor, from_state, to_state)
        if from_text and vendor == "sqlite":
            # SQLite copies text values as text into the rebuilt table; CAST gives their UTF-8 bytes.
            schema_editor.execute(
                f"UPDATE {qn(table)} SET {qn(column)} = CAST({qn(column)} AS BLOB) WHERE typeof({qn(column)}) = 'text'"
            )

    def database_backwards(self, *args: Any, **kwargs: Any) -> None:
        raise IrreversibleError(
            f"ConvertToEncryptedField on {self.model_name}.{self.name} cannot be undone: once values are "
            "encrypted, turning the column back into text would lose them. Restore from a backup instead."
        )

    def describe(self) -> str:
        return f"Convert {self.model_name}.{self.name} to an encrypted field, keeping each value's bytes"

    @property
    def migration_name_fragment(self) -> str:
        return f"encrypt_{self.model_name_lower}_{self.name_lower}"

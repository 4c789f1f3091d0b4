"""Finding unapplied migrations that would lose or mangle encrypted values, before ``migrate`` runs them.

- ``kms_fields.E050``: a plain ``AlterField`` from a text field to an encrypted one. PostgreSQL would
  read backslashes as escapes and SQLite would keep text in the column; ``ConvertToEncryptedField``
  converts each value to its UTF-8 bytes instead.
- ``kms_fields.E051``: a migration that drops a column or table holding encrypted values while it adds
  a field whose ``binding`` names them: what ``makemigrations`` writes when a field or model is renamed
  and ``binding`` is set in the same change. The values would be gone; a rename keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connections, migrations
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState

from .operations import TEXT_TYPES

__all__ = ["Problem", "unsafe_operations"]

_WATCHED = (migrations.AlterField, migrations.AddField, migrations.RemoveField, migrations.DeleteModel, migrations.CreateModel)


@dataclass(frozen=True)
class Problem:
    id: str
    msg: str
    hint: str
    obj: Any


def unsafe_operations(alias: str) -> Iterator[Problem]:
    loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    for key, migration in sorted(loader.graph.nodes.items()):
        if key in loader.applied_migrations or not _may_touch_encrypted_fields(migration):
            continue
        yield from _migration_problems(migration, loader.project_state(key, at_end=False))


def _is_encrypted(field: Any) -> bool:
    from .fields import EncryptedField

    return isinstance(field, EncryptedField)


def _may_touch_encrypted_fields(migration: migrations.Migration) -> bool:
    return any(isinstance(op, _WATCHED) for op in migration.operations)


def _label(app_label: str, model_name: str, name: str, field: Any) -> str:
    return field.binding or f"{app_label}.{model_name.lower()}.{name}"


def _encrypted_fields_of(state: ProjectState, app_label: str, model_name: str) -> dict[str, Any]:
    model_state = state.models.get((app_label, model_name.lower()))
    if model_state is None:
        return {}
    return {name: field for name, field in model_state.fields.items() if _is_encrypted(field)}


def _migration_problems(migration: migrations.Migration, state: ProjectState) -> Iterator[Problem]:
    app_label = migration.app_label
    where = f"Migration {app_label}.{migration.name}"
    dropped: dict[str, str] = {}  # label of encrypted values dropped -> what held them
    bound: dict[str, str] = {}  # binding of an encrypted field added -> the field
    for operation in migration.operations:
        if type(operation) is migrations.AlterField and _is_encrypted(operation.field):
            previous = state.models[app_label, operation.model_name_lower].fields.get(operation.name)
            if previous is not None and previous.get_internal_type() in TEXT_TYPES:
                yield Problem(
                    "E050",
                    f"{where} alters {operation.model_name}.{operation.name} from {type(previous).__name__} to "
                    f"{type(operation.field).__name__} with AlterField, which mangles or keeps the text values.",
                    "Replace migrations.AlterField with django_kms_fields.operations.ConvertToEncryptedField (same "
                    "arguments), give the field accept_plaintext=True, migrate, then run kms_fields_reencrypt.",
                    migration,
                )
        elif isinstance(operation, migrations.RemoveField):
            field = _encrypted_fields_of(state, app_label, operation.model_name).get(operation.name)
            if field is not None:
                dropped[_label(app_label, operation.model_name, operation.name, field)] = f"{operation.model_name}.{operation.name}"
        elif isinstance(operation, migrations.DeleteModel):
            for name, field in _encrypted_fields_of(state, app_label, operation.name).items():
                dropped[_label(app_label, operation.name, name, field)] = f"{operation.name}.{name}"
        elif isinstance(operation, migrations.AddField) and _is_encrypted(operation.field) and operation.field.binding:
            bound[operation.field.binding] = f"{operation.model_name}.{operation.name}"
        elif isinstance(operation, migrations.CreateModel):
            for name, field in operation.fields:
                if _is_encrypted(field) and field.binding:
                    bound[field.binding] = f"{operation.name}.{name}"
        operation.state_forwards(app_label, state)
    for label in sorted(dropped.keys() & bound.keys()):
        yield Problem(
            "E051",
            f"{where} drops {dropped[label]}, whose values {bound[label]} is bound to read (binding={label!r}): "
            "they would be lost.",
            "A rename was written as a removal and an addition because binding changed in the same step. Delete "
            "this migration; set binding to the old label first (makemigrations), then rename (makemigrations asks "
            "'Did you rename...?': answer yes), so that RenameField/RenameModel keeps the column.",
            migration,
        )

"""System checks for ``KMS_FIELDS``; field-level checks live on the fields themselves.

One id names one problem, and ids are never reused. The settings ids (E001-E019, E022-E029) come from
``validation.settings_problems()``, so the check and the error raised at the first use of a broken
keyring say the same thing; E020, E021 and E032 are field checks; W001 is the logging warning below; W002 a deploy check.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.core import checks

from . import validation

__all__ = ["check_settings", "check_botocore_logging", "check_accept_plaintext"]

BOTOCORE_LOGGERS = ("botocore", "botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.retryhandler")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(problem.msg, hint=problem.hint, id=f"kms_fields.{problem.id}")
        for problem in validation.settings_problems()
    ]


def check_botocore_logging(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    # botocore.parsers logs each response body at DEBUG: a GenerateDataKey response holds the plaintext
    # data key in base64, a GenerateMac response the root of the blind indexes.
    verbose = [name for name in BOTOCORE_LOGGERS if logging.getLogger(name).isEnabledFor(logging.DEBUG)]
    if not verbose:
        return []
    return [
        checks.Warning(
            "botocore logs at DEBUG (" + ", ".join(verbose) + "): it would write KMS response bodies, "
            "including plaintext data keys and the blind-index root, to your logs.",
            hint='Set the "botocore" logger to INFO or above in LOGGING.',
            id="kms_fields.W001",
        )
    ]


def check_accept_plaintext(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A deploy check: every field that still reads legacy plaintext has tamper detection off."""
    from .fields import EncryptedField

    return [
        checks.Warning(
            f"{field.model._meta.label}.{field.name} has accept_plaintext=True: a stored value that is not an "
            "encrypted message is returned as legacy plaintext, so a forged value is read, not refused.",
            hint="Run kms_fields_reencrypt for this field, then remove accept_plaintext. Until then, "
            "legacy_plaintext_reads counts what was read as plaintext.",
            obj=field,
            id="kms_fields.W002",
        )
        for model in apps.get_models()
        for field in model._meta.local_concrete_fields
        if isinstance(field, EncryptedField) and field.accept_plaintext
    ]


def check_migrations(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Unapplied migrations that would lose or mangle encrypted values (``migrate`` runs this first).

    Only with ``databases`` (as ``migrate`` and ``check --database`` pass them): whether a migration
    is still to run depends on the database.
    """
    from .migration_safety import unsafe_operations

    return [
        checks.Error(problem.msg, hint=problem.hint, obj=problem.obj, id=f"kms_fields.{problem.id}")
        for alias in databases or ()
        for problem in unsafe_operations(alias)
    ]

"""System checks for ``KMS_FIELDS``; field-level checks live on the fields themselves.

One id names one problem, and ids are never reused. The settings ids (E001-E019, E022-E029) come from
``validation.settings_problems()``, so the check and the error raised at the first use of a broken
keyring say the same thing; E020-E021 are field checks; W001 is the logging warning below.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core import checks

from . import validation

__all__ = ["check_settings", "check_botocore_logging"]

BOTOCORE_LOGGERS = ("botocore", "botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.retryhandler")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(problem.msg, hint=problem.hint, id=f"kms_fields.{problem.id}")
        for problem in validation.settings_problems()
    ]


def check_botocore_logging(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    # botocore.parsers logs each response body at DEBUG, and a GenerateDataKey response holds the
    # plaintext data key in base64.
    verbose = [name for name in BOTOCORE_LOGGERS if logging.getLogger(name).isEnabledFor(logging.DEBUG)]
    if not verbose:
        return []
    return [
        checks.Warning(
            "botocore logs at DEBUG (" + ", ".join(verbose) + "): it would write KMS response bodies, "
            "including plaintext data keys, to your logs.",
            hint='Set the "botocore" logger to INFO or above in LOGGING.',
            id="kms_fields.W001",
        )
    ]

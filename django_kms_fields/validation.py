"""Validation of ``settings.KMS_FIELDS``: every problem as a ``ConfigProblem`` with a check id.

The system checks (``checks.check_settings``) and the first use of a keyring (``conf.get_keyring``)
both report from here, so ``manage.py check`` and the error at run time say the same thing. One id
names one problem; ids are never reused (the README's check table lists them all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from django.conf import settings

from . import key_validation
from .conf import (
    ALGORITHMS,
    CACHE_DEFAULTS,
    DEFAULT_KEYRING,
    FIELD_CONTEXT_KEY,
    KEYRING_DEFAULTS,
    RESERVED_CONTEXT_PREFIX,
    RETRY_MODES,
    SETTING_NAME,
    ConfigProblem,
)

__all__ = ["ConfigProblem", "keyring_problems", "settings_problems"]

# The AWS Encryption SDK refuses to use one data key for more messages than this.
_MAX_MESSAGES_LIMIT = 2**32

# botocore Config options that the keyring's own settings set; accepting them in CLIENT_CONFIG too
# would make one of the two silently lose.
_OWNED_CLIENT_OPTIONS = {
    "connect_timeout": "CONNECT_TIMEOUT",
    "read_timeout": "READ_TIMEOUT",
    "retries": "MAX_ATTEMPTS and RETRY_MODE",
    "region_name": "REGION_NAME (or the region in each key ARN)",
}


# --- numbers and choices, by table --------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Rule:
    """One setting whose value must pass ``accepts``; ``expected`` completes "must be ..."."""

    key: str
    check_id: str
    accepts: Callable[[Any], bool]
    expected: str
    hint: str


def _positive_seconds(value: object) -> bool:
    return _is_number(value) and value > 0  # type: ignore[operator]


def _whole_at_least_one(value: object) -> bool:
    return _is_whole(value) and value >= 1  # type: ignore[operator]


def _one_of(choices: Sequence[str]) -> Callable[[Any], bool]:
    return lambda value: value in choices


_KEYRING_RULES = (
    _Rule("CONNECT_TIMEOUT", "E009", _positive_seconds, "a positive number of seconds",
          f"The default is {KEYRING_DEFAULTS['CONNECT_TIMEOUT']}. Without a bound a silent KMS endpoint blocks a worker for minutes."),
    _Rule("READ_TIMEOUT", "E009", _positive_seconds, "a positive number of seconds",
          f"The default is {KEYRING_DEFAULTS['READ_TIMEOUT']}. Without a bound a silent KMS endpoint blocks a worker for minutes."),
    _Rule("MAX_ATTEMPTS", "E010", _whole_at_least_one, "a whole number of at least 1",
          "MAX_ATTEMPTS counts every attempt, the first included: 1 means no retry."),
    _Rule("RETRY_MODE", "E011", _one_of(RETRY_MODES), "one of " + ", ".join(RETRY_MODES),
          "Use one of: " + ", ".join(RETRY_MODES) + "."),
    _Rule("ALGORITHM", "E012", _one_of(ALGORITHMS), "a committing suite",
          "Use one of the committing suites: " + ", ".join(ALGORITHMS) + "."),
    _Rule("BREAKER_THRESHOLD", "E017", lambda v: v is None or _whole_at_least_one(v),
          "a whole number of at least 1, or None",
          "It is how many consecutive KMS failures open the circuit breaker; None turns the breaker off."),
    _Rule("BREAKER_COOLDOWN", "E018", _positive_seconds, "a positive number of seconds",
          f"The default is {KEYRING_DEFAULTS['BREAKER_COOLDOWN']}: how long an open breaker fails fast before one trial call."),
    _Rule("MAX_MESSAGE_BYTES", "E030", lambda v: _is_whole(v) and v >= 1024, "a whole number of bytes, at least 1024",
          f"The default is {KEYRING_DEFAULTS['MAX_MESSAGE_BYTES']} (16 MiB): a stored value larger than this is refused "
          "before any work, so a planted value cannot make one read arbitrarily expensive."),
    _Rule("REQUIRE_ALGORITHM", "E031", lambda v: isinstance(v, bool), "True or False",
          "True refuses, on read, values whose algorithm suite is not ALGORITHM (after kms_fields_reencrypt moved them)."),
)
_CACHE_HINT = 'For example "CACHE": {"MAX_AGE": 300, "MAX_MESSAGES": 1000, "CAPACITY": 1000}, or None to call KMS for every value.'
_CACHE_RULES = (
    _Rule("MAX_AGE", "E028", _positive_seconds, "a positive number of seconds", _CACHE_HINT),
    _Rule("MAX_MESSAGES", "E028", lambda v: _whole_at_least_one(v) and v <= _MAX_MESSAGES_LIMIT,
          f"a whole number of at least 1 and at most {_MAX_MESSAGES_LIMIT}", _CACHE_HINT),
    _Rule("CAPACITY", "E028", _whole_at_least_one, "a whole number of at least 1", _CACHE_HINT),
)


def _rule_problems(where: str, raw: Mapping[str, Any], defaults: Mapping[str, Any], rules: Sequence[_Rule]) -> list[ConfigProblem]:
    problems = []
    for rule in rules:
        value = raw.get(rule.key, defaults[rule.key])
        if not rule.accepts(value):
            problems.append(ConfigProblem(rule.check_id, f"{where}['{rule.key}'] must be {rule.expected}, not {value!r}.", rule.hint))
    return problems


# --- the client -----------------------------------------------------------------------------------


def _client_config_problems(where: str, client_config: object) -> list[ConfigProblem]:
    if isinstance(client_config, Mapping):
        owned = sorted(key for key in client_config if key in _OWNED_CLIENT_OPTIONS)
        if owned:
            return [
                ConfigProblem(
                    "E027",
                    f"{where}['CLIENT_CONFIG'] sets {key!r}, which this keyring sets from its own settings.",
                    f"Use {_OWNED_CLIENT_OPTIONS[key]} instead.",
                )
                for key in owned
            ]
        try:
            Config(**client_config)
            return []
        except (TypeError, ValueError) as err:
            reason = f"is not accepted by botocore: {err}"
    else:
        reason = "must be a dict of botocore Config options"
    return [
        ConfigProblem(
            "E014",
            f"{where}['CLIENT_CONFIG'] {reason}.",
            'See botocore.config.Config for the options it takes, for example {"proxies": {"https": "http://proxy:3128"}}.',
        )
    ]


# --- what goes into every message, and the cache ---------------------------------------------------


def _context_problems(where: str, context: object) -> list[ConfigProblem]:
    if not isinstance(context, Mapping) or not all(
        isinstance(key, str) and key and isinstance(value, str) for key, value in context.items()
    ):
        return [
            ConfigProblem(
                "E013",
                f"{where}['ENCRYPTION_CONTEXT'] must be a dict of non-empty strings to strings.",
                'For example {"service": "billing"}. It is stored in plaintext: put nothing secret in it.',
            )
        ]
    reserved = sorted(k for k in context if k.startswith(RESERVED_CONTEXT_PREFIX) or k == FIELD_CONTEXT_KEY)
    if not reserved:
        return []
    return [
        ConfigProblem(
            "E026",
            f"{where}['ENCRYPTION_CONTEXT'] uses reserved key(s): {', '.join(reserved)}.",
            f"Keys starting with {RESERVED_CONTEXT_PREFIX!r} belong to the AWS Encryption SDK and "
            f"{FIELD_CONTEXT_KEY!r} to this app; choose other names.",
        )
    ]


def _cache_problems(where: str, cache: object) -> list[ConfigProblem]:
    if cache is None:
        return []
    if not isinstance(cache, Mapping):
        return [ConfigProblem("E019", f"{where}['CACHE'] must be a dict or None.", _CACHE_HINT)]
    unknown = sorted(str(key) for key in cache if key not in CACHE_DEFAULTS)
    if unknown:
        return [ConfigProblem("E019", f"{where}['CACHE'] has unknown key(s): {', '.join(unknown)}.", _CACHE_HINT)]
    return _rule_problems(f"{where}['CACHE']", cache, CACHE_DEFAULTS, _CACHE_RULES)


# --- the whole setting ------------------------------------------------------------------------------


def keyring_problems(alias: str, raw: object) -> list[ConfigProblem]:
    """Everything wrong with one keyring's settings; empty when it is valid."""
    where = f"{SETTING_NAME}[{alias!r}]"
    if not isinstance(raw, Mapping):
        return [ConfigProblem("E003", f"{where} must be a dict, not {type(raw).__name__}.", 'Write it as {"KEY_ARNS": [...]}.')]
    problems: list[ConfigProblem] = []
    unknown = sorted(str(key) for key in raw if key not in KEYRING_DEFAULTS)
    if unknown:
        problems.append(
            ConfigProblem(
                "E004",
                f"{where} has unknown key(s): {', '.join(unknown)}.",
                "Valid keys are " + ", ".join(KEYRING_DEFAULTS) + ". A misspelt key would otherwise fall back "
                "to its default without a word.",
            )
        )
    key_problems, arns = key_validation.key_arn_problems(where, raw.get("KEY_ARNS"))
    decrypt_problems, decrypt_arns = key_validation.decrypt_key_arn_problems(where, raw.get("DECRYPT_KEY_ARNS", []), raw.get("KEY_ARNS"))
    arns += decrypt_arns
    index_problems, index_arns = key_validation.index_key_problems(where, raw)
    problems += index_problems
    arns += index_arns
    problems += key_problems + decrypt_problems + key_validation.discovery_problems(where, raw.get("DISCOVERY"))
    problems += key_validation.region_problems(where, raw, arns)
    problems += key_validation.endpoint_problems(where, raw.get("ENDPOINT_URL"), arns)
    problems += key_validation.optional_text_problems(where, raw, "PROFILE_NAME", "E015")
    problems += _rule_problems(where, raw, KEYRING_DEFAULTS, _KEYRING_RULES)
    problems += _context_problems(where, raw.get("ENCRYPTION_CONTEXT", {}))
    problems += _cache_problems(where, raw.get("CACHE", {}))
    problems += _client_config_problems(where, raw.get("CLIENT_CONFIG", {}))
    return problems


def settings_problems() -> list[ConfigProblem]:
    """Everything wrong with ``settings.KMS_FIELDS`` as a whole."""
    raw = getattr(settings, SETTING_NAME, None)
    if not isinstance(raw, Mapping) or not raw:
        return [
            ConfigProblem(
                "E001",
                f"{SETTING_NAME} is missing, empty or not a dict.",
                f'Add {SETTING_NAME} = {{"default": {{"KEY_ARNS": ["arn:aws:kms:..."]}}}} to your settings.',
            )
        ]
    problems = []
    if DEFAULT_KEYRING not in raw:
        problems.append(
            ConfigProblem(
                "E002",
                f"{SETTING_NAME} has no 'default' keyring.",
                "Fields use keyring='default' unless told otherwise; add it, as with DATABASES.",
            )
        )
    for alias, keyring in raw.items():
        problems += keyring_problems(str(alias), keyring)
    return problems

"""The one reader of ``settings.KMS_FIELDS``.

Each keyring alias is validated into an immutable ``KeyringConfig`` with every default filled in. The
same validation feeds the system checks (``kms_fields.E0xx``), so ``manage.py check`` and the first
encrypt or decrypt report a mistake in the same words. Results are cached and dropped when Django's
``setting_changed`` fires for ``KMS_FIELDS``, so ``override_settings`` takes effect on the next
operation; modules that cache things built from a keyring (clients, SDK objects) register with
``on_settings_reset``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from botocore.config import Config
from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import KMSFieldsConfigurationError

__all__ = [
    "SETTING_NAME",
    "DEFAULT_KEYRING",
    "ALGORITHMS",
    "RETRY_MODES",
    "KeyringConfig",
    "ConfigProblem",
    "KeyArn",
    "parse_key_arn",
    "get_keyring",
    "keyring_aliases",
    "settings_problems",
    "on_settings_reset",
    "is_current",
    "KeyringCache",
]

T = TypeVar("T")

SETTING_NAME = "KMS_FIELDS"
DEFAULT_KEYRING = "default"

# Committing suites only: the SDK's REQUIRE_ENCRYPT_REQUIRE_DECRYPT policy refuses the others.
ALGORITHMS = (
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
)
RETRY_MODES = ("standard", "adaptive", "legacy")

KEYRING_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "KEY_ARNS": None,
        "DECRYPT_KEY_ARNS": [],
        "DISCOVERY": None,
        "REGION_NAME": None,
        "ENDPOINT_URL": None,
        "PROFILE_NAME": None,
        "CONNECT_TIMEOUT": 5,
        "READ_TIMEOUT": 8,
        "MAX_ATTEMPTS": 3,
        "RETRY_MODE": "standard",
        "CLIENT_CONFIG": {},
        "ALGORITHM": ALGORITHMS[0],
        "ENCRYPTION_CONTEXT": {},
        "BREAKER_THRESHOLD": 5,
        "BREAKER_COOLDOWN": 30,
        "CACHE": {},
    }
)

CACHE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"MAX_AGE": 300, "MAX_MESSAGES": 1000, "CAPACITY": 1000})
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

# Keys the SDK reserves, and the one this app writes to bind a message to its field.
RESERVED_CONTEXT_PREFIX = "aws-crypto-"
FIELD_CONTEXT_KEY = "kms-fields:field"

_KEY_ARN_PATTERN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):"
    r"(?P<account>\d{12}):key/(?P<key_id>(?:mrk-)?[A-Za-z0-9-]+)$"
)


@dataclass(frozen=True)
class KeyArn:
    arn: str
    partition: str
    region: str
    account: str
    key_id: str


def parse_key_arn(value: object) -> KeyArn | None:
    """The parts of a full KMS key ARN, or None when ``value`` is not one (aliases are not keys)."""
    if not isinstance(value, str):
        return None
    match = _KEY_ARN_PATTERN.match(value)
    if match is None:
        return None
    return KeyArn(arn=value, **match.groupdict())


@dataclass(frozen=True)
class CacheConfig:
    """Data-key caching of one keyring: how long, for how many values, how many entries."""

    max_age: float
    max_messages: int
    capacity: int


@dataclass(frozen=True)
class DiscoveryConfig:
    """Decrypt with any key of these accounts in this partition, besides the listed keys."""

    account_ids: frozenset[str]
    partition: str


@dataclass(frozen=True)
class KeyringConfig:
    """One validated keyring of ``KMS_FIELDS``, defaults filled in."""

    alias: str
    key_arns: tuple[str, ...]
    region_name: str | None
    endpoint_url: str | None
    profile_name: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    retry_mode: str
    client_config: Mapping[str, Any] = field(compare=False)
    algorithm: str
    encryption_context: Mapping[str, str] = field(compare=False)
    breaker_threshold: int | None = 5
    breaker_cooldown: float = 30.0
    cache: CacheConfig | None = None
    decrypt_key_arns: tuple[str, ...] = ()
    discovery: DiscoveryConfig | None = None

    @property
    def readable_key_arns(self) -> tuple[str, ...]:
        """Every listed key that may decrypt: the wrapping keys first, then the decrypt-only ones."""
        return self.key_arns + self.decrypt_key_arns

    def region_of(self, key_arn: str) -> str:
        parsed = parse_key_arn(key_arn)
        if parsed is None:
            raise KMSFieldsConfigurationError(f"{key_arn!r} is not a KMS key ARN.")
        return parsed.region

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.region_of(arn) for arn in self.readable_key_arns))


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with ``KMS_FIELDS``: a check id (``E005``), what is wrong, and how to fix it."""

    id: str
    msg: str
    hint: str


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_text_problem(alias: str, raw: Mapping[str, Any], key: str, check_id: str) -> list[ConfigProblem]:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and value):
        return []
    return [
        ConfigProblem(
            check_id,
            f"KMS_FIELDS[{alias!r}]['{key}'] must be a non-empty string or None, not {value!r}.",
            f"Set {key} to a string, or remove it.",
        )
    ]


def keyring_problems(alias: str, raw: object) -> list[ConfigProblem]:
    """Everything wrong with one keyring's settings; empty when it is valid."""
    where = f"KMS_FIELDS[{alias!r}]"
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

    key_arns = raw.get("KEY_ARNS")
    parsed_arns: list[KeyArn] = []
    if not isinstance(key_arns, (list, tuple)) or not key_arns:
        problems.append(
            ConfigProblem(
                "E005",
                f"{where}['KEY_ARNS'] must be a non-empty list of KMS key ARNs.",
                'For example "KEY_ARNS": ["arn:aws:kms:eu-west-1:111122223333:key/1234abcd-..."]. The first key '
                "generates each data key; every listed key wraps it.",
            )
        )
    elif not all(isinstance(arn, str) for arn in key_arns):
        problems.append(
            ConfigProblem(
                "E006",
                f"{where}['KEY_ARNS'] must hold strings, each a full KMS key ARN.",
                "Use arn:<partition>:kms:<region>:<account>:key/<key-id>.",
            )
        )
    else:
        if len(set(key_arns)) != len(key_arns):
            problems.append(
                ConfigProblem("E005", f"{where}['KEY_ARNS'] lists the same ARN more than once.", "List each key once.")
            )
        for arn in key_arns:
            parsed = parse_key_arn(arn)
            if parsed is None:
                problems.append(
                    ConfigProblem(
                        "E006",
                        f"{where}['KEY_ARNS'] holds {arn!r}, which is not a full KMS key ARN.",
                        "Use arn:<partition>:kms:<region>:<account>:key/<key-id>. Key ids and alias names are not "
                        "accepted: the region is read from the ARN and an alias can be repointed.",
                    )
                )
            else:
                parsed_arns.append(parsed)

    decrypt_arns = raw.get("DECRYPT_KEY_ARNS", [])
    if not isinstance(decrypt_arns, (list, tuple)) or not all(parse_key_arn(arn) for arn in decrypt_arns):
        problems.append(
            ConfigProblem(
                "E022",
                f"{where}['DECRYPT_KEY_ARNS'] must be a list of full KMS key ARNs.",
                "List the keys that may still decrypt old values but must not wrap new data keys, such as "
                "the key you rotated away from.",
            )
        )
    else:
        listed = [arn for arn in key_arns if isinstance(arn, str)] if isinstance(key_arns, (list, tuple)) else []
        overlap = sorted(set(decrypt_arns) & set(listed))
        if overlap or len(set(decrypt_arns)) != len(decrypt_arns):
            problems.append(
                ConfigProblem(
                    "E022",
                    f"{where}['DECRYPT_KEY_ARNS'] repeats a key, or one of KEY_ARNS: {', '.join(overlap) or '-'}.",
                    "A key in KEY_ARNS already decrypts; list each key once.",
                )
            )
        parsed_arns += [parsed for parsed in map(parse_key_arn, decrypt_arns) if parsed is not None]
    problems += _discovery_problems(where, raw.get("DISCOVERY"))

    problems += _optional_text_problem(alias, raw, "REGION_NAME", "E007")
    region_name = raw.get("REGION_NAME")
    if isinstance(region_name, str) and region_name:
        elsewhere = [arn.arn for arn in parsed_arns if arn.region != region_name]
        if elsewhere:
            problems.append(
                ConfigProblem(
                    "E007",
                    f"{where}['REGION_NAME'] is {region_name!r} but these keys are in another region: "
                    + ", ".join(elsewhere)
                    + ".",
                    "Each key is used in the region of its ARN; remove REGION_NAME or fix the ARNs.",
                )
            )

    endpoint_url = raw.get("ENDPOINT_URL")
    if endpoint_url is not None and not (
        isinstance(endpoint_url, str) and endpoint_url.startswith(("http://", "https://"))
    ):
        problems.append(
            ConfigProblem(
                "E016",
                f"{where}['ENDPOINT_URL'] must be an http:// or https:// URL or None, not {endpoint_url!r}.",
                "For example https://vpce-0123-abcd.kms.eu-west-1.vpce.amazonaws.com.",
            )
        )
    elif endpoint_url is not None and len({arn.region for arn in parsed_arns}) > 1:
        problems.append(
            ConfigProblem(
                "E008",
                f"{where} sets ENDPOINT_URL but its keys are in several regions.",
                "An endpoint serves one region: put keys of other regions in their own keyring, or drop "
                "ENDPOINT_URL.",
            )
        )

    problems += _optional_text_problem(alias, raw, "PROFILE_NAME", "E015")

    for key in ("CONNECT_TIMEOUT", "READ_TIMEOUT"):
        value = raw.get(key, KEYRING_DEFAULTS[key])
        if not _is_number(value) or value <= 0:
            problems.append(
                ConfigProblem(
                    "E009",
                    f"{where}['{key}'] must be a positive number of seconds, not {value!r}.",
                    f"The default is {KEYRING_DEFAULTS[key]}. Without a bound a silent KMS endpoint blocks a "
                    "worker for minutes.",
                )
            )

    max_attempts = raw.get("MAX_ATTEMPTS", KEYRING_DEFAULTS["MAX_ATTEMPTS"])
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        problems.append(
            ConfigProblem(
                "E010",
                f"{where}['MAX_ATTEMPTS'] must be a whole number of at least 1, not {max_attempts!r}.",
                "MAX_ATTEMPTS counts every attempt, the first included: 1 means no retry.",
            )
        )

    retry_mode = raw.get("RETRY_MODE", KEYRING_DEFAULTS["RETRY_MODE"])
    if retry_mode not in RETRY_MODES:
        problems.append(
            ConfigProblem(
                "E011",
                f"{where}['RETRY_MODE'] is {retry_mode!r}.",
                "Use one of: " + ", ".join(RETRY_MODES) + ".",
            )
        )

    algorithm = raw.get("ALGORITHM", KEYRING_DEFAULTS["ALGORITHM"])
    if algorithm not in ALGORITHMS:
        problems.append(
            ConfigProblem(
                "E012",
                f"{where}['ALGORITHM'] is {algorithm!r}.",
                "Use one of the committing suites: " + ", ".join(ALGORITHMS) + ".",
            )
        )

    context = raw.get("ENCRYPTION_CONTEXT", {})
    if not isinstance(context, Mapping) or not all(
        isinstance(key, str) and key and isinstance(value, str) for key, value in context.items()
    ):
        problems.append(
            ConfigProblem(
                "E013",
                f"{where}['ENCRYPTION_CONTEXT'] must be a dict of non-empty strings to strings.",
                'For example {"service": "billing"}. It is stored in plaintext: put nothing secret in it.',
            )
        )
    else:
        reserved = sorted(k for k in context if k.startswith(RESERVED_CONTEXT_PREFIX) or k == FIELD_CONTEXT_KEY)
        if reserved:
            problems.append(
                ConfigProblem(
                    "E013",
                    f"{where}['ENCRYPTION_CONTEXT'] uses reserved key(s): {', '.join(reserved)}.",
                    f"Keys starting with {RESERVED_CONTEXT_PREFIX!r} belong to the AWS Encryption SDK and "
                    f"{FIELD_CONTEXT_KEY!r} to this app; choose other names.",
                )
            )

    threshold = raw.get("BREAKER_THRESHOLD", KEYRING_DEFAULTS["BREAKER_THRESHOLD"])
    if threshold is not None and (not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1):
        problems.append(
            ConfigProblem(
                "E017",
                f"{where}['BREAKER_THRESHOLD'] must be a whole number of at least 1, or None, not {threshold!r}.",
                "It is how many consecutive KMS failures open the circuit breaker; None turns the breaker off.",
            )
        )
    cooldown = raw.get("BREAKER_COOLDOWN", KEYRING_DEFAULTS["BREAKER_COOLDOWN"])
    if not _is_number(cooldown) or cooldown <= 0:
        problems.append(
            ConfigProblem(
                "E018",
                f"{where}['BREAKER_COOLDOWN'] must be a positive number of seconds, not {cooldown!r}.",
                f"The default is {KEYRING_DEFAULTS['BREAKER_COOLDOWN']}: how long an open breaker fails fast "
                "before one trial call.",
            )
        )

    problems += _cache_problems(where, raw.get("CACHE", {}))

    client_config = raw.get("CLIENT_CONFIG", {})
    if not isinstance(client_config, Mapping):
        problems.append(
            ConfigProblem(
                "E014",
                f"{where}['CLIENT_CONFIG'] must be a dict of botocore Config options.",
                'For example {"proxies": {"https": "http://proxy:3128"}}.',
            )
        )
    else:
        owned = sorted(key for key in client_config if key in _OWNED_CLIENT_OPTIONS)
        for key in owned:
            problems.append(
                ConfigProblem(
                    "E014",
                    f"{where}['CLIENT_CONFIG'] sets {key!r}, which this keyring sets from its own settings.",
                    f"Use {_OWNED_CLIENT_OPTIONS[key]} instead.",
                )
            )
        if not owned:
            try:
                Config(**client_config)
            except (TypeError, ValueError) as err:
                problems.append(
                    ConfigProblem(
                        "E014",
                        f"{where}['CLIENT_CONFIG'] is not accepted by botocore: {err}",
                        "See botocore.config.Config for the options it takes.",
                    )
                )
    return problems


def _discovery_problems(where: str, discovery: object) -> list[ConfigProblem]:
    if discovery is None:
        return []
    hint = (
        'For example "DISCOVERY": {"ACCOUNT_IDS": ["111122223333"], "PARTITION": "aws"}: values wrapped by any '
        "key of those accounts may then be decrypted, if IAM allows it."
    )
    if not isinstance(discovery, Mapping) or set(discovery) != {"ACCOUNT_IDS", "PARTITION"}:
        return [ConfigProblem("E023", f"{where}['DISCOVERY'] must be a dict with ACCOUNT_IDS and PARTITION.", hint)]
    accounts = discovery["ACCOUNT_IDS"]
    if (
        not isinstance(accounts, (list, tuple))
        or not accounts
        or not all(isinstance(a, str) and re.fullmatch(r"\d{12}", a) for a in accounts)
        or not (isinstance(discovery["PARTITION"], str) and re.fullmatch(r"aws[a-z-]*", discovery["PARTITION"]))
    ):
        return [
            ConfigProblem(
                "E023",
                f"{where}['DISCOVERY'] needs a non-empty list of 12-digit ACCOUNT_IDS and a PARTITION such as 'aws'.",
                hint,
            )
        ]
    return []


def _cache_problems(where: str, cache: object) -> list[ConfigProblem]:
    if cache is None:
        return []
    hint = (
        'For example "CACHE": {"MAX_AGE": 300, "MAX_MESSAGES": 1000, "CAPACITY": 1000}, or None to call KMS '
        "for every value."
    )
    if not isinstance(cache, Mapping):
        return [ConfigProblem("E019", f"{where}['CACHE'] must be a dict or None.", hint)]
    problems = []
    unknown = sorted(str(key) for key in cache if key not in CACHE_DEFAULTS)
    if unknown:
        problems.append(ConfigProblem("E019", f"{where}['CACHE'] has unknown key(s): {', '.join(unknown)}.", hint))
    max_age = cache.get("MAX_AGE", CACHE_DEFAULTS["MAX_AGE"])
    if not _is_number(max_age) or max_age <= 0:
        problems.append(ConfigProblem("E019", f"{where}['CACHE']['MAX_AGE'] must be a positive number of seconds.", hint))
    for key, upper in (("MAX_MESSAGES", _MAX_MESSAGES_LIMIT), ("CAPACITY", None)):
        value = cache.get(key, CACHE_DEFAULTS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (upper and value > upper):
            limit = f" and at most {upper}" if upper else ""
            problems.append(
                ConfigProblem("E019", f"{where}['CACHE']['{key}'] must be a whole number of at least 1{limit}.", hint)
            )
    return problems


def settings_problems() -> list[ConfigProblem]:
    """Everything wrong with ``settings.KMS_FIELDS`` as a whole."""
    raw = getattr(settings, SETTING_NAME, None)
    if not isinstance(raw, Mapping) or not raw:
        return [
            ConfigProblem(
                "E001",
                "KMS_FIELDS is missing, empty or not a dict.",
                'Add KMS_FIELDS = {"default": {"KEY_ARNS": ["arn:aws:kms:..."]}} to your settings.',
            )
        ]
    problems = []
    if DEFAULT_KEYRING not in raw:
        problems.append(
            ConfigProblem(
                "E002",
                "KMS_FIELDS has no 'default' keyring.",
                "Fields use keyring='default' unless told otherwise; add it, as with DATABASES.",
            )
        )
    for alias, keyring in raw.items():
        problems += keyring_problems(str(alias), keyring)
    return problems


def _raw_setting() -> Mapping[str, Any]:
    raw = getattr(settings, SETTING_NAME, None)
    if not isinstance(raw, Mapping) or not raw:
        problem = settings_problems()[0]
        raise KMSFieldsConfigurationError(f"{problem.msg} {problem.hint}")
    return raw


def keyring_aliases() -> list[str]:
    """The aliases configured in ``KMS_FIELDS``; empty when the setting is missing or not a dict."""
    raw = getattr(settings, SETTING_NAME, None)
    return list(raw) if isinstance(raw, Mapping) else []


_keyring_cache: dict[str, KeyringConfig] = {}
_reset_callbacks: list[Callable[[], None]] = []
_lock = threading.Lock()
_generation = 0


def is_current(keyring: KeyringConfig) -> bool:
    """Whether ``keyring`` is what ``get_keyring`` hands out now, and not from before a settings change.

    ``get_keyring`` returns one object per alias until ``KMS_FIELDS`` changes, so modules that cache
    what they build from a keyring key their entries on its identity, and store a new entry only while
    it is current: a thread that started with the old settings cannot leave a stale entry behind.
    """
    return _keyring_cache.get(keyring.alias) is keyring


def get_keyring(alias: str = DEFAULT_KEYRING) -> KeyringConfig:
    """The validated configuration of one keyring; raises ``KMSFieldsConfigurationError`` when invalid."""
    try:
        return _keyring_cache[alias]
    except KeyError:
        pass
    started_generation = _generation
    raw_setting = _raw_setting()
    if alias not in raw_setting:
        raise KMSFieldsConfigurationError(
            f"KMS_FIELDS has no keyring {alias!r}; configured: {', '.join(map(repr, raw_setting))}."
        )
    raw = raw_setting[alias]
    problems = keyring_problems(alias, raw)
    if problems:
        raise KMSFieldsConfigurationError(
            " ".join(f"{p.msg} {p.hint} (kms_fields.{p.id})" for p in problems)
        )
    values = {**KEYRING_DEFAULTS, **raw}
    keyring = KeyringConfig(
        alias=alias,
        key_arns=tuple(values["KEY_ARNS"]),
        region_name=values["REGION_NAME"],
        endpoint_url=values["ENDPOINT_URL"],
        profile_name=values["PROFILE_NAME"],
        connect_timeout=float(values["CONNECT_TIMEOUT"]),
        read_timeout=float(values["READ_TIMEOUT"]),
        max_attempts=values["MAX_ATTEMPTS"],
        retry_mode=values["RETRY_MODE"],
        client_config=MappingProxyType(dict(values["CLIENT_CONFIG"])),
        algorithm=values["ALGORITHM"],
        encryption_context=MappingProxyType(dict(values["ENCRYPTION_CONTEXT"])),
        breaker_threshold=values["BREAKER_THRESHOLD"],
        breaker_cooldown=float(values["BREAKER_COOLDOWN"]),
        cache=None if values["CACHE"] is None else _cache_config({**CACHE_DEFAULTS, **values["CACHE"]}),
        decrypt_key_arns=tuple(values["DECRYPT_KEY_ARNS"]),
        discovery=None
        if values["DISCOVERY"] is None
        else DiscoveryConfig(
            account_ids=frozenset(values["DISCOVERY"]["ACCOUNT_IDS"]), partition=values["DISCOVERY"]["PARTITION"]
        ),
    )
    with _lock:
        if started_generation == _generation:
            _keyring_cache[alias] = keyring
    return keyring


class KeyringCache(Generic[T]):
    """Things built from a keyring (clients, breakers, data-key caches), shared by all threads.

    An entry is reused only for the very ``KeyringConfig`` object it was built from, and stored only
    while that object is current; the cache empties itself when ``KMS_FIELDS`` changes.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[KeyringConfig, T]] = {}
        self._lock = threading.Lock()
        on_settings_reset(self.clear)

    def get(self, keyring: KeyringConfig, key: Hashable, build: Callable[[], T]) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is keyring:
            return entry[1]
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is keyring:
                return entry[1]
            value = build()
            if is_current(keyring):
                self._entries[key] = (keyring, value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _cache_config(values: Mapping[str, Any]) -> CacheConfig:
    return CacheConfig(
        max_age=float(values["MAX_AGE"]), max_messages=values["MAX_MESSAGES"], capacity=values["CAPACITY"]
    )


def on_settings_reset(callback: Callable[[], None]) -> Callable[[], None]:
    """Register ``callback`` to run whenever ``KMS_FIELDS`` changes; usable as a decorator."""
    _reset_callbacks.append(callback)
    return callback


def reset() -> None:
    """Forget every cached keyring and everything built from one."""
    global _generation
    with _lock:
        _generation += 1
        _keyring_cache.clear()
    for callback in _reset_callbacks:
        callback()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_kms_fields.conf")

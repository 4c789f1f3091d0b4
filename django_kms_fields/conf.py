"""The one reader of ``settings.KMS_FIELDS``.

Each keyring alias is validated (by ``validation``, which also feeds the system checks, so
``manage.py check`` and the first encrypt or decrypt report a mistake in the same words) into an
immutable ``KeyringConfig`` with every default filled in. Results are cached and dropped when Django's
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

from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import KMSFieldsConfigurationError

__all__ = [
    "ConfigProblem",
    "SETTING_NAME",
    "DEFAULT_KEYRING",
    "ALGORITHMS",
    "RETRY_MODES",
    "KeyringConfig",
    "KeyArn",
    "parse_key_arn",
    "get_keyring",
    "keyring_aliases",
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
        "MAX_MESSAGE_BYTES": 16 * 1024 * 1024,
        "REQUIRE_ALGORITHM": False,
        "INDEX_KEY_ARN": None,
        "PREVIOUS_INDEX_KEY_ARNS": [],
    }
)

CACHE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"MAX_AGE": 300, "MAX_MESSAGES": 1000, "CAPACITY": 1000})

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
class ConfigProblem:
    """One thing wrong with ``KMS_FIELDS``: a check id (``E005``), what is wrong, and how to fix it."""

    id: str
    msg: str
    hint: str


@dataclass(frozen=True)
class CacheConfig:
    """Data-key caching of one keyring: how long, for how many values, how many entries."""

    max_age: float
    max_messages: int
    capacity: int


@dataclass(frozen=True)
class DiscoveryConfig:
    """Decrypt with any key of these accounts in this partition and regions, besides the listed keys."""

    account_ids: frozenset[str]
    partition: str
    regions: frozenset[str]


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
    max_message_bytes: int = 16 * 1024 * 1024
    require_algorithm: bool = False
    index_key_arn: str | None = None
    previous_index_key_arns: tuple[str, ...] = ()

    @property
    def index_root_max_age(self) -> float:
        """How long a blind-index root derived from KMS may stay in memory: the data-key cache's MAX_AGE."""
        return (self.cache.max_age if self.cache is not None else CACHE_DEFAULTS["MAX_AGE"])

    @property
    def readable_key_arns(self) -> tuple[str, ...]:
        """Every listed key that may decrypt: the wrapping keys first, then the decrypt-only ones."""
        return self.key_arns + self.decrypt_key_arns

    def region_of(self, key_arn: str) -> str:
        parsed = parse_key_arn(key_arn)
        if parsed is None:
            raise KMSFieldsConfigurationError(f"{key_arn!r} is not a KMS key ARN.")
        return parsed.region


def _raw_setting() -> Mapping[str, Any]:
    raw = getattr(settings, SETTING_NAME, None)
    if not isinstance(raw, Mapping) or not raw:
        problem = validation.settings_problems()[0]
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
    problems = validation.keyring_problems(alias, raw)
    if problems:
        raise KMSFieldsConfigurationError(
            " ".join(f"{p.msg} {p.hint} (kms_fields.{p.id})" for p in problems)
        )
    keyring = _keyring_config(alias, {**KEYRING_DEFAULTS, **raw})
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


def _keyring_config(alias: str, values: Mapping[str, Any]) -> KeyringConfig:
    return KeyringConfig(
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
        discovery=None if values["DISCOVERY"] is None else _discovery_config(values),
        max_message_bytes=values["MAX_MESSAGE_BYTES"],
        require_algorithm=values["REQUIRE_ALGORITHM"],
        index_key_arn=values["INDEX_KEY_ARN"],
        previous_index_key_arns=tuple(values["PREVIOUS_INDEX_KEY_ARNS"]),
    )


def _discovery_config(values: Mapping[str, Any]) -> DiscoveryConfig:
    discovery = values["DISCOVERY"]
    # By default only the regions of the listed keys: each region costs a client and a breaker, so a
    # stored value must not be able to make the process open one for any region it names.
    own_regions = (parse_key_arn(arn).region for arn in (*values["KEY_ARNS"], *values["DECRYPT_KEY_ARNS"]))  # type: ignore[union-attr]
    return DiscoveryConfig(
        account_ids=frozenset(discovery["ACCOUNT_IDS"]),
        partition=discovery["PARTITION"],
        regions=frozenset(discovery.get("REGIONS") or own_regions),
    )


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


# Last: validation reads this module's constants, and this module calls it only at run time.
from . import validation  # noqa: E402

"""Blind indexes: a keyed hash of each value of a searchable field, so that the database can answer
equality without ever seeing the value or the key.

The key hierarchy (docs/design.md explains why it is built this way):

- root: one KMS ``GenerateMac`` call (HMAC_SHA_256) with the keyring's ``INDEX_KEY_ARN`` over a fixed,
  versioned message. It exists only in this process's memory, for at most the keyring's cache
  ``MAX_AGE``; deriving it again needs ``kms:GenerateMac`` on the key, which IAM governs and CloudTrail
  records. One call per index key per ``MAX_AGE`` per process, never one per query or per row.
- field key: HKDF-SHA256 of the root with the field's binding label as ``info``, so equal values in
  two fields have unrelated indexes.
- index: ``<tag><HMAC-SHA256(field key, canonical value)>`` in lowercase hex. The tag (8 hex digits)
  names the index key and the normaliser without revealing anything about values, so the database can
  count the rows still indexed under an older key.

Lookups match the current key and every key of ``PREVIOUS_INDEX_KEY_ARNS``, so rotating the index key
never makes a row unfindable while ``kms_fields_reindex`` rebuilds the column.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.views.decorators.debug import sensitive_variables

from . import clients, conf
from .conf import KeyringConfig
from .exceptions import KMSFieldsConfigurationError, KMSRequestError

__all__ = ["FieldIndexKey", "index_keys", "current_index_key_and_expiry", "INDEX_LENGTH", "ROOT_MESSAGE"]

# The message whose MAC is the root. Versioned: another derivation would use another message.
ROOT_MESSAGE = b"django-kms-fields blind index root v1"
_FIELD_KEY_INFO = b"django-kms-fields blind index field key v1\x00"
_TAG_MESSAGE = b"django-kms-fields blind index tag v1\x00"
TAG_LENGTH = 8

_clock = time.monotonic  # replaceable, so that tests can pass MAX_AGE without sleeping
INDEX_LENGTH = TAG_LENGTH + 64


@dataclass(frozen=True, repr=False)
class FieldIndexKey:
    """The key one field's indexes are computed with under one index key; ``repr`` never shows it."""

    key_arn: str
    tag: str
    secret: bytes
    # Keyed once; each value copies it (a third cheaper than keying HMAC again per value).
    _keyed: Any = field(init=False, compare=False)

    def __post_init__(self) -> None:
        keyed = hmac.new(self.secret, digestmod=hashlib.sha256)
        # CPython's hmac.HMAC wraps OpenSSL's HMAC object (``_hmac``) where it has one; copying that
        # object directly skips the Python wrapper built per copy, more than half of an index's cost
        # (1.3 us instead of 2.9 us measured). Where it is missing, the public object does the same.
        openssl_hmac = getattr(keyed, "_hmac", None)
        usable = all(hasattr(openssl_hmac, name) for name in ("copy", "update", "hexdigest"))
        object.__setattr__(self, "_keyed", openssl_hmac if usable else keyed)

    def index(self, plaintext: bytes) -> str:
        # Length-prefixed, so that no two different values (or a value and a future compound of several)
        # can ever be encoded to the same bytes.
        mac = self._keyed.copy()
        mac.update(len(plaintext).to_bytes(8, "big") + plaintext)
        return self.tag + mac.hexdigest()

    def __repr__(self) -> str:
        return f"FieldIndexKey(key_arn={self.key_arn!r}, tag={self.tag!r})"


class _RootCache:
    """Roots by (keyring, key ARN), each dropped ``MAX_AGE`` seconds after KMS gave it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Slots name the keyring by alias: every settings change clears the cache (conf.on_settings_reset),
        # and hashing a whole KeyringConfig would cost more than the HMAC itself.
        self._roots: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._fetching: dict[tuple[str, str], threading.Lock] = {}
        self._field_keys: dict[tuple[str, str, str, str], tuple[float, FieldIndexKey]] = {}

    def root(self, keyring: KeyringConfig, key_arn: str) -> tuple[float, bytes]:
        """The root and the monotonic time it expires at."""
        slot = (keyring.alias, key_arn)
        cached = self._fresh(slot)
        if cached is not None:
            return cached
        with self._lock:
            fetch_lock = self._fetching.setdefault(slot, threading.Lock())
        # One KMS call per key however many threads miss at once; the others wait for its answer.
        with fetch_lock:
            cached = self._fresh(slot)
            if cached is not None:
                return cached
            root = _root_from_kms(keyring, key_arn)
            entry = (_clock() + keyring.index_root_max_age, root)
            with self._lock:
                self._roots[slot] = entry
            return entry

    def field_key(self, keyring: KeyringConfig, key_arn: str, label: str, variant: str) -> tuple[float, FieldIndexKey]:
        """The field's key, derived once per root (the per-value cost is one HMAC), and when it expires."""
        slot = (keyring.alias, key_arn, label, variant)
        entry = self._field_keys.get(slot)  # a dict read is atomic; writes take the lock
        if entry is not None and _clock() < entry[0]:
            return entry
        expires, root = self.root(keyring, key_arn)
        entry = (expires, _derive_field_key(root, key_arn, label, variant))
        with self._lock:
            self._field_keys[slot] = entry
        return entry

    def _fresh(self, slot: tuple[str, str]) -> tuple[float, bytes] | None:
        with self._lock:
            entry = self._roots.get(slot)
            if entry is None:
                return None
            if _clock() < entry[0]:
                return entry
            del self._roots[slot]
            return None

    def clear(self) -> None:
        global generation
        generation += 1
        with self._lock:
            self._roots.clear()
            self._field_keys.clear()
            self._fetching.clear()


# Bumped whenever the roots are dropped, so that memos of field keys (fields.py) are dropped with them.
generation = 0

_roots = _RootCache()
conf.on_settings_reset(_roots.clear)


def forget_roots() -> None:
    """Drop every root this process holds; the next index needs KMS again."""
    _roots.clear()


@sensitive_variables("answer", "mac")
def _root_from_kms(keyring: KeyringConfig, key_arn: str) -> bytes:
    region = keyring.region_of(key_arn)
    with clients.kms_operation("GenerateMac", key_arn, region, keyring):
        answer = clients.kms_client(keyring, region).generate_mac(
            KeyId=key_arn, MacAlgorithm="HMAC_SHA_256", Message=ROOT_MESSAGE
        )
    mac = answer.get("Mac", b"")
    if len(mac) != 32:
        raise KMSRequestError(
            f"KMS GenerateMac with key {key_arn} gave a MAC of {len(mac)} bytes, not 32: is it an HMAC_256 key?",
            operation="GenerateMac", key_arn=key_arn, region=region, code="MacLength",
        )
    return mac


@sensitive_variables("root", "secret")
def _derive_field_key(root: bytes, key_arn: str, label: str, variant: str) -> FieldIndexKey:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FIELD_KEY_INFO + label.encode("utf-8"))
    secret = hkdf.derive(root)
    tag = hmac.new(secret, _TAG_MESSAGE + variant.encode("utf-8"), hashlib.sha256).hexdigest()[:TAG_LENGTH]
    return FieldIndexKey(key_arn=key_arn, tag=tag, secret=secret)


def index_keys(keyring: KeyringConfig, label: str, variant: str) -> list[FieldIndexKey]:
    """The field's index keys: the current one first, then those of ``PREVIOUS_INDEX_KEY_ARNS``.

    ``variant`` names the field's search normaliser and the options that change how a value is encoded;
    it goes into the tag, so that rows indexed under another variant show up as not current.
    """
    arns = (_index_key_arn(keyring), *keyring.previous_index_key_arns)
    return [_roots.field_key(keyring, arn, label, variant)[1] for arn in arns]


def current_index_key_and_expiry(keyring: KeyringConfig, label: str, variant: str) -> tuple[float, FieldIndexKey]:
    """The current field key, and the ``clock()`` time after which it must be asked for again."""
    return _roots.field_key(keyring, _index_key_arn(keyring), label, variant)


def _index_key_arn(keyring: KeyringConfig) -> str:
    if keyring.index_key_arn is None:
        raise KMSFieldsConfigurationError(
            f"{conf.SETTING_NAME}[{keyring.alias!r}] has no INDEX_KEY_ARN, which searchable fields need: "
            "create a KMS HMAC key (KeySpec HMAC_256, KeyUsage GENERATE_VERIFY_MAC) and set its ARN.",
            code="NoIndexKey",
        )
    return keyring.index_key_arn


def clock() -> float:
    return _clock()


def indexes_matching(keys: Iterable[FieldIndexKey], plaintexts: Iterable[bytes]) -> list[str]:
    """Every index a lookup for these values must match: each value under each key."""
    keys = list(keys)
    return [key.index(plaintext) for plaintext in plaintexts for key in keys]


def normalizer_name(normalizer: Callable[..., object] | None) -> str:
    if normalizer is None:
        return ""
    return f"{getattr(normalizer, '__module__', '')}.{getattr(normalizer, '__qualname__', repr(normalizer))}"

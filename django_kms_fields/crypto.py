"""Turns (plaintext, keyring, field) into an AWS Encryption SDK message and back.

This is the one place that runs the SDK's encrypt and decrypt, and the one place where the exceptions
they raise become ours. How it is wired, and why (see docs/design.md):

- The keyring's KMS keys are SDK master keys held by one provider (``keys``), whose KMS calls go
  through ``clients.kms_operation`` (timeouts, breaker, signal, error translation).
- A materials manager checks, before any KMS call, that a message's encryption context binds it to
  the field that reads it, so a foreign or copied value fails without a KMS call.
- Master key providers are not thread safe, so each thread builds its own SDK objects; clients and
  the data-key cache are shared.
"""

from __future__ import annotations

import io
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import aws_encryption_sdk
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager
from cryptography.exceptions import InvalidSignature, InvalidTag
from django.views.decorators.debug import sensitive_variables

from . import conf, fastpath
from .caching import RememberingCachingMaterialsManager
from .conf import FIELD_CONTEXT_KEY, RESERVED_CONTEXT_PREFIX, KeyringConfig
from .exceptions import DecryptionError, KMSFieldsError
from .headers import (
    FRAME_LENGTH,
    MALFORMED_HEADER_ERRORS,
    body_shape,
    is_current_message,
    looks_like_message,
    wrapping_key_arns,
)
from .keys import KeyringMasterKeyProvider
from .probe import KeyProbe, probe_key

__all__ = [
    "FieldBinding",
    "encrypt",
    "decrypt",
    "encryption_context_for",
    # Kept importable from here for code written against 0.1; they live in headers and probe now.
    "looks_like_message",
    "is_current_message",
    "wrapping_key_arns",
    "KeyProbe",
    "probe_key",
]

# Beyond the keyring's own keys, room for the keys of an earlier KEY_ARNS; a hostile header that
# claims thousands of data keys is refused before any of them is parsed.
_SPARE_ENCRYPTED_DATA_KEYS = 8

# What the SDK raises for a value that is not a valid message: what its header parser raises, and the
# cryptography package's authentication failures. The hostile-value fuzz (tests/test_hostile_values.py)
# proves the list complete; anything else is a bug or an SDK change, and is let through as it is.
MALFORMED_MESSAGE_ERRORS = (*MALFORMED_HEADER_ERRORS, InvalidTag, InvalidSignature)


@dataclass(frozen=True)
class FieldBinding:
    """Which column a message belongs to.

    ``label`` goes into every message's encryption context (``app_label.model_name.field_name`` unless
    the field pins another); ``description`` names the field in error messages.
    """

    label: str
    description: str


def encryption_context_for(keyring: KeyringConfig, binding: FieldBinding) -> dict[str, str]:
    """The encryption context every message of ``binding`` carries: the keyring's pairs plus the field."""
    return {**keyring.encryption_context, FIELD_CONTEXT_KEY: binding.label}


class _FieldBoundMaterialsManager(CryptoMaterialsManager):
    """Checks, before any KMS call, that a message was written for the field that is reading it.

    The SDK compares an expected encryption context only on its MPL path; here the message header's
    context (less the SDK's own reserved pairs) must equal the field's exactly.
    """

    def __init__(self, inner: CryptoMaterialsManager, expected_context: Mapping[str, str]) -> None:
        self._inner = inner
        self._expected_context = expected_context

    def get_encryption_materials(self, request):  # type: ignore[no-untyped-def]
        return self._inner.get_encryption_materials(request)

    def decrypt_materials(self, request):  # type: ignore[no-untyped-def]
        context = request.encryption_context
        if context == self._expected_context:
            # The expected context has no reserved pair (the settings check refuses them), so neither
            # has this one: both checks below would pass.
            return self._inner.decrypt_materials(request)
        reserved = {key for key in context if key.startswith(RESERVED_CONTEXT_PREFIX)}
        allowed = {_SIGNING_KEY_CONTEXT_KEY} if request.algorithm.is_signing() else set()
        if reserved - allowed:
            names = ", ".join(_shown(key) for key in sorted(reserved - allowed))
            raise DecryptionError(f"the stored value's encryption context has reserved pairs the AWS Encryption SDK did not write: {names}.")
        stored = {key: value for key, value in context.items() if key not in reserved}
        if stored != self._expected_context:
            raise DecryptionError(f"the stored value is not bound to this field: {self._mismatch(stored)}.")
        return self._inner.decrypt_materials(request)

    def _mismatch(self, stored: Mapping[str, str]) -> str:
        stored_label = stored.get(FIELD_CONTEXT_KEY)
        expected_label = self._expected_context[FIELD_CONTEXT_KEY]
        if stored_label != expected_label:
            return f"it was written for {_shown(stored_label)}, not {expected_label!r}"
        differing = {key for key, _ in set(stored.items()) ^ set(self._expected_context.items())}
        return "its encryption context differs from the keyring's ENCRYPTION_CONTEXT in " + ", ".join(
            _shown(key) for key in sorted(differing)
        )


# The one reserved pair the SDK writes itself, and only under a signing suite.
_SIGNING_KEY_CONTEXT_KEY = "aws-crypto-public-key"
_SHOWN_LENGTH = 80


def _shown(text: object) -> str:
    """Text read from a stored value, safe to put in an error message or a log line: escaped by
    ``repr`` (no newline can forge a log line) and cut to a bounded length."""
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_LENGTH else shown[: _SHOWN_LENGTH - 5] + "...'" + f" ({len(str(text))} characters)"


# --- per-thread SDK objects ---------------------------------------------------------------------------


# One data-key cache per keyring, shared by every thread's caching CMM (the SDK's local cache locks
# itself); the partition name must be shared too, or each thread would only see its own entries.
_caches: conf.KeyringCache[LocalCryptoMaterialsCache] = conf.KeyringCache()


class _ThreadState(threading.local):
    def __init__(self) -> None:
        # alias -> (the keyring they were built from, SDK client, materials manager)
        self.sdk_objects: dict[str, tuple[KeyringConfig, aws_encryption_sdk.EncryptionSDKClient, CryptoMaterialsManager]] = {}
        # (alias, field label) -> what writing and reading that field's messages needs
        self.field_crypto: dict[tuple[str, str], _FieldCrypto] = {}


_thread_state = _ThreadState()


def _max_encrypted_data_keys(keyring: KeyringConfig) -> int:
    return len(keyring.readable_key_arns) + _SPARE_ENCRYPTED_DATA_KEYS


def _sdk_objects(keyring: KeyringConfig) -> tuple[aws_encryption_sdk.EncryptionSDKClient, CryptoMaterialsManager]:
    """This thread's SDK client and materials manager for ``keyring``, rebuilt when its settings change."""
    entry = _thread_state.sdk_objects.get(keyring.alias)
    if entry is not None and entry[0] is keyring:
        return entry[1], entry[2]
    provider = KeyringMasterKeyProvider(keyring=keyring)
    manager: CryptoMaterialsManager = DefaultCryptoMaterialsManager(master_key_provider=provider)
    cache_config = keyring.cache
    if cache_config is not None:
        manager = RememberingCachingMaterialsManager(
            backing_materials_manager=manager,
            cache=_caches.get(keyring, keyring.alias, lambda: LocalCryptoMaterialsCache(cache_config.capacity)),
            max_age=cache_config.max_age,
            max_messages_encrypted=cache_config.max_messages,
            partition_name=f"django-kms-fields/{keyring.alias}",
        )
    sdk_client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=_max_encrypted_data_keys(keyring),
    )
    _thread_state.sdk_objects[keyring.alias] = (keyring, sdk_client, manager)
    return sdk_client, manager


class _FieldCrypto(NamedTuple):
    """What one thread needs to write and read one field's messages under one keyring: built once per
    field and keyring (it holds nothing per value), so a value costs one lookup here."""

    keyring: KeyringConfig
    sdk_client: aws_encryption_sdk.EncryptionSDKClient
    manager: CryptoMaterialsManager
    bound_manager: CryptoMaterialsManager  # checks the field binding before any KMS call
    encryption_context: dict[str, str]  # never changed: the SDK path is handed a copy
    max_encrypted_data_keys: int
    fast_path_writes: bool  # the keyring's suite is the fast path's
    fast_path_reads: bool  # the fast path may read: unless REQUIRE_ALGORITHM names another suite


def _field_crypto(keyring: KeyringConfig, binding: FieldBinding) -> _FieldCrypto:
    key = (keyring.alias, binding.label)
    entry = _thread_state.field_crypto.get(key)
    if entry is not None and entry.keyring is keyring:
        return entry
    sdk_client, manager = _sdk_objects(keyring)
    context = encryption_context_for(keyring, binding)
    fast_path_writes = fastpath.handles_suite(keyring.algorithm)
    entry = _FieldCrypto(
        keyring=keyring,
        sdk_client=sdk_client,
        manager=manager,
        bound_manager=_FieldBoundMaterialsManager(manager, dict(context)),
        encryption_context=context,
        max_encrypted_data_keys=_max_encrypted_data_keys(keyring),
        fast_path_writes=fast_path_writes,
        fast_path_reads=fast_path_writes or not keyring.require_algorithm,
    )
    _thread_state.field_crypto[key] = entry
    return entry


# --- the public operations ----------------------------------------------------------------------------


def _where(binding: FieldBinding, pk: object) -> str:
    """How error messages name the value: model and field, and the row when it is known."""
    return binding.description if pk is None else f"{binding.description} (pk={pk!r})"


def encrypt(plaintext: bytes, keyring: KeyringConfig, binding: FieldBinding) -> bytes:
    """One AWS Encryption SDK message holding ``plaintext``, bound to ``binding``."""
    outcome = _write_message(plaintext, keyring, binding)
    if isinstance(outcome, bytes):
        return outcome
    failure, cause = outcome
    # Raised here, out of any except block: no __context__ reaches the SDK's frames.
    raise failure.with_prefix(_where(binding, None)) from cause


def decrypt(message: bytes, keyring: KeyringConfig, binding: FieldBinding, pk: object = None) -> bytes:
    """The plaintext of ``message``; raises ``DecryptionError`` unless it is a valid message for ``binding``.

    Nothing this raises reaches a frame that holds the plaintext, the data key or a key derived from
    it: a tampered value must not turn an error page or an error tracker into a way to read it.
    """
    outcome = _read_message(message, keyring, binding)
    if isinstance(outcome, bytes):
        return outcome
    failure, cause = outcome
    raise failure.with_prefix(_where(binding, pk)) from cause


_Failure = tuple[KMSFieldsError, "BaseException | None"]


@sensitive_variables("plaintext")
def _write_message(plaintext: bytes, keyring: KeyringConfig, binding: FieldBinding) -> bytes | _Failure:
    field_crypto = _field_crypto(keyring, binding)
    try:
        if field_crypto.fast_path_writes and fastpath.ENABLED:
            return fastpath.write(
                plaintext, field_crypto.manager, field_crypto.encryption_context, field_crypto.max_encrypted_data_keys
            )
        message, _header = field_crypto.sdk_client.encrypt(
            source=plaintext,
            materials_manager=field_crypto.manager,
            encryption_context=dict(field_crypto.encryption_context),
            algorithm=Algorithm[keyring.algorithm],
            frame_length=FRAME_LENGTH,
        )
        return message
    except KMSFieldsError as err:
        return _forgetting_secrets(err, err.__cause__)
    except AWSEncryptionSDKClientError as err:
        failure = KMSFieldsError(f"the AWS Encryption SDK failed to encrypt ({type(err).__name__}).", code=type(err).__name__)
        return _forgetting_secrets(failure, None, err)


@sensitive_variables("plaintext", "decryptor", "outcome", "bound")
def _read_message(message: bytes, keyring: KeyringConfig, binding: FieldBinding) -> bytes | _Failure:
    if len(message) > keyring.max_message_bytes:
        return _shape_refusal(message, keyring), None
    field_crypto = _field_crypto(keyring, binding)
    bound = field_crypto.bound_manager
    # The fast path reads only framed 4096-byte messages of its suite, so for what it reads the shape
    # refusal below has nothing to say, unless REQUIRE_ALGORITHM names another suite.
    if field_crypto.fast_path_reads and fastpath.ENABLED:
        try:
            outcome = fastpath.read(message, bound, field_crypto.max_encrypted_data_keys)
        except KMSFieldsError as err:
            return _forgetting_secrets(err, err.__cause__)
        except MALFORMED_MESSAGE_ERRORS as err:
            return _malformed(err)
        if isinstance(outcome, bytes):
            return outcome
        # Not of the shape the fast path reads, or failing one of its checks: the SDK decides, and
        # reports in its own words (with the materials already obtained: no second KMS call).
        bound = outcome.materials_manager
    refusal = _shape_refusal(message, keyring)
    if refusal is not None:
        return refusal, None
    source = io.BytesIO(message)
    # Not a ``with`` block: on failure the SDK's __exit__ logs a second, misleading traceback
    # ("Footer not read") at ERROR level.
    decryptor = field_crypto.sdk_client.stream(mode="d", source=source, materials_manager=bound)
    try:
        plaintext = decryptor.read()
        decryptor.close()
        if not source.read(1):
            return plaintext
        # The SDK stops at the end of the message and ignores what follows; a stored value is
        # exactly one message, so anything appended means it was altered.
        del plaintext
        return DecryptionError("the stored value has bytes after the end of its message.", code="TrailingBytes"), None
    except KMSFieldsError as err:
        return _forgetting_secrets(err, err.__cause__)
    except MALFORMED_MESSAGE_ERRORS as err:
        return _malformed(err)
    finally:
        if not decryptor.closed:
            # The SDK's close() raises "Footer not read" for a message that failed part-way; left to
            # the garbage collector, Python 3.13 reports that as an unraisable exception.
            io.IOBase.close(decryptor)


def _malformed(err: BaseException) -> _Failure:
    # The type is named, never the bytes; the SDK's exception is dropped, not chained: its frames
    # hold the derived key and any plaintext of frames already authenticated.
    name = type(err).__name__
    failure = DecryptionError(f"the stored value is not a valid encrypted message for this field ({name}).", code=name)
    return _forgetting_secrets(failure, None, err)


def _shape_refusal(message: bytes, keyring: KeyringConfig) -> DecryptionError | None:
    """Why ``message`` is refused before any KMS call or body work, if it is: too large, framed
    otherwise than this app writes, or (with ``REQUIRE_ALGORITHM``) under another suite."""
    if len(message) > keyring.max_message_bytes:
        return DecryptionError(
            f"the stored value is {len(message)} bytes, over MAX_MESSAGE_BYTES={keyring.max_message_bytes}.",
            code="MessageTooLarge",
        )
    shape = body_shape(message)
    if shape is None:
        return None  # not laid out like a message at all: the SDK refuses it in its own words
    if not shape.framed or shape.frame_length != FRAME_LENGTH:
        return DecryptionError(
            f"the stored value is not framed as this app writes messages (frames of {FRAME_LENGTH} bytes).",
            code="FrameLength",
        )
    if keyring.require_algorithm and shape.suite_id != Algorithm[keyring.algorithm].algorithm_id:
        return DecryptionError(
            f"the stored value uses another algorithm suite than ALGORITHM={keyring.algorithm}, and the keyring "
            "sets REQUIRE_ALGORITHM.",
            code="AlgorithmSuite",
        )
    return None


def _forgetting_secrets(failure: KMSFieldsError, cause: BaseException | None, *dropped: BaseException) -> _Failure:
    """``failure`` and the ``cause`` to chain to it, after clearing the local variables of every finished
    frame that ``cause`` or a ``dropped`` exception still references (the SDK's frames hold data keys).
    File and line stay in the traceback; only the variables go."""
    pending = [exc for exc in (failure, cause, *dropped) if exc is not None]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        pending += [linked for linked in (exc.__cause__, exc.__context__) if linked is not None]
    return failure, cause

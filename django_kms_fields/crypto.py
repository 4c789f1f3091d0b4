"""Turns (plaintext, keyring, field) into an AWS Encryption SDK message and back.

This is the one place that talks to the SDK and the one place where SDK and botocore exceptions become
ours. How it is wired, and why (see docs/design.md):

- Each KMS key of a keyring is a ``KMSMasterKey`` built around the shared boto3 client that
  ``clients`` made from the keyring's settings, so timeouts, attempts and endpoint are ours.
- A provider of our own holds every key of the keyring: the first generates the data key and every key
  wraps it (a lone ``KMSMasterKey`` would silently wrap with one key only). On decryption it tries only
  data keys wrapped by a key of the keyring, and only after the message's encryption context was found
  to bind it to the field that reads it, so a foreign or copied value fails without a KMS call.
- Master key providers are not thread safe, so each thread builds its own; clients are shared.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import attr
import aws_encryption_sdk
from aws_encryption_sdk.exceptions import (
    DecryptKeyError,
    EncryptKeyError,
    GenerateKeyError,
    IncorrectMasterKeyError,
    InvalidDataKeyError,
    InvalidKeyIdError,
)
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.key_providers.base import MasterKeyProvider, MasterKeyProviderConfig
from aws_encryption_sdk.key_providers.kms import KMSMasterKey
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from . import breakers, clients, conf
from .conf import FIELD_CONTEXT_KEY, RESERVED_CONTEXT_PREFIX, KeyringConfig
from .exceptions import (
    DecryptionError,
    KMSCircuitOpenError,
    KMSFieldsConfigurationError,
    KMSFieldsError,
    KMSRequestError,
    KMSUnavailableError,
)
from .signals import kms_call

__all__ = [
    "FieldBinding",
    "encrypt",
    "decrypt",
    "encryption_context_for",
    "looks_like_message",
    "is_current_message",
    "wrapping_key_arns",
    "KeyProbe",
    "probe_key",
]

logger = logging.getLogger("django_kms_fields")

KMS_PROVIDER_ID = "aws-kms"

# Beyond the keyring's own keys, room for the keys of an earlier KEY_ARNS; a hostile header that
# claims thousands of data keys is refused before any of them is parsed.
_SPARE_ENCRYPTED_DATA_KEYS = 8
# For reading headers outside a decryption (rotation): any message this app could have written.
_MAX_HEADER_DATA_KEYS = 64

# KMS error codes that mean "try again later" rather than "no".
_TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# The wrapped data key in the message is not one KMS made for this key and context: the stored
# value was tampered with, not refused.
_INVALID_CIPHERTEXT_CODES = frozenset({"InvalidCiphertextException"})


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


# --- KMS calls and their errors ---------------------------------------------------------------------


def _translate_kms_error(err: Exception, operation: str, key_arn: str, region: str) -> KMSFieldsError:
    """Our error for a botocore failure of one KMS operation; the caller chains it to ``err``."""
    where = f"KMS {operation} with key {key_arn}"
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = error.get("Code", "Unknown")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        detail = f"{code}: {error.get('Message', '')}".rstrip(": ")
        if code in _TRANSIENT_ERROR_CODES or status >= 500:
            return KMSUnavailableError(f"{where} kept failing ({detail}).")
        if code in _INVALID_CIPHERTEXT_CODES:
            return DecryptionError(f"{where}: KMS rejected the stored wrapped data key ({code}).")
        return KMSRequestError(f"{where} was refused by KMS ({detail}).")
    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return KMSFieldsConfigurationError(
            f"{where}: no usable AWS credentials ({err}). Configure credentials for the process, or "
            "PROFILE_NAME for the keyring."
        )
    return KMSUnavailableError(f"{where} could not reach KMS in {region}: {err}")


@contextmanager
def _kms_operation(operation: str, key_arn: str, region: str, keyring: KeyringConfig) -> Iterator[None]:
    """Guards one KMS operation with the circuit breaker, times and reports it, and translates its failure.

    The SDK wraps a ``ClientError`` in its own Generate/Encrypt/DecryptKeyError and lets network
    errors through bare; either way the botocore exception is what decides the kind of failure.
    """
    breaker = breakers.breaker_for(keyring, region)
    attempts_before = clients.attempts_sent()
    started = time.monotonic()
    outcome = "ok"
    try:
        breaker.admit()
        try:
            yield
        except (GenerateKeyError, EncryptKeyError, DecryptKeyError, BotoCoreError, ClientError) as err:
            cause = err if isinstance(err, (BotoCoreError, ClientError)) else err.__cause__
            if cause is None:
                # The SDK refused the answer itself (a plaintext key of the wrong length, another key id).
                translated: KMSFieldsError = KMSRequestError(
                    f"KMS {operation} with key {key_arn} gave an answer the AWS Encryption SDK rejected."
                )
            else:
                translated = _translate_kms_error(cause, operation, key_arn, region)
            raise translated from (cause or err)
    except KMSCircuitOpenError as err:
        outcome = type(err).__name__
        raise
    except KMSUnavailableError as err:
        outcome = type(err).__name__
        breaker.record_failure()
        raise
    except KMSFieldsConfigurationError as err:
        outcome = type(err).__name__
        breaker.record_no_call()
        raise
    except KMSFieldsError as err:
        outcome = type(err).__name__
        breaker.record_answer()
        raise
    except BaseException as err:
        # Not a KMS outcome (a bug, a KeyboardInterrupt, a worker timeout): it must not leave a
        # half-open breaker waiting forever for its trial call to report.
        outcome = type(err).__name__
        breaker.record_no_call()
        raise
    else:
        breaker.record_answer()
    finally:
        duration = time.monotonic() - started
        attempts = clients.attempts_sent() - attempts_before
        logger.info(
            "KMS %s key=%s region=%s attempts=%s duration_ms=%.1f outcome=%s",
            operation,
            key_arn,
            region,
            attempts,
            duration * 1000,
            outcome,
        )
        kms_call.send(
            sender=keyring.alias,
            operation=operation,
            key_arn=key_arn,
            region=region,
            attempts=attempts,
            duration=duration,
            outcome=outcome,
        )


class _KeyringMasterKey(KMSMasterKey):
    """A ``KMSMasterKey`` whose failures come out as this app's errors, reported per call."""

    keyring: KeyringConfig
    region: str

    def _call(self, operation: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        with _kms_operation(operation, self._key_id, self.region, self.keyring):
            return method(*args, **kwargs)

    def _accepts(self, wrapping_arn: str) -> bool:
        return wrapping_arn == self._key_id or _same_multi_region_key(wrapping_arn, self._key_id)

    def owns_data_key(self, data_key):  # type: ignore[no-untyped-def]
        return data_key.key_provider.provider_id == KMS_PROVIDER_ID and self._accepts(
            data_key.key_provider.key_info.decode("utf-8", errors="replace")
        )

    def _validate_allowed_to_decrypt(self, edk_key_id):  # type: ignore[no-untyped-def]
        if not self._accepts(edk_key_id):
            raise DecryptKeyError(f"{edk_key_id} is not {self._key_id} or a replica of it")

    def _generate_data_key(self, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("GenerateDataKey", super()._generate_data_key, algorithm, encryption_context)

    def _encrypt_data_key(self, data_key, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("Encrypt", super()._encrypt_data_key, data_key, algorithm, encryption_context)

    def _decrypt_data_key(self, encrypted_data_key, algorithm, encryption_context=None):  # type: ignore[no-untyped-def]
        return self._call("Decrypt", super()._decrypt_data_key, encrypted_data_key, algorithm, encryption_context)


@attr.s(hash=False)
class _KeyringProviderConfig(MasterKeyProviderConfig):
    keyring = attr.ib()


def _same_multi_region_key(first: str, second: str) -> bool:
    """Whether two ARNs name replicas of one multi-Region key (same partition, account and mrk- id)."""
    a, b = conf.parse_key_arn(first), conf.parse_key_arn(second)
    return (
        a is not None
        and b is not None
        and a.key_id.startswith("mrk-")
        and (a.partition, a.account, a.key_id) == (b.partition, b.account, b.key_id)
    )


class _KeyringMasterKeyProvider(MasterKeyProvider):
    """Holds every key of one keyring, each with the keyring's client for the key's region.

    Encrypts under ``KEY_ARNS``. Decrypts data keys wrapped by a key of ``KEY_ARNS`` or
    ``DECRYPT_KEY_ARNS``, by a replica of a listed multi-Region key (through the listed replica, in its
    region), or, with ``DISCOVERY``, by any key of the allowed accounts in the allowed partition.
    """

    provider_id = KMS_PROVIDER_ID
    _config_class = _KeyringProviderConfig
    vend_masterkey_on_decrypt = True

    def __init__(self, **kwargs: Any) -> None:
        keyring: KeyringConfig = self.config.keyring
        self._listed = {arn: position for position, arn in enumerate(keyring.readable_key_arns)}
        self.add_master_keys_from_list(keyring.key_arns)

    def local_key_for(self, wrapping_arn: str) -> str | None:
        """The key of this keyring that can decrypt a data key wrapped by ``wrapping_arn``, if any."""
        if wrapping_arn in self._listed:
            return wrapping_arn
        for listed in self._listed:
            if _same_multi_region_key(wrapping_arn, listed):
                return listed
        discovery = self.config.keyring.discovery
        parsed = conf.parse_key_arn(wrapping_arn)
        if discovery is not None and parsed is not None:
            if parsed.account in discovery.account_ids and parsed.partition == discovery.partition:
                return wrapping_arn
        return None

    def _new_master_key(self, key_id: bytes) -> _KeyringMasterKey:
        keyring: KeyringConfig = self.config.keyring
        key_arn = key_id.decode("utf-8", errors="replace")
        if self.local_key_for(key_arn) != key_arn:
            raise InvalidKeyIdError(f"{key_arn} is not a key of keyring {keyring.alias!r}")
        region = keyring.region_of(key_arn)
        master_key = _KeyringMasterKey(key_id=key_arn, client=clients.kms_client(keyring, region))
        master_key.keyring = keyring
        master_key.region = region
        return master_key

    def decrypt_data_key_from_list(self, encrypted_data_keys, algorithm, encryption_context):  # type: ignore[no-untyped-def]
        """The data key, from the first data key a key of this keyring can decrypt.

        Replaces the SDK's loop, which would try a failing key twice and then report any KMS failure as
        a bare "unable to decrypt any data key". Here the reason survives: a KMS outage is
        ``KMSUnavailableError``, a refusal ``KMSRequestError``.
        """
        candidates = []
        for edk in encrypted_data_keys:
            if edk.key_provider.provider_id != KMS_PROVIDER_ID:
                continue
            local = self.local_key_for(edk.key_provider.key_info.decode("utf-8", errors="replace"))
            if local is not None:
                candidates.append((self._listed.get(local, len(self._listed)), local, edk))
        if not candidates:
            raise DecryptionError(
                "the stored value's data keys are wrapped by no key of keyring "
                f"{self.config.keyring.alias!r}, so no KMS call was made."
            )
        # In KEY_ARNS order, then DECRYPT_KEY_ARNS, then discovered keys: the key listed first (say, the
        # one in the local region) is tried first.
        candidates.sort(key=lambda candidate: candidate[0])
        failures: list[KMSFieldsError] = []
        for _position, local, edk in candidates:
            master_key = self.master_key_for_decrypt(local.encode())
            try:
                return master_key.decrypt_data_key(edk, algorithm, encryption_context)
            except KMSFieldsError as err:
                failures.append(err)
            except (IncorrectMasterKeyError, InvalidDataKeyError) as err:
                failure = DecryptionError("a wrapped data key in the stored value is invalid.")
                failure.__cause__ = err
                failures.append(failure)
        raise _most_telling(failures)


def _most_telling(failures: list[KMSFieldsError]) -> KMSFieldsError:
    """Of the ways each key failed, the one that tells the caller most about what to do."""
    for kind in (KMSUnavailableError, KMSFieldsConfigurationError, KMSRequestError):
        for failure in failures:
            if isinstance(failure, kind):
                return failure
    return failures[0]


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
        stored = {
            key: value
            for key, value in request.encryption_context.items()
            if not key.startswith(RESERVED_CONTEXT_PREFIX)
        }
        if stored != self._expected_context:
            stored_label = stored.get(FIELD_CONTEXT_KEY)
            expected_label = self._expected_context[FIELD_CONTEXT_KEY]
            if stored_label != expected_label:
                reason = f"it was written for {stored_label!r}, not {expected_label!r}"
            else:
                differing = sorted(set(stored.items()) ^ set(self._expected_context.items()))
                reason = "its encryption context differs from the keyring's ENCRYPTION_CONTEXT in " + ", ".join(
                    sorted({key for key, _ in differing})
                )
            raise DecryptionError(f"the stored value is not bound to this field: {reason}.")
        return self._inner.decrypt_materials(request)


# --- per-thread SDK objects ---------------------------------------------------------------------------


# One data-key cache per keyring, shared by every thread's caching CMM (the SDK's local cache locks
# itself); the partition name must be shared too, or each thread would only see its own entries.
_caches: conf.KeyringCache[LocalCryptoMaterialsCache] = conf.KeyringCache()


class _ThreadState(threading.local):
    def __init__(self) -> None:
        # alias -> (the keyring they were built from, SDK client, materials manager)
        self.sdk_objects: dict[str, tuple[KeyringConfig, aws_encryption_sdk.EncryptionSDKClient, CryptoMaterialsManager]] = {}


_thread_state = _ThreadState()


def _sdk_objects(keyring: KeyringConfig) -> tuple[aws_encryption_sdk.EncryptionSDKClient, CryptoMaterialsManager]:
    """This thread's SDK client and materials manager for ``keyring``, rebuilt when its settings change."""
    entry = _thread_state.sdk_objects.get(keyring.alias)
    if entry is not None and entry[0] is keyring:
        return entry[1], entry[2]
    provider = _KeyringMasterKeyProvider(keyring=keyring)
    manager: CryptoMaterialsManager = DefaultCryptoMaterialsManager(master_key_provider=provider)
    cache_config = keyring.cache
    if cache_config is not None:
        manager = CachingCryptoMaterialsManager(
            backing_materials_manager=manager,
            cache=_caches.get(keyring, keyring.alias, lambda: LocalCryptoMaterialsCache(cache_config.capacity)),
            max_age=cache_config.max_age,
            max_messages_encrypted=cache_config.max_messages,
            partition_name=f"django-kms-fields/{keyring.alias}",
        )
    sdk_client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=len(keyring.readable_key_arns) + _SPARE_ENCRYPTED_DATA_KEYS,
    )
    _thread_state.sdk_objects[keyring.alias] = (keyring, sdk_client, manager)
    return sdk_client, manager


# --- the public operations ----------------------------------------------------------------------------


def _where(binding: FieldBinding, pk: object) -> str:
    """How error messages name the value: model and field, and the row when it is known."""
    return binding.description if pk is None else f"{binding.description} (pk={pk!r})"


def _located(err: KMSFieldsError, binding: FieldBinding, pk: object) -> KMSFieldsError:
    located = type(err)(f"{_where(binding, pk)}: {err}")
    located.__cause__ = err.__cause__
    return located


def encrypt(plaintext: bytes, keyring: KeyringConfig, binding: FieldBinding) -> bytes:
    """One AWS Encryption SDK message holding ``plaintext``, bound to ``binding``."""
    sdk_client, manager = _sdk_objects(keyring)
    try:
        message, _header = sdk_client.encrypt(
            source=plaintext,
            materials_manager=manager,
            encryption_context=encryption_context_for(keyring, binding),
            algorithm=getattr(Algorithm, keyring.algorithm),
        )
    except KMSFieldsError as err:
        raise _located(err, binding, None) from err.__cause__
    except Exception as err:
        raise KMSFieldsError(
            f"{binding.description}: the AWS Encryption SDK failed to encrypt ({type(err).__name__})."
        ) from err
    return message


def decrypt(message: bytes, keyring: KeyringConfig, binding: FieldBinding, pk: object = None) -> bytes:
    """The plaintext of ``message``; raises ``DecryptionError`` unless it is a valid message for ``binding``."""
    sdk_client, manager = _sdk_objects(keyring)
    bound = _FieldBoundMaterialsManager(manager, encryption_context_for(keyring, binding))
    source = io.BytesIO(message)
    decryptor = None
    try:
        # Not a ``with`` block: on failure the SDK's __exit__ logs a second, misleading traceback
        # ("Footer not read") at ERROR level.
        decryptor = sdk_client.stream(mode="d", source=source, materials_manager=bound)
        plaintext = decryptor.read()
        decryptor.close()
        if source.read(1):
            # The SDK stops at the end of the message and ignores what follows; a stored value is
            # exactly one message, so anything appended means it was altered.
            raise DecryptionError("the stored value has bytes after the end of its message.")
    except KMSFieldsError as err:
        raise _located(err, binding, pk) from err.__cause__
    except Exception as err:
        # A hostile value can fail anywhere in the SDK's parser, with the SDK's own errors or with
        # struct/ValueError/cryptography ones. The type is named, never the bytes.
        raise DecryptionError(
            f"{_where(binding, pk)}: the stored value is not a valid encrypted message for this field "
            f"({type(err).__name__})."
        ) from err
    finally:
        if decryptor is not None and not decryptor.closed:
            # The SDK's close() raises "Footer not read" for a message that failed part-way; left to
            # the garbage collector, Python 3.13 reports that as an unraisable exception.
            io.IOBase.close(decryptor)
    return plaintext


# --- what operations tools need -----------------------------------------------------------------------

# AWS Encryption SDK message format version 2 and the two committing suites this app writes.
_MESSAGE_PREFIXES = (b"\x02\x04\x78", b"\x02\x05\x78")


def looks_like_message(stored: bytes) -> bool:
    """Whether ``stored`` starts like a message this app writes (left-over plaintext does not)."""
    return bytes(stored[:3]) in _MESSAGE_PREFIXES


def is_current_message(stored: bytes, keyring: KeyringConfig) -> bool:
    """Whether ``stored`` is a message wrapped by exactly the keyring's ``KEY_ARNS`` (header only, no KMS)."""
    if not looks_like_message(stored):
        return False
    try:
        return wrapping_key_arns(stored) == frozenset(keyring.key_arns)
    except DecryptionError:
        return False


def wrapping_key_arns(message: bytes) -> frozenset[str]:
    """The ARNs of the KMS keys that wrap the message's data key, read from its header alone.

    Raises ``DecryptionError`` when the header cannot be read. No KMS call is made.
    """
    try:
        header, _raw = deserialize_header(io.BytesIO(bytes(message)), _MAX_HEADER_DATA_KEYS)
    except Exception as err:
        raise DecryptionError(f"the stored value has no readable message header ({type(err).__name__}).") from err
    return frozenset(
        edk.key_provider.key_info.decode("utf-8", errors="replace")
        for edk in header.encrypted_data_keys
        if edk.key_provider.provider_id == KMS_PROVIDER_ID
    )


@dataclass(frozen=True)
class KeyProbe:
    """What ``probe_key`` found out about one key of a keyring."""

    key_arn: str
    region: str
    endpoint: str
    key_state: str | None
    latency_ms: float
    error: KMSFieldsError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def probe_key(keyring: KeyringConfig, key_arn: str, *, role: str) -> KeyProbe:
    """Exercise one key the way the keyring uses it, under the keyring's own client settings.

    ``role`` is ``"generate"`` (the first of ``KEY_ARNS``: DescribeKey, GenerateDataKey, Decrypt),
    ``"wrap"`` (the other ``KEY_ARNS``: DescribeKey, Encrypt, Decrypt) or ``"decrypt"``
    (``DECRYPT_KEY_ARNS``: DescribeKey only). For deploy checks: nothing is cached and the circuit
    breaker is bypassed, so the answer is fresh.
    """
    region = keyring.region_of(key_arn)
    started = time.monotonic()
    key_state = None
    endpoint = keyring.endpoint_url or f"(default endpoint of {region})"
    operation = "DescribeKey"
    context = {**keyring.encryption_context, FIELD_CONTEXT_KEY: "kms-fields:deploy-check"}
    try:
        client = clients.kms_client(keyring, region)
        endpoint = client.meta.endpoint_url
        metadata = client.describe_key(KeyId=key_arn)["KeyMetadata"]
        key_state = metadata.get("KeyState")
        if key_state != "Enabled":
            raise KMSRequestError(f"key {key_arn} is {key_state}, not Enabled.")
        if metadata.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT":
            raise KMSRequestError(f"key {key_arn} has KeyUsage {metadata.get('KeyUsage')}, not ENCRYPT_DECRYPT.")
        if role == "generate":
            operation = "GenerateDataKey"
            generated = client.generate_data_key(KeyId=key_arn, NumberOfBytes=32, EncryptionContext=context)
            data_key, wrapped = generated["Plaintext"], generated["CiphertextBlob"]
        elif role == "wrap":
            operation = "Encrypt"
            data_key = os.urandom(32)
            wrapped = client.encrypt(KeyId=key_arn, Plaintext=data_key, EncryptionContext=context)["CiphertextBlob"]
        if role in ("generate", "wrap"):
            operation = "Decrypt"
            decrypted = client.decrypt(CiphertextBlob=wrapped, KeyId=key_arn, EncryptionContext=context)
            if decrypted["Plaintext"] != data_key:
                raise KMSRequestError(f"key {key_arn}: Decrypt did not give back the data key.")
        error = None
    except KMSFieldsError as err:
        error = err
    except (BotoCoreError, ClientError) as err:
        error = _translate_kms_error(err, operation, key_arn, region)
        error.__cause__ = err
    return KeyProbe(
        key_arn=key_arn,
        region=region,
        endpoint=endpoint,
        key_state=key_state,
        latency_ms=(time.monotonic() - started) * 1000,
        error=error,
    )

"""The only place that creates AWS sessions and KMS clients, and the owner of one KMS call.

One client per keyring and region, built from the keyring's settings: timeouts, total attempts, retry
mode, endpoint, profile and any extra botocore ``Config`` options. The clients (botocore's, as
``boto3.client`` returns) are thread safe and expensive to build, so they are shared by every thread;
sessions are not thread safe, so they are only touched under a lock. A change to ``KMS_FIELDS`` drops
them all, except botocore's service models, which are loaded once per process.

``kms_operation`` guards every KMS call the app makes: circuit breaker, timing, the ``kms_call`` signal
and the translation of botocore and SDK failures into this app's errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
from aws_encryption_sdk.exceptions import DecryptKeyError, EncryptKeyError, GenerateKeyError
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from . import breakers, conf
from .conf import KeyringConfig
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
    "kms_client",
    "client_config",
    "attempts_sent",
    "worst_case_call_seconds",
    "kms_operation",
    "translate_kms_error",
]

logger = logging.getLogger("django_kms_fields")

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
# A relabelled one (its key ARN changed in the header) gets IncorrectKeyException.
_INVALID_CIPHERTEXT_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})

_clients: conf.KeyringCache[BaseClient] = conf.KeyringCache()


class _AttemptCounter(threading.local):
    count = 0


_attempts = _AttemptCounter()


def attempts_sent() -> int:
    """How many HTTP requests this thread's KMS clients have sent, retries included, since it started."""
    return _attempts.count


def _count_attempt(**kwargs: Any) -> None:
    _attempts.count += 1


def client_config(keyring: KeyringConfig) -> Config:
    """The botocore ``Config`` every KMS client of ``keyring`` is built with."""
    options: dict[str, Any] = dict(keyring.client_config)
    return Config(
        connect_timeout=keyring.connect_timeout,
        read_timeout=keyring.read_timeout,
        # botocore's "max_attempts" counts retries only; "total_max_attempts" counts the first try
        # too, which is what MAX_ATTEMPTS means.
        retries={"total_max_attempts": keyring.max_attempts, "mode": keyring.retry_mode},
        **options,
    )


def kms_client(keyring: KeyringConfig, region: str) -> BaseClient:
    """The shared KMS client for ``keyring`` in ``region``, built on first use."""
    return _clients.get(keyring, (keyring.alias, region), lambda: _build_client(keyring, region))


# One session per profile, shared by every client built from it, and dropped with the clients on a
# settings change, so that a new one reads the profile and resolves credentials again. Sessions of our
# own, never boto3's process-wide default one: nothing another library does to boto3.DEFAULT_SESSION
# changes how this app talks to KMS. Only touched from _build_client, which runs under the client
# cache's lock.
_sessions: dict[str | None, botocore.session.Session] = {}
conf.on_settings_reset(_sessions.clear)
# botocore's service models (megabytes of JSON) depend only on the installed botocore and the data
# path, so their loader is kept for the process, one per data path, and every new session shares it:
# a client on a new session then takes about 25 ms to build instead of 130 ms (measured).
_loaders: dict[str | None, Any] = {}


def _new_session(profile_name: str | None) -> botocore.session.Session:
    session = botocore.session.Session(profile=profile_name)
    # As boto3.session.Session names itself, so that KMS, and CloudTrail's userAgent, see the client
    # they saw when this module built boto3 sessions.
    botocore_info = f"Botocore/{session.user_agent_version}"
    session.user_agent_extra = f"{session.user_agent_extra} {botocore_info}".strip()
    session.user_agent_name, session.user_agent_version = "Boto3", boto3.__version__
    data_path = session.get_config_variable("data_path")  # reads the profile: raises if it is missing
    loader = _loaders.get(data_path)
    if loader is None:
        _loaders[data_path] = session.get_component("data_loader")
    else:
        session.register_component("data_loader", loader)
    return session


def _build_client(keyring: KeyringConfig, region: str) -> BaseClient:
    try:
        session = _sessions.get(keyring.profile_name) or _new_session(keyring.profile_name)
        client = session.create_client(
            "kms",
            region_name=region,
            endpoint_url=keyring.endpoint_url,
            config=client_config(keyring),
        )
        _sessions[keyring.profile_name] = session  # once it has built a client: a failed one is not kept
    except ProfileNotFound as err:
        raise KMSFieldsConfigurationError(
            f"KMS_FIELDS[{keyring.alias!r}]['PROFILE_NAME'] names AWS profile {keyring.profile_name!r}, "
            "which does not exist in the AWS config files; create it, or fix or remove PROFILE_NAME.",
            region=region,
            code="ProfileNotFound",
        ) from err
    except BotoCoreError as err:
        raise KMSFieldsConfigurationError(
            f"Could not build a KMS client for keyring {keyring.alias!r} in {region}: {err}",
            region=region,
            code=type(err).__name__,
        ) from err
    # "before-send" fires once per HTTP attempt, so retries are counted where they happen.
    client.meta.events.register("before-send.kms", _count_attempt)
    return client


def worst_case_call_seconds(keyring: KeyringConfig) -> float:
    """The longest one KMS call of ``keyring`` can take before it raises, retries and backoff included.

    Every attempt may spend the whole connect and read timeouts, and botocore sleeps at most
    ``min(2 ** (i - 1), 20)`` seconds before retry ``i`` (throttling backoff; other errors back off
    less). An operation that needs several keys (encrypting under N keys, or decrypting when the first
    keys fail) can take up to N times this. The "adaptive" mode may also wait for its client-side rate
    limiter after throttling, which this bound does not cover.
    """
    backoff = sum(min(2 ** (retry - 1), 20) for retry in range(1, keyring.max_attempts))
    return keyring.max_attempts * (keyring.connect_timeout + keyring.read_timeout) + backoff


def translate_kms_error(err: Exception, operation: str, key_arn: str, region: str) -> KMSFieldsError:
    """Our error for a botocore failure of one KMS operation; the caller chains it to ``err``."""
    where = f"KMS {operation} with key {key_arn}"
    about = {"operation": operation, "key_arn": key_arn, "region": region}
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = error.get("Code", "Unknown")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        detail = f"{code}: {error.get('Message', '')}".rstrip(": ")
        if code in _TRANSIENT_ERROR_CODES or status >= 500:
            return KMSUnavailableError(f"{where} kept failing ({detail}).", code=code, **about)
        if code in _INVALID_CIPHERTEXT_CODES:
            return DecryptionError(f"{where}: KMS rejected the stored wrapped data key ({code}).", code=code, **about)
        return KMSRequestError(f"{where} was refused by KMS ({detail}).", code=code, **about)
    code = type(err).__name__
    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return KMSFieldsConfigurationError(
            f"{where}: no usable AWS credentials ({err}). Configure credentials for the process, or "
            "PROFILE_NAME for the keyring.",
            code=code,
            **about,
        )
    return KMSUnavailableError(f"{where} could not reach KMS in {region}: {err}", code=code, **about)


@contextmanager
def kms_operation(operation: str, key_arn: str, region: str, keyring: KeyringConfig) -> Iterator[None]:
    """Guards one KMS operation with the circuit breaker, times and reports it, and translates its failure.

    The SDK wraps a ``ClientError`` in its own Generate/Encrypt/DecryptKeyError (as ``__cause__``) and
    lets network errors through bare; either way the botocore exception decides the kind of failure.
    """
    breaker = breakers.breaker_for(keyring, region)
    attempts_before = attempts_sent()
    started = time.monotonic()
    outcome = "ok"
    try:
        breaker.admit()
        try:
            yield
        except (GenerateKeyError, EncryptKeyError, DecryptKeyError, BotoCoreError, ClientError) as err:
            cause = err if isinstance(err, (BotoCoreError, ClientError)) else err.__cause__
            raise _translate_call_failure(err, cause, operation, key_arn, region) from (cause or err)
    except BaseException as err:
        outcome = type(err).__name__
        _record_outcome(breaker, err)
        raise
    else:
        breaker.record_answer()
    finally:
        duration = time.monotonic() - started
        attempts = attempts_sent() - attempts_before
        logger.info(
            "KMS %s key=%s region=%s attempts=%s duration_ms=%.1f outcome=%s",
            operation, key_arn, region, attempts, duration * 1000, outcome,
        )
        _report(
            sender=keyring.alias, operation=operation, key_arn=key_arn, region=region,
            attempts=attempts, duration=duration, outcome=outcome,
        )


def _translate_call_failure(
    err: Exception, cause: BaseException | None, operation: str, key_arn: str, region: str
) -> KMSFieldsError:
    if isinstance(cause, Exception):
        return translate_kms_error(cause, operation, key_arn, region)
    # The SDK refused KMS's answer itself (a plaintext key of the wrong length, another key id).
    return KMSRequestError(
        f"KMS {operation} with key {key_arn} gave an answer the AWS Encryption SDK rejected.",
        operation=operation, key_arn=key_arn, region=region, code=type(err).__name__,
    )


def _record_outcome(breaker: breakers.CircuitBreaker, err: BaseException) -> None:
    if isinstance(err, KMSCircuitOpenError):
        return
    if isinstance(err, KMSUnavailableError):
        breaker.record_failure()
    elif isinstance(err, KMSFieldsError) and not isinstance(err, KMSFieldsConfigurationError):
        breaker.record_answer()  # KMS answered, with a refusal
    else:
        # No KMS outcome (missing credentials, a bug, a KeyboardInterrupt, a worker timeout): it must
        # not leave a half-open breaker waiting forever for its trial call to report.
        breaker.record_no_call()


def _report(sender: str, **kwargs: Any) -> None:
    # send_robust: a receiver that raises must neither replace the real KMS outcome nor fail a write
    # that succeeded. The signal carries no secret, but the receiver's error text is its own: only
    # its type is logged.
    for receiver, result in kms_call.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "A kms_call receiver (%s) raised %s; the KMS %s call itself %s.",
                getattr(receiver, "__qualname__", repr(receiver)),
                type(result).__name__,
                kwargs["operation"],
                "succeeded" if kwargs["outcome"] == "ok" else f"failed ({kwargs['outcome']})",
            )

"""The only place that creates boto3 sessions and KMS clients.

One client per keyring and region, built from the keyring's settings: timeouts, total attempts, retry
mode, endpoint, profile and any extra botocore ``Config`` options. boto3 clients are thread safe and
expensive to build, so they are shared by every thread; boto3 sessions are not thread safe, so they are
only touched under a lock. A change to ``KMS_FIELDS`` drops them all.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from . import conf
from .conf import KeyringConfig
from .exceptions import KMSFieldsConfigurationError

__all__ = ["kms_client", "client_config", "attempts_sent", "worst_case_call_seconds"]

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


def _build_client(keyring: KeyringConfig, region: str) -> BaseClient:
    try:
        # A session of our own, never boto3's process-wide default one: nothing another library does
        # to boto3.DEFAULT_SESSION changes how this app talks to KMS.
        session = boto3.session.Session(profile_name=keyring.profile_name)
        client = session.client(
            "kms",
            region_name=region,
            endpoint_url=keyring.endpoint_url,
            config=client_config(keyring),
        )
    except ProfileNotFound as err:
        raise KMSFieldsConfigurationError(
            f"KMS_FIELDS[{keyring.alias!r}]['PROFILE_NAME'] names AWS profile {keyring.profile_name!r}, "
            "which is not in the AWS config files."
        ) from err
    except BotoCoreError as err:
        raise KMSFieldsConfigurationError(
            f"Could not build a KMS client for keyring {keyring.alias!r} in {region}: {err}"
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

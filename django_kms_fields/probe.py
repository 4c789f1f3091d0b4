"""The deploy check's probe: exercise each key of a keyring the way the keyring uses it, and say what
to fix when it fails. Used by ``manage.py kms_fields_check``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from django.views.decorators.debug import sensitive_variables

from . import clients
from .conf import FIELD_CONTEXT_KEY, KeyringConfig
from .exceptions import KMSFieldsConfigurationError, KMSFieldsError, KMSRequestError, KMSUnavailableError

__all__ = ["KeyProbe", "probe_key", "what_to_fix", "ROLES"]

# How each key of a keyring is used, and the KMS permissions that use needs.
ROLES = {
    "generate": "kms:DescribeKey, kms:GenerateDataKey and kms:Decrypt",
    "wrap": "kms:DescribeKey, kms:Encrypt and kms:Decrypt",
    "decrypt": "kms:DescribeKey and kms:Decrypt",
    "index": "kms:DescribeKey and kms:GenerateMac",
}
# KMS and STS codes that mean the credentials themselves are wrong, not the key or the policy.
_CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredToken", "ExpiredTokenException",
     "InvalidClientTokenId", "NoCredentialsError", "PartialCredentialsError"}
)
_NOT_FOUND_CODES = frozenset({"NotFoundException"})
_KEY_STATE_CODES = frozenset({"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"})


@dataclass(frozen=True)
class KeyProbe:
    """What ``probe_key`` found out about one key of a keyring."""

    key_arn: str
    role: str
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
    endpoint = keyring.endpoint_url or f"(default endpoint of {region})"
    state: dict[str, str | None] = {"operation": "DescribeKey", "key_state": None}
    try:
        client = clients.kms_client(keyring, region)
        endpoint = client.meta.endpoint_url
        _exercise(client, keyring, key_arn, role, state)
        error = None
    except KMSFieldsError as err:
        error = err
    except (BotoCoreError, ClientError) as err:
        error = clients.translate_kms_error(err, state["operation"] or "DescribeKey", key_arn, region)
        error.__cause__ = err
    return KeyProbe(
        key_arn=key_arn,
        role=role,
        region=region,
        endpoint=endpoint,
        key_state=state["key_state"],
        latency_ms=(time.monotonic() - started) * 1000,
        error=error,
    )


@sensitive_variables("data_key", "generated", "decrypted")
def _exercise(client: object, keyring: KeyringConfig, key_arn: str, role: str, state: dict[str, str | None]) -> None:
    region = keyring.region_of(key_arn)
    about = {"key_arn": key_arn, "region": region, "operation": "DescribeKey"}
    metadata = client.describe_key(KeyId=key_arn)["KeyMetadata"]  # type: ignore[attr-defined]
    state["key_state"] = metadata.get("KeyState")
    if state["key_state"] != "Enabled":
        raise KMSRequestError(f"key {key_arn} is {state['key_state']}, not Enabled.", code="KeyState", **about)
    usage = "GENERATE_VERIFY_MAC" if role == "index" else "ENCRYPT_DECRYPT"
    if metadata.get("KeyUsage", "ENCRYPT_DECRYPT") != usage:
        raise KMSRequestError(
            f"key {key_arn} has KeyUsage {metadata.get('KeyUsage', 'ENCRYPT_DECRYPT')}, not {usage}.", code="KeyUsage", **about
        )
    if role == "index":
        state["operation"] = "GenerateMac"
        client.generate_mac(KeyId=key_arn, MacAlgorithm="HMAC_SHA_256", Message=b"kms-fields:deploy-check")  # type: ignore[attr-defined]
        return
    if role == "decrypt":
        return
    context = {**keyring.encryption_context, FIELD_CONTEXT_KEY: "kms-fields:deploy-check"}
    if role == "generate":
        state["operation"] = "GenerateDataKey"
        generated = client.generate_data_key(KeyId=key_arn, NumberOfBytes=32, EncryptionContext=context)  # type: ignore[attr-defined]
        data_key, wrapped = generated["Plaintext"], generated["CiphertextBlob"]
    else:
        state["operation"] = "Encrypt"
        data_key = os.urandom(32)
        wrapped = client.encrypt(KeyId=key_arn, Plaintext=data_key, EncryptionContext=context)["CiphertextBlob"]  # type: ignore[attr-defined]
    state["operation"] = "Decrypt"
    decrypted = client.decrypt(CiphertextBlob=wrapped, KeyId=key_arn, EncryptionContext=context)  # type: ignore[attr-defined]
    if decrypted["Plaintext"] != data_key:
        raise KMSRequestError(
            f"key {key_arn}: Decrypt did not give back the data key.", code="WrongPlaintext", **{**about, "operation": "Decrypt"}
        )


def what_to_fix(probe: KeyProbe, keyring: KeyringConfig) -> str:
    """One line saying what to change so that ``probe`` passes, decided from the error's data."""
    error = probe.error
    if error is None:
        return "nothing."
    code = error.code or ""
    if code == "ProfileNotFound":
        return (
            f"profile: PROFILE_NAME={keyring.profile_name!r} names an AWS profile that does not exist in this "
            "process's AWS config files; create it there, or fix or remove PROFILE_NAME."
        )
    if isinstance(error, KMSFieldsConfigurationError) or code in _CREDENTIAL_CODES:
        return "credentials: give this process AWS credentials (environment, instance or task role) or set PROFILE_NAME."
    if isinstance(error, KMSUnavailableError):
        return (
            f"network: KMS at {probe.endpoint} did not answer within CONNECT_TIMEOUT={keyring.connect_timeout:g}s / "
            f"READ_TIMEOUT={keyring.read_timeout:g}s; check routing, security groups, the VPC endpoint or proxy."
        )
    if code.startswith("AccessDenied"):
        return f"IAM permission: allow {ROLES[probe.role]} on {probe.key_arn} in the role's policy and the key policy."
    if code in _NOT_FOUND_CODES:
        return f"key: {probe.key_arn} does not exist in {probe.region} for these credentials; check the ARN."
    if code in _KEY_STATE_CODES or code == "KeyState":
        return "key disabled: enable the key (or cancel its scheduled deletion) in KMS."
    if probe.role == "index":
        return "key: use an HMAC key (KeySpec HMAC_256, KeyUsage GENERATE_VERIFY_MAC) as INDEX_KEY_ARN."
    return "key: use a symmetric ENCRYPT_DECRYPT key that this role may use."

"""manage.py kms_fields_check: can this deployment use its KMS keys? Usable as a readiness probe."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_kms_fields import conf
from django_kms_fields.crypto import KeyProbe, probe_key
from django_kms_fields.exceptions import (
    KMSFieldsConfigurationError,
    KMSFieldsError,
    KMSRequestError,
    KMSUnavailableError,
)

_CREDENTIAL_CODES = ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredToken", "InvalidClientTokenId")


def what_to_fix(probe: KeyProbe, keyring: conf.KeyringConfig, role: str) -> str:
    error = probe.error
    text = str(error)
    if isinstance(error, KMSFieldsConfigurationError) or any(code in text for code in _CREDENTIAL_CODES):
        return "credentials: give this process AWS credentials (environment, instance or task role) or set PROFILE_NAME."
    if isinstance(error, KMSUnavailableError):
        return (
            f"network: KMS at {probe.endpoint} did not answer within CONNECT_TIMEOUT={keyring.connect_timeout:g}s / "
            f"READ_TIMEOUT={keyring.read_timeout:g}s; check routing, security groups, the VPC endpoint or proxy."
        )
    if "AccessDenied" in text:
        actions = {
            "generate": "kms:DescribeKey, kms:GenerateDataKey and kms:Decrypt",
            "wrap": "kms:DescribeKey, kms:Encrypt and kms:Decrypt",
            "decrypt": "kms:DescribeKey and kms:Decrypt",
        }[role]
        return f"IAM permission: allow {actions} on {probe.key_arn} in the role's policy and the key policy."
    if "NotFound" in text:
        return f"key: {probe.key_arn} does not exist in {probe.region} for these credentials; check the ARN."
    if probe.key_state not in (None, "Enabled") or "Disabled" in text or "KMSInvalidState" in text:
        return "key disabled: enable the key (or cancel its scheduled deletion) in KMS."
    if isinstance(error, KMSRequestError):
        return "key: use a symmetric ENCRYPT_DECRYPT key that this role may use."
    return "see the error above."


class Command(BaseCommand):
    help = (
        "Check every keyring against KMS under its own timeouts, each key the way the keyring uses it: "
        "DescribeKey for every key; GenerateDataKey and Decrypt with the first of KEY_ARNS; Encrypt and "
        "Decrypt with the others. Exits non-zero on any failure."
    )
    line = "{status:4} {alias}  {probe.key_arn}  region={probe.region}  endpoint={probe.endpoint}  state={state}  {probe.latency_ms:.0f} ms  ({role})"
    roles = {
        "generate": "generates data keys",
        "wrap": "wraps data keys",
        "decrypt": "decrypt only",
    }

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keyring", action="append", metavar="ALIAS", help="check only this keyring (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options["keyring"] or conf.keyring_aliases()
        if not aliases:
            raise CommandError("KMS_FIELDS is missing or empty: there is nothing to check.")
        failures = 0
        for alias in aliases:
            try:
                keyring = conf.get_keyring(alias)
            except KMSFieldsError as err:
                raise CommandError(str(err)) from None
            roles = ["generate"] + ["wrap"] * (len(keyring.key_arns) - 1) + ["decrypt"] * len(keyring.decrypt_key_arns)
            for key_arn, role in zip(keyring.readable_key_arns, roles, strict=True):
                probe = probe_key(keyring, key_arn, role=role)
                line = self.line.format(
                    status="ok" if probe.ok else "FAIL", alias=alias, probe=probe, state=probe.key_state or "?",
                    role=self.roles[role],
                )
                if probe.ok:
                    if options["verbosity"] >= 1:
                        self.stdout.write(self.style.SUCCESS(line))
                    continue
                failures += 1
                self.stdout.write(self.style.ERROR(line))
                self.stdout.write(f"     error: {probe.error}")
                self.stdout.write(f"     fix:   {what_to_fix(probe, keyring, role)}")
        if failures:
            raise CommandError(f"{failures} key check(s) failed.")

"""manage.py kms_fields_check: can this deployment use its KMS keys? Usable as a readiness probe."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_kms_fields import conf
from django_kms_fields.exceptions import KMSFieldsError
from django_kms_fields.probe import probe_key, what_to_fix


class Command(BaseCommand):
    help = (
        "Check every keyring against KMS under its own timeouts, each key the way the keyring uses it: "
        "DescribeKey for every key; GenerateDataKey and Decrypt with the first of KEY_ARNS; Encrypt and "
        "Decrypt with the others; GenerateMac with INDEX_KEY_ARN and PREVIOUS_INDEX_KEY_ARNS. Exits non-zero on "
        "any failure."
    )
    line = "{status:4} {alias}  {probe.key_arn}  region={probe.region}  endpoint={probe.endpoint}  state={state}  {probe.latency_ms:.0f} ms  ({role})"
    roles = {
        "generate": "generates data keys",
        "wrap": "wraps data keys",
        "decrypt": "decrypt only",
        "index": "blind-index key",
    }

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keyring", action="append", metavar="ALIAS", help="check only this keyring (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options["keyring"] or conf.keyring_aliases()
        if not aliases:
            raise CommandError("KMS_FIELDS is missing or empty: there is nothing to check.")
        failures = []
        for alias in aliases:
            try:
                keyring = conf.get_keyring(alias)
            except KMSFieldsError as err:
                raise CommandError(str(err)) from None
            roles = ["generate"] + ["wrap"] * (len(keyring.key_arns) - 1) + ["decrypt"] * len(keyring.decrypt_key_arns)
            index_arns = [arn for arn in (keyring.index_key_arn, *keyring.previous_index_key_arns) if arn]
            roles += ["index"] * len(index_arns)
            for key_arn, role in zip([*keyring.readable_key_arns, *index_arns], roles, strict=True):
                probe = probe_key(keyring, key_arn, role=role)
                line = self.line.format(
                    status="ok" if probe.ok else "FAIL", alias=alias, probe=probe, state=probe.key_state or "?",
                    role=self.roles[role],
                )
                if probe.ok:
                    if options["verbosity"] >= 1:
                        self.stdout.write(self.style.SUCCESS(line))
                    continue
                fix = what_to_fix(probe, keyring)
                failures.append(f"keyring {alias!r}, key {key_arn}: {probe.error} Fix: {fix}")
                self.stdout.write(self.style.ERROR(line))
                self.stdout.write(f"     error: {probe.error}")
                self.stdout.write(f"     fix:   {fix}")
        if failures:
            # The first failure in full, so that a readiness probe that logs only stderr learns what to do.
            more = f" ({len(failures) - 1} more key check(s) failed; see above.)" if len(failures) > 1 else ""
            raise CommandError(f"{failures[0]}{more}")

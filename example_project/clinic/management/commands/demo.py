"""Saves and reloads a few patients, showing what the database holds and what KMS was asked."""

from collections import Counter

from django.core.management.base import BaseCommand
from django.db import IntegrityError, connection, transaction

from clinic.models import Patient
from django_kms_fields.exceptions import DecryptionError, EncryptedLookupError
from django_kms_fields.signals import kms_call

PATIENTS = [
    ("Ada Lovelace", "078-05-1120", b"\x89PNG\r\n\x1a\n...ada's x-ray..."),
    ("Alan Turing", "219-09-9999", None),
    ("Grace Hopper", "", b"\x00\x01\x02"),
]


def preview(raw: bytes | None) -> str:
    if raw is None:
        return "NULL"
    return f"{len(raw)} bytes: {raw[:24].hex()}..."


class Command(BaseCommand):
    help = "Save and reload patients through encrypted fields; print the stored bytes and the KMS calls made."

    def handle(self, *args, **options):
        calls: Counter = Counter()

        def count(sender, operation, outcome, **kwargs):
            calls[(sender, operation, outcome)] += 1

        kms_call.connect(count, weak=False, dispatch_uid="clinic.demo")
        Patient.objects.all().delete()
        created = [Patient.objects.create(name=name, ssn=ssn, xray=xray) for name, ssn, xray in PATIENTS]
        self.stdout.write(self.style.MIGRATE_HEADING(f"Saved {len(created)} patients."))

        table = connection.ops.quote_name(Patient._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, ssn, xray FROM {table} ORDER BY id")
            raw_rows = {row[0]: (bytes(row[1]), None if row[2] is None else bytes(row[2])) for row in cursor.fetchall()}

        for patient in Patient.objects.order_by("id"):
            raw_ssn, raw_xray = raw_rows[patient.pk]
            self.stdout.write(f"\n{patient.name} (id {patient.pk})")
            self.stdout.write(f"  ssn  stored  {preview(raw_ssn)}")
            self.stdout.write(f"       loaded  {patient.ssn!r}")
            self.stdout.write(f"  xray stored  {preview(raw_xray)}")
            self.stdout.write(f"       loaded  {patient.xray!r}")

        self.stdout.write(self.style.MIGRATE_HEADING("\nLooking a patient up by an encrypted value"))
        found = Patient.objects.get(ssn=" 078-05-1120")  # the normaliser strips spaces
        self.stdout.write(f"  Patient.objects.get(ssn=' 078-05-1120') -> {found.name} (id {found.pk})")
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT ssn_blind_index FROM {table} WHERE id = %s", [found.pk])
            self.stdout.write(f"  what the database compared: ssn_blind_index = {cursor.fetchone()[0][:24]}...")
        try:
            with transaction.atomic():
                Patient.objects.create(name="Duplicate", ssn="078-05-1120")
        except IntegrityError:
            self.stdout.write("  a second patient with that ssn: IntegrityError (unique index on ssn_blind_index)")

        self.stdout.write(self.style.MIGRATE_HEADING("\nGuard rails"))
        try:
            Patient.objects.filter(ssn__startswith="078").exists()
        except EncryptedLookupError as err:
            self.stdout.write(f"  filter(ssn__startswith=...) refused: {str(err).split(':')[0]}")
        first, second = created[0], created[1]
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET ssn = %s WHERE id = %s", [connection.Database.Binary(raw_rows[first.pk][1]), second.pk])
        try:
            Patient.objects.get(pk=second.pk).ssn  # decrypted on first access
        except DecryptionError as err:
            self.stdout.write(f"  an x-ray copied into the ssn column: DecryptionError: {err}")
        Patient.objects.filter(pk=second.pk).delete()

        kms_call.disconnect(dispatch_uid="clinic.demo")
        self.stdout.write(self.style.MIGRATE_HEADING("\nKMS calls made"))
        for (keyring, operation, outcome), number in sorted(calls.items()):
            self.stdout.write(f"  {keyring:8} {operation:16} {outcome:20} {number}")
        self.stdout.write(f"  total: {sum(calls.values())}")

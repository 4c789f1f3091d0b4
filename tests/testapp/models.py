import uuid

from django.db import models

from django_kms_fields import normalizers
from django_kms_fields import (
    EncryptedBigIntegerField,
    EncryptedBinaryField,
    EncryptedCharField,
    EncryptedDateField,
    EncryptedDateTimeField,
    EncryptedDecimalField,
    EncryptedEmailField,
    EncryptedField,
    EncryptedIntegerField,
    EncryptedJSONField,
    EncryptedTextField,
)


class Patient(models.Model):
    name = models.CharField(max_length=100, default="")
    ssn = EncryptedTextField()
    notes = EncryptedTextField(null=True, blank=True)
    xray = EncryptedBinaryField(null=True, blank=True, keyring="archive", editable=True)

    def __str__(self) -> str:
        return self.name


class Invoice(models.Model):
    """A second model, so a value copied across models can be shown to fail."""

    iban = EncryptedTextField(null=True)
    scan = EncryptedBinaryField(null=True)


class ArchivedDocument(models.Model):
    """Only the archive keyring: shows that one keyring's trouble leaves another alone."""

    body = EncryptedBinaryField(keyring="archive")


class LegacyRecord(models.Model):
    """A table moving off plaintext: one column encrypted in place, one copied into a new column."""

    scan = EncryptedBinaryField(null=True, accept_plaintext=True)  # was a plain BinaryField
    ssn = models.TextField(null=True)  # the old plaintext column
    ssn_encrypted = EncryptedTextField(null=True)  # its encrypted successor


class AuditedTextField(EncryptedTextField):
    """A user's own subclass that overrides ``get_col`` and calls ``super()``: laziness must survive it."""

    def get_col(self, alias, output_field=None):
        return super().get_col(alias, output_field)


class Referral(models.Model):
    """Reached through ``select_related``, whose columns are loaded lazily too."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="referrals")
    reason = AuditedTextField()


class Typed(models.Model):
    """Each typed encrypted field beside its plain counterpart, for side-by-side round trips."""

    char = models.CharField(max_length=20, null=True, blank=True)
    e_char = EncryptedCharField(max_length=20, null=True, blank=True)
    email = models.EmailField(null=True, blank=True)
    e_email = EncryptedEmailField(null=True, blank=True)
    data = models.JSONField(null=True, blank=True)
    e_data = EncryptedJSONField(null=True, blank=True)
    integer = models.IntegerField(null=True, blank=True)
    e_integer = EncryptedIntegerField(null=True, blank=True)
    big = models.BigIntegerField(null=True, blank=True)
    e_big = EncryptedBigIntegerField(null=True, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    e_amount = EncryptedDecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    e_day = EncryptedDateField(null=True, blank=True)
    moment = models.DateTimeField(null=True, blank=True)
    e_moment = EncryptedDateTimeField(null=True, blank=True)


class EncryptedUUIDField(EncryptedField, models.UUIDField):
    """A user's own encrypted type, written only through the public API, as the README shows."""

    def to_plaintext_bytes(self, value):
        return self.to_python(value).bytes

    def from_plaintext_bytes(self, plaintext):
        return uuid.UUID(bytes=plaintext)


class Device(models.Model):
    serial = EncryptedUUIDField(null=True)


class Member(models.Model):
    """Searchable encrypted fields: found by value through a blind index, never decrypted to search."""

    name = models.CharField(max_length=50, blank=True)
    email = EncryptedEmailField(searchable=True, unique=True, search_normalizer=normalizers.email)
    national_id = EncryptedTextField(searchable=True, null=True, blank=True)
    passport = EncryptedBinaryField(searchable=True, null=True)
    member_no = EncryptedIntegerField(searchable=True, null=True)
    balance = EncryptedDecimalField(max_digits=8, decimal_places=2, searchable=True, null=True)
    joined = EncryptedDateTimeField(searchable=True, null=True)

    def __str__(self):
        return self.name

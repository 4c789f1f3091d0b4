from django.db import models

from django_kms_fields.fields import EncryptedBinaryField, EncryptedTextField


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

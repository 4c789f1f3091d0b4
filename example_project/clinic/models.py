from django.db import models

from django_kms_fields.fields import EncryptedBinaryField, EncryptedTextField


class Patient(models.Model):
    name = models.CharField(max_length=100)
    ssn = EncryptedTextField()
    xray = EncryptedBinaryField(null=True, blank=True, keyring="archive", editable=True)

    def __str__(self) -> str:
        return self.name

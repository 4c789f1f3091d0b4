from django.db import models

from django_kms_fields import normalizers
from django_kms_fields.fields import EncryptedBinaryField, EncryptedTextField


class Patient(models.Model):
    name = models.CharField(max_length=100)
    # Found by value through a blind index (ssn_blind_index), unique in the database.
    ssn = EncryptedTextField(searchable=True, unique=True, search_normalizer=normalizers.strip)
    xray = EncryptedBinaryField(null=True, blank=True, keyring="archive", editable=True)

    def __str__(self) -> str:
        return self.name

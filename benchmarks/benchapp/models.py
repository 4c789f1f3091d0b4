from django.db import models
from encrypted_fields.fields import EncryptedTextField as FernetTextField

from django_kms_fields.fields import EncryptedTextField


class PlainRow(models.Model):
    value = models.TextField()


class CachedRow(models.Model):
    value = EncryptedTextField()


class UncachedRow(models.Model):
    value = EncryptedTextField(keyring="uncached")


class FernetRow(models.Model):
    value = FernetTextField()

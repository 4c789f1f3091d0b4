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


class IndexedPlainRow(models.Model):
    value = models.CharField(max_length=64, db_index=True)


class SearchableRow(models.Model):
    value = EncryptedTextField(searchable=True)

from django.contrib import admin

from django_kms_fields.admin import EncryptedFieldListFilter

from .models import Patient


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    """What the README's Admin section allows: encrypted columns shown and edited, never searched, sorted
    or filtered by value."""

    list_display = ["name", "ssn", "notes"]
    sortable_by = ["name"]
    search_fields = ["name"]
    list_filter = [("notes", EncryptedFieldListFilter), ("xray", EncryptedFieldListFilter)]
    ordering = ["name"]

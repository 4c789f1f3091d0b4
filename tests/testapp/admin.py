from django.contrib import admin

from django_kms_fields.admin import EncryptedFieldListFilter

from .models import Member, Patient, Typed


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    """What the README's Admin section allows: encrypted columns shown and edited, never searched, sorted
    or filtered by value."""

    list_display = ["name", "ssn", "notes"]
    sortable_by = ["name"]
    search_fields = ["name"]
    list_filter = [("notes", EncryptedFieldListFilter), ("xray", EncryptedFieldListFilter)]
    ordering = ["name"]


@admin.register(Typed)
class TypedAdmin(admin.ModelAdmin):
    """Typed encrypted fields beside their counterparts, edited through the admin."""

    list_display = ["pk", "e_char", "e_integer", "e_day"]
    sortable_by = ["pk"]


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    """Searchable encrypted fields: exact search through the blind index, uniqueness errors on add."""

    list_display = ["name", "email"]
    sortable_by = ["name"]
    search_fields = ["name", "=email", "national_id__exact"]

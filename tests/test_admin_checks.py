"""Admin options that would search, filter or sort on an encrypted field fail the system checks."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.filters import AllValuesFieldListFilter, EmptyFieldListFilter
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db.models import F
from django.db.models.functions import Lower

from django_kms_fields.admin import EncryptedFieldListFilter
from tests.testapp.models import Member, Patient, Referral

WHY = "Each value is encrypted with its own data key and nonce, so the database cannot compare or sort the values."


@pytest.fixture
def register():
    """Registers ModelAdmins on an admin site of the test's own, and unregisters them afterwards.

    Admin checks walk every AdminSite instance, so a site left with broken ModelAdmins would fail later
    checks in the same process (a site and its ModelAdmins hold each other, so it outlives the test).
    """
    site = admin.AdminSite(name="kms_fields_checks")
    registered = []

    def register_admin(model, **options):
        model_admin = type(f"{model.__name__}Admin", (admin.ModelAdmin,), options)
        site.register(model, model_admin)
        registered.append(model)
        return model_admin

    yield register_admin
    for model in registered:
        site.unregister(model)


def kms_admin_errors(app_configs=None):
    return [
        message
        for message in checks.run_checks(app_configs=app_configs, tags=[checks.Tags.admin])
        if message.id.startswith("kms_fields.")
    ]


# --- one whole error per id ---------------------------------------------------------------------------


def test_an_encrypted_field_in_search_fields(register):
    model_admin = register(Patient, search_fields=["name", "=ssn"])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'search_fields[1]' refers to '=ssn', which is encrypted (testapp.Patient.ssn): the "
            "database cannot search its values, and every search would fail with EncryptedLookupError.",
            hint=f"{WHY} Remove it from search_fields, or make the field searchable=True and search it exactly "
            "('ssn__exact', or '=ssn' with a case-folding search_normalizer).",
            obj=model_admin,
            id="kms_fields.E040",
        )
    ]


def test_searchable_fields_may_be_searched_exactly(register):
    register(Member, search_fields=["name", "=email", "email__exact", "national_id__exact"])
    assert kms_admin_errors() == []


def test_searchable_fields_refuse_searches_their_index_cannot_answer(register):
    model_admin = register(Member, search_fields=["=national_id", "^email", "email"])

    errors = kms_admin_errors()
    assert [(error.id, error.msg.split(": ", 1)[1]) for error in errors] == [
        ("kms_fields.E040", "'=' searches with iexact, and this field's blind index is case-sensitive."),
        ("kms_fields.E040", "its blind index answers exact searches only; this search would fail with EncryptedLookupError."),
        ("kms_fields.E040", "its blind index answers exact searches only; this search would fail with EncryptedLookupError."),
    ]
    assert "'national_id__exact'" in errors[0].hint and all(error.obj is model_admin for error in errors)


def test_an_encrypted_field_in_list_filter(register):
    model_admin = register(Patient, list_filter=["name", "ssn", ("xray", AllValuesFieldListFilter)])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'list_filter[1]' refers to 'ssn', which is encrypted (testapp.Patient.ssn): a list "
            "filter would show its decrypted values as links and compare them in the database.",
            hint=f"{WHY} Django's list filters also put each value in a link (?ssn=...), so plaintext would reach "
            "URLs, access logs, browser history and Referer headers. Remove it from list_filter.",
            obj=model_admin,
            id="kms_fields.E041",
        ),
        checks.Error(
            "The value of 'list_filter[2]' refers to ('xray', "
            "<class 'django.contrib.admin.filters.AllValuesFieldListFilter'>), which is encrypted "
            "(testapp.Patient.xray): a list filter would show its decrypted values as links and compare them in "
            "the database.",
            hint=f"{WHY} Django's list filters also put each value in a link (?xray=...), so plaintext would "
            "reach URLs, access logs, browser history and Referer headers. Remove it from list_filter; to filter "
            "on whether a value is stored, use ('xray', django_kms_fields.admin.EncryptedFieldListFilter).",
            obj=model_admin,
            id="kms_fields.E041",
        ),
    ]


def test_an_encrypted_field_in_ordering(register):
    model_admin = register(Referral, ordering=["-patient__ssn", "id"])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'ordering[0]' refers to '-patient__ssn', which is encrypted (testapp.Patient.ssn): "
            "rows would be sorted by ciphertext.",
            hint=f"{WHY} Ciphertext order is random. Order by another field.",
            obj=model_admin,
            id="kms_fields.E042",
        )
    ]


def test_an_encrypted_field_in_an_inlines_ordering(register):
    inline = type("ReferralInline", (admin.TabularInline,), {"model": Referral, "ordering": ["reason"]})
    register(Patient, inlines=[inline])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'ordering[0]' refers to 'reason', which is encrypted (testapp.Referral.reason): "
            "rows would be sorted by ciphertext.",
            hint=f"{WHY} Ciphertext order is random. Order by another field.",
            obj=inline,
            id="kms_fields.E042",
        )
    ]


def test_an_encrypted_field_in_sortable_by(register):
    model_admin = register(Patient, list_display=["name", "ssn"], sortable_by=["name", "ssn"])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'sortable_by[1]' refers to 'ssn', which is encrypted (testapp.Patient.ssn): its column "
            "would be sorted by ciphertext.",
            hint=f"{WHY} Ciphertext order is random. Leave encrypted columns out of sortable_by.",
            obj=model_admin,
            id="kms_fields.E043",
        )
    ]


def test_an_encrypted_column_is_an_error_while_every_column_is_sortable(register):
    model_admin = register(Patient, list_display=["name", "ssn"])

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'list_display[1]' refers to 'ssn', which is encrypted (testapp.Patient.ssn): "
            "sortable_by is not set, so every column is sortable, and this one would be sorted by ciphertext.",
            hint=f"{WHY} Ciphertext order is random. Set sortable_by to the columns that may be sorted, leaving "
            "'ssn' out (sortable_by = () makes no column sortable).",
            obj=model_admin,
            id="kms_fields.E044",
        )
    ]


def test_a_column_ordered_by_an_encrypted_field(register):
    @admin.display(ordering="-ssn")
    def masked_ssn(self, patient):
        return "***-**-" + patient.ssn[-4:]

    model_admin = register(Patient, list_display=["name", "masked_ssn"], sortable_by=["masked_ssn"], masked_ssn=masked_ssn)

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'list_display[1]' refers to 'masked_ssn', whose admin_order_field '-ssn' is encrypted "
            "(testapp.Patient.ssn): its column would be sorted by ciphertext.",
            hint=f"{WHY} Ciphertext order is random. Remove the ordering of this column "
            "(@admin.display(ordering=...)), or point it at another field.",
            obj=model_admin,
            id="kms_fields.E045",
        )
    ]


def test_an_encrypted_field_as_date_hierarchy(register):
    # Only a user's own EncryptedField subclass of a DateField passes Django's own date_hierarchy check
    # (admin.E128); ours speaks up whatever the type.
    model_admin = register(Patient, date_hierarchy="notes")

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'date_hierarchy' refers to 'notes', which is encrypted (testapp.Patient.notes): the "
            "database cannot group or compare its dates.",
            hint=f"{WHY} Use a date field that is not encrypted for date_hierarchy.",
            obj=model_admin,
            id="kms_fields.E046",
        )
    ]


def test_prepopulating_a_field_from_an_encrypted_one_is_an_error(register):
    model_admin = register(Patient, prepopulated_fields={"name": ["ssn"]})

    assert kms_admin_errors() == [
        checks.Error(
            "The value of 'prepopulated_fields['name']' refers to 'ssn', which is encrypted (testapp.Patient.ssn): "
            "the admin's JavaScript would copy its plaintext into 'name'.",
            hint="Prepopulate from a field that is not encrypted, or encrypt the target too and fill it yourself.",
            obj=model_admin,
            id="kms_fields.E047",
        )
    ]


# --- names resolved the way the admin resolves them ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "option", "value", "expected"),
    [
        (Patient, "search_fields", ["ssn"], "search_fields[0]"),
        (Patient, "search_fields", ["^ssn"], "search_fields[0]"),
        (Patient, "search_fields", ["@notes"], "search_fields[0]"),
        (Patient, "search_fields", ["name", "ssn__iexact"], "search_fields[1]"),
        (Patient, "search_fields", ["referrals__reason"], "search_fields[0]"),  # a reverse relation
        (Referral, "search_fields", ["patient__name", "patient__ssn__exact"], "search_fields[1]"),
        (Referral, "list_filter", ["patient__ssn"], "list_filter[0]"),
        (Referral, "list_filter", [("patient__notes", EmptyFieldListFilter)], "list_filter[0]"),
        (Patient, "ordering", ["ssn"], "ordering[0]"),
        (Patient, "ordering", [F("notes").desc(nulls_last=True)], "ordering[0]"),
        (Patient, "ordering", ["name", Lower("ssn")], "ordering[1]"),
        (Referral, "list_display", ["id", "patient__ssn"], "list_display[1]"),
    ],
)
def test_names_through_prefixes_lookups_relations_and_expressions(register, model, option, value, expected):
    register(model, **{option: value})

    errors = kms_admin_errors()

    assert len(errors) == 1, errors
    assert errors[0].msg.startswith(f"The value of '{expected}' refers to "), errors[0].msg


def test_a_sorted_column_through_a_model_property_or_expression(register):
    def stored_ssn(patient):
        return patient.ssn

    stored_ssn.admin_order_field = F("ssn").asc()
    register(Patient, list_display=["name", stored_ssn], sortable_by=["name"])

    assert [(e.id, e.msg.split(",")[0]) for e in kms_admin_errors()] == [
        ("kms_fields.E045", "The value of 'list_display[1]' refers to 'stored_ssn'")
    ]


# --- what is allowed -----------------------------------------------------------------------------------


def test_showing_and_editing_encrypted_columns_filtering_on_presence_and_plain_sorting_pass(register):
    @admin.display(ordering="name")
    def initials(self, patient):
        return patient.name[:1]

    register(
        Patient,
        list_display=["name", "ssn", "notes", "initials"],
        list_editable=["ssn", "notes"],
        sortable_by=["name", "initials"],
        search_fields=["name", "=referrals__id"],
        list_filter=["name", ("notes", EncryptedFieldListFilter), ("xray", EncryptedFieldListFilter)],
        ordering=["-name", F("id").asc(), "?"],
        initials=initials,
    )
    register(Referral, list_display=["reason", "patient__ssn"], sortable_by=(), list_filter=[("patient__xray", EncryptedFieldListFilter)])

    assert kms_admin_errors() == []


def test_a_model_admin_that_chooses_sortable_columns_per_request_is_trusted(register):
    def get_sortable_by(self, request):
        return ["name"]

    register(Patient, list_display=["name", "ssn"], get_sortable_by=get_sortable_by)

    assert kms_admin_errors() == []


def test_only_the_checked_apps_admins_are_checked(register):
    register(Patient, search_fields=["ssn"])

    assert kms_admin_errors(app_configs=[apps.get_app_config("auth")]) == []
    assert [e.id for e in kms_admin_errors(app_configs=[apps.get_app_config("testapp")])] == ["kms_fields.E040"]


@pytest.mark.django_db(databases=["default", "other"])  # JSONField's check asks each database about JSON
def test_manage_py_check_refuses_an_admin_that_would_search_an_encrypted_field(register):
    register(Patient, search_fields=["ssn"])

    with pytest.raises(SystemCheckError, match=r"kms_fields\.E040"):
        call_command("check")

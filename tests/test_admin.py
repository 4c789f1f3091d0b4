"""The admin's add, change, changelist and search views on encrypted fields, and the binary upload widget.

The test admin (tests/testapp/admin.py) is configured as the README's Admin section allows: encrypted
columns shown, never searched, sorted or filtered by value.
"""

import re
from html import unescape

import pytest
from django import forms
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile

from django_kms_fields.fields import EncryptedBinaryField
from tests.helpers import stored
from tests.testapp.models import ArchivedDocument, Patient

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/testapp/patient/"
ADD = "/admin/testapp/patient/add/"
XRAY = b"\x89PNG\r\n\x1a\nXRAY-PIXELS"


def change_url(patient):
    return f"/admin/testapp/patient/{patient.pk}/change/"


def links(page):
    return [unescape(link) for link in re.findall(r'href="(\?[^"]*)"', page.content.decode())]


@pytest.fixture
def patients():
    return [
        Patient.objects.create(name="Ada", ssn="078-05-1120", notes="allergic", xray=XRAY),
        Patient.objects.create(name="Bob", ssn="219-09-9999", notes=None, xray=None),
    ]


# --- changelist and search ------------------------------------------------------------------------------


def test_the_changelist_shows_plaintext_and_sorts_by_plain_columns_only(admin_client, patients):
    page = admin_client.get(CHANGELIST)

    assert page.status_code == 200
    html = page.content.decode()
    assert "078-05-1120" in html and "219-09-9999" in html
    # list_display is name, ssn, notes: every sorting link names column 1 (name) only.
    orderings = [link.removeprefix("?o=") for link in links(page) if link.startswith("?o=")]
    assert orderings and {column.lstrip("-") for o in orderings for column in o.split(".") if column} == {"1"}
    assert '<th scope="col" class="column-ssn">' in html and '<th scope="col" class="column-notes">' in html


def test_search_finds_rows_by_a_plain_field(admin_client, patients):
    page = admin_client.get(CHANGELIST, {"q": "Ada"})

    assert page.status_code == 200
    assert [patient.name for patient in page.context["cl"].result_list] == ["Ada"]


def test_the_filter_of_an_encrypted_field_asks_only_whether_a_value_is_stored(admin_client, patients):
    Patient.objects.create(name="Cy", ssn="123-45-6789", notes="diabetic", xray=None)

    page = admin_client.get(CHANGELIST, {"_facets": "True"})

    assert page.status_code == 200
    choices = re.findall(r'<a href="(\?[^"]*isnull[^"]*)">([^<]*)</a>', page.content.decode())
    assert [(unescape(link), text) for link, text in choices] == [
        ("?_facets=True&notes__isnull=0", "Has a value (2)"),
        ("?_facets=True&notes__isnull=1", "No value (1)"),
        ("?_facets=True&xray__isnull=0", "Has a value (1)"),
        ("?_facets=True&xray__isnull=1", "No value (2)"),
    ]
    assert not any("078-05" in link or "allergic" in link or "PNG" in link for link in links(page))

    with_xray = admin_client.get(CHANGELIST + unescape(choices[2][0]))
    without_notes = admin_client.get(CHANGELIST + unescape(choices[1][0]))

    assert [p.name for p in with_xray.context["cl"].result_list] == ["Ada"]
    assert [p.name for p in without_notes.context["cl"].result_list] == ["Bob"]


def test_a_value_put_in_the_url_is_refused_with_a_redirect_not_an_error(admin_client, patients):
    response = admin_client.get(CHANGELIST, {"ssn": "078-05-1120"})

    assert response.status_code == 302
    assert response["Location"] == CHANGELIST + "?e=1"


def test_with_the_list_filter_check_silenced_no_value_reaches_a_link(admin_client, patients, monkeypatch):
    # list_filter set after the checks ran: what SILENCED_SYSTEM_CHECKS or get_list_filter() would give.
    monkeypatch.setattr(admin.site.get_model_admin(Patient), "list_filter", ["ssn", "xray"])

    page = admin_client.get(CHANGELIST)
    by_value = admin_client.get(CHANGELIST, {"ssn": "078-05-1120"})

    assert page.status_code == 200
    assert not [link for link in links(page) if link.startswith(("?ssn", "?xray="))]
    # ssn cannot be NULL, so it has no filter; xray gets the one that asks whether a value is stored.
    assert sorted(link for link in links(page) if "isnull" in link) == ["?xray__isnull=0", "?xray__isnull=1"]
    assert by_value.status_code == 302


# --- add and change views, the binary upload -----------------------------------------------------------


def test_the_add_view_encrypts_the_text_and_the_uploaded_file(admin_client):
    page = admin_client.get(ADD)
    response = admin_client.post(
        ADD,
        {"name": "Ada", "ssn": "078-05-1120", "notes": "", "xray": SimpleUploadedFile("scan.png", XRAY)},
    )

    assert page.status_code == 200
    assert "Currently" not in page.content.decode() and "xray-clear" not in page.content.decode()
    assert response.status_code == 302
    patient = Patient.objects.get()
    assert (patient.ssn, patient.notes, patient.xray) == ("078-05-1120", "", XRAY)
    assert XRAY not in stored(Patient, patient.pk, "xray")
    assert b"078-05-1120" not in stored(Patient, patient.pk, "ssn")


def test_the_add_view_without_a_file_stores_null(admin_client):
    response = admin_client.post(ADD, {"name": "Bob", "ssn": "219-09-9999", "notes": ""})

    assert response.status_code == 302
    assert stored(Patient, Patient.objects.get().pk, "xray") is None


def test_the_change_view_says_a_value_is_stored_and_its_size_never_its_bytes(admin_client, patients):
    page = admin_client.get(change_url(patients[0]))

    html = page.content.decode()
    assert page.status_code == 200
    assert f"Currently: a stored value of {len(XRAY)} bytes" in html
    assert '<input type="checkbox" name="xray-clear" id="xray-clear_id"' in html
    assert "XRAY-PIXELS" not in html and "PNG" not in html
    assert "078-05-1120" in html  # the text field is edited in plaintext, by design


def test_the_change_view_of_a_row_without_a_value_offers_only_an_upload(admin_client, patients):
    html = admin_client.get(change_url(patients[1])).content.decode()

    assert "Currently" not in html and "xray-clear" not in html
    assert '<input type="file" name="xray"' in html


def test_saving_without_a_file_keeps_the_stored_value(admin_client, patients):
    response = admin_client.post(change_url(patients[0]), {"name": "Ada L.", "ssn": "078-05-1120", "notes": "allergic"})

    assert response.status_code == 302
    patient = Patient.objects.get(pk=patients[0].pk)
    assert (patient.name, patient.xray) == ("Ada L.", XRAY)


def test_uploading_a_file_replaces_the_stored_value(admin_client, patients):
    response = admin_client.post(
        change_url(patients[0]),
        {"name": "Ada", "ssn": "078-05-1120", "notes": "", "xray": SimpleUploadedFile("new.png", b"new-scan")},
    )

    assert response.status_code == 302
    assert Patient.objects.get(pk=patients[0].pk).xray == b"new-scan"


def test_ticking_clear_stores_null(admin_client, patients):
    response = admin_client.post(
        change_url(patients[0]), {"name": "Ada", "ssn": "078-05-1120", "notes": "", "xray-clear": "on"}
    )

    assert response.status_code == 302
    assert stored(Patient, patients[0].pk, "xray") is None


def test_a_file_and_clear_together_are_refused_and_the_value_kept(admin_client, patients):
    page = admin_client.post(
        change_url(patients[0]),
        {"name": "Ada", "ssn": "078-05-1120", "notes": "", "xray-clear": "on", "xray": SimpleUploadedFile("n.png", b"n")},
    )

    assert page.status_code == 200
    assert "Please either submit a file or check the clear checkbox, not both." in page.content.decode()
    assert Patient.objects.get(pk=patients[0].pk).xray == XRAY


def test_an_empty_stored_value_is_a_value(admin_client):
    patient = Patient.objects.create(name="Eve", ssn="1", xray=b"")

    page = admin_client.get(change_url(patient))
    admin_client.post(change_url(patient), {"name": "Eve", "ssn": "1", "notes": ""})

    assert "Currently: a stored value of 0 bytes" in page.content.decode()
    assert stored(Patient, patient.pk, "xray") is not None
    assert Patient.objects.get(pk=patient.pk).xray == b""


# --- the widget where the column cannot be NULL ---------------------------------------------------------


class UploadForm(forms.Form):
    required_scan = ArchivedDocument._meta.get_field("body").formfield()  # EncryptedBinaryField(), not null
    optional_scan = EncryptedBinaryField(blank=True).formfield()  # blank, not null


def test_no_clear_box_where_the_column_cannot_be_null_and_a_posted_one_is_ignored():
    initial = {"required_scan": b"stored", "optional_scan": b"stored too"}
    html = str(UploadForm(initial=initial))
    form = UploadForm(
        data={"required_scan-clear": "on", "optional_scan-clear": "on"}, files={}, initial=initial
    )

    assert "a stored value of 6 bytes" in html and "a stored value of 10 bytes" in html
    assert "-clear" not in html
    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"required_scan": b"stored", "optional_scan": b"stored too"}


def test_with_nothing_stored_a_not_null_column_gets_empty_bytes_or_a_required_error():
    form = UploadForm(data={}, files={})

    assert not form.is_valid()
    assert form.errors == {"required_scan": ["This field is required."]}
    assert form.cleaned_data == {"optional_scan": b""}


def test_a_required_upload_is_marked_required_only_while_nothing_is_stored():
    nothing = str(UploadForm()["required_scan"])
    empty = str(UploadForm(initial={"required_scan": b""})["required_scan"])

    assert 'type="file" name="required_scan" required' in nothing
    assert "a stored value of 0 bytes" in empty and 'name="required_scan" required' not in empty


def test_a_disabled_upload_keeps_the_stored_value():
    form = UploadForm(data={}, files={}, initial={"required_scan": b"stored", "optional_scan": b""})
    for field in form.fields.values():
        field.disabled = True

    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"required_scan": b"stored", "optional_scan": b""}

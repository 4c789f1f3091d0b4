"""Admin, ModelForms and fixtures see plaintext; the database sees only ciphertext."""

import json

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from tests.helpers import stored
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = ["name", "ssn", "notes", "xray"]


def test_a_model_form_edits_text_and_uploads_bytes():
    form = PatientForm(
        data={"name": "Ada", "ssn": "123", "notes": ""},
        files={"xray": SimpleUploadedFile("scan.png", b"\x89PNG-bytes")},
    )
    assert form.is_valid(), form.errors

    patient = form.save()

    loaded = Patient.objects.get(pk=patient.pk)
    assert (loaded.ssn, loaded.xray) == ("123", b"\x89PNG-bytes")
    assert b"\x89PNG-bytes" not in stored(Patient, patient.pk, "xray")


def test_a_model_form_keeps_the_stored_bytes_when_no_file_is_uploaded():
    patient = Patient.objects.create(name="Ada", ssn="123", xray=b"old-scan")
    form = PatientForm(data={"name": "Ada", "ssn": "456", "notes": ""}, instance=patient)
    assert form.is_valid(), form.errors

    form.save()

    loaded = Patient.objects.get(pk=patient.pk)
    assert (loaded.ssn, loaded.xray) == ("456", b"old-scan")


def test_the_admin_change_page_shows_and_saves_plaintext(admin_client):
    patient = Patient.objects.create(name="Ada", ssn="078-05-1120", notes="allergic")
    url = f"/admin/testapp/patient/{patient.pk}/change/"

    page = admin_client.get(url)
    assert page.status_code == 200
    assert "078-05-1120" in page.content.decode()

    response = admin_client.post(url, {"name": "Ada", "ssn": "999-99-9999", "notes": "allergic"})
    assert response.status_code == 302
    assert Patient.objects.get(pk=patient.pk).ssn == "999-99-9999"


def test_the_admin_changelist_loads(admin_client):
    Patient.objects.create(name="Ada", ssn="078-05-1120")
    assert admin_client.get("/admin/testapp/patient/").status_code == 200


def test_dumpdata_and_loaddata_round_trip(tmp_path):
    Patient.objects.create(name="Ada", ssn="078-05-1120", notes=None, xray=b"\x00\xffscan")
    fixture = tmp_path / "patients.json"

    call_command("dumpdata", "testapp.patient", output=str(fixture))
    dumped = json.loads(fixture.read_text())
    Patient.objects.all().delete()
    call_command("loaddata", str(fixture), verbosity=0)

    assert dumped[0]["fields"]["ssn"] == "078-05-1120"
    loaded = Patient.objects.get()
    assert (loaded.ssn, loaded.notes, bytes(loaded.xray)) == ("078-05-1120", None, b"\x00\xffscan")
    assert b"078-05-1120" not in stored(Patient, loaded.pk, "ssn")
    assert Patient.objects.get().xray == b"\x00\xffscan"

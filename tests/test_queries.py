"""Lookups that would compare ciphertext are refused with an explanation; NULL checks work."""

import pytest
from django.core.exceptions import FieldError

from django_kms_fields.exceptions import EncryptedLookupError
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "lookup",
    ["ssn", "ssn__exact", "ssn__iexact", "ssn__contains", "ssn__icontains", "ssn__in", "ssn__startswith", "ssn__gt",
     "xray", "xray__in"],
)
def test_lookups_that_compare_contents_are_refused(lookup):
    value = ["a"] if lookup.endswith("__in") else "a"

    with pytest.raises(EncryptedLookupError) as caught:
        list(Patient.objects.filter(**{lookup: value}))

    message = str(caught.value)
    assert "is encrypted" in message
    # An equality lookup points to the blind index; one it could never answer does not.
    assert ("searchable=True" in message) == (lookup.partition("__")[2] in ("", "exact", "iexact", "in"))
    assert isinstance(caught.value, FieldError)


def test_transforms_are_refused():
    with pytest.raises(EncryptedLookupError):
        list(Patient.objects.filter(ssn__lower="a"))


def test_isnull_and_none_work():
    with_notes = Patient.objects.create(ssn="1", notes="n")
    without = Patient.objects.create(ssn="2")

    assert list(Patient.objects.filter(notes__isnull=True)) == [without]
    assert list(Patient.objects.filter(notes__isnull=False)) == [with_notes]
    assert list(Patient.objects.filter(notes=None)) == [without]
    assert list(Patient.objects.exclude(notes=None)) == [with_notes]

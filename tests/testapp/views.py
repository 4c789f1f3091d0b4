from django.http import HttpResponse

from .models import Patient


def patient_ssn(request, pk):
    """Shows one patient's decrypted ssn: a view like any an application has."""
    return HttpResponse(Patient.objects.get(pk=pk).ssn, content_type="text/plain")

"""Queries that would sort, group, deduplicate, compare or compute on ciphertext are refused before any
SQL is sent; what gives the right answer keeps working and gives it."""

import pytest
from django.core.exceptions import FieldError
from django.db import connection
from django.db.models import Case, Count, F, Max, Min, OuterRef, Q, Subquery, Value, When, Window
from django.db.models.functions import Coalesce, Length, RowNumber, Upper
from django.db.models.lookups import Exact
from django.test.utils import CaptureQueriesContext, isolate_apps

from django_kms_fields.exceptions import EncryptedLookupError, EncryptedQueryError
from tests.testapp.models import Invoice, LegacyRecord, Patient, Referral

pytestmark = pytest.mark.django_db


def refused(run):
    """Runs ``run``, which must be refused before it sends any SQL; returns the error's message."""
    with CaptureQueriesContext(connection) as sent, pytest.raises(EncryptedQueryError) as caught:
        run()
    assert sent.captured_queries == []
    assert isinstance(caught.value, EncryptedLookupError)
    assert isinstance(caught.value, FieldError)
    return str(caught.value)


def case(name, field, reason, run):
    return pytest.param(run, f"testapp.{field}", reason, id=name)


REFUSED = [
    # ORDER BY: by name, descending, by expression, across a relation, by a selected column (ORDER BY 1),
    # by an annotation, and a column that is not selected.
    case("order_by", "Patient.ssn", "ordering by it",
         lambda: list(Patient.objects.order_by("ssn"))),
    case("order_by_descending", "Patient.ssn", "ordering by it",
         lambda: list(Patient.objects.order_by("-ssn"))),
    case("order_by_expression", "Patient.xray", "ordering by it",
         lambda: list(Patient.objects.order_by(F("xray").desc(nulls_last=True)))),
    case("order_by_across_a_relation", "Patient.ssn", "ordering by it",
         lambda: list(Referral.objects.order_by("patient__ssn"))),
    case("order_by_a_selected_column", "Patient.ssn", "ordering by it",
         lambda: list(Patient.objects.values("ssn").order_by("ssn"))),
    case("order_by_an_annotation", "Patient.ssn", "ordering by it",
         lambda: list(Patient.objects.annotate(copy=F("ssn")).order_by("copy"))),
    case("order_by_an_unselected_column", "Patient.notes", "ordering by it",
         lambda: list(Patient.objects.values_list("name").order_by("notes"))),
    case("latest", "Patient.ssn", "ordering by it",
         lambda: Patient.objects.latest("ssn")),
    case("window_ordered_by_it", "Patient.ssn", "ordering by it",
         lambda: list(Patient.objects.annotate(rank=Window(RowNumber(), order_by=[F("ssn").asc()])))),
    # DISTINCT: over the column without the row's key, across a reverse relation even with the key of
    # the other table, DISTINCT ON.
    case("values_list_distinct", "Patient.ssn", "distinct() compares whole rows",
         lambda: list(Patient.objects.values_list("ssn", flat=True).distinct())),
    case("values_distinct_with_a_reverse_relation", "Referral.reason", "distinct() compares whole rows",
         lambda: list(Patient.objects.values("id", "referrals__reason").distinct())),
    case("distinct_on", "Patient.ssn", "distinct('ssn')",
         lambda: list(Patient.objects.distinct("ssn"))),
    case("count_of_distinct_values", "Patient.ssn", "distinct() compares whole rows",
         lambda: Patient.objects.values_list("ssn").distinct().count()),
    # GROUP BY the column.
    case("values_annotate", "Patient.ssn", "grouping by it",
         lambda: list(Patient.objects.values("ssn").annotate(n=Count("id")))),
    case("values_annotate_across_a_relation", "Patient.ssn", "grouping by it",
         lambda: list(Referral.objects.values("patient__ssn").annotate(n=Count("id")))),
    case("window_partitioned_by_it", "Patient.ssn", "grouping by it",
         lambda: list(Patient.objects.annotate(rank=Window(RowNumber(), partition_by=F("ssn"))))),
    # Aggregates and functions.
    case("count_distinct", "Patient.ssn", "Count(distinct=True)",
         lambda: Patient.objects.aggregate(n=Count("ssn", distinct=True))),
    case("count_distinct_annotation", "Patient.notes", "Count(distinct=True)",
         lambda: list(Patient.objects.values("name").annotate(n=Count("notes", distinct=True)))),
    case("max", "Patient.ssn", "Max() over it",
         lambda: Patient.objects.aggregate(Max("ssn"))),
    case("min_annotation", "Patient.xray", "Min() over it",
         lambda: list(Patient.objects.values("name").annotate(first=Min("xray")))),
    case("length", "Patient.ssn", "Length() over it",
         lambda: list(Patient.objects.annotate(n=Length("ssn")))),
    case("upper_in_values", "Patient.ssn", "Upper() over it",
         lambda: list(Patient.objects.values(shout=Upper("ssn")))),
    case("function_in_a_filter", "Patient.notes", "Length() over it",
         lambda: list(Patient.objects.alias(n=Length("notes")).filter(n__gt=3))),
    case("arithmetic", "Patient.ssn", "CombinedExpression() over it",
         lambda: list(Patient.objects.annotate(more=F("ssn") + Value("!")))),
    case("upper_in_a_filter", "Patient.ssn", "Upper() over it",
         lambda: list(Patient.objects.filter(Exact(Upper("ssn"), "X")).values("id"))),
    case("coalesce_of_two_fields", "Patient.notes", "Coalesce() over it",
         lambda: list(Patient.objects.annotate(either=Coalesce("notes", "ssn")))),
    case("case_of_two_fields", "Patient.notes", "Case() would return it among other values",
         lambda: list(Patient.objects.annotate(either=Case(When(name="a", then="notes"), default="ssn")))),
    case("aggregate_over_a_sliced_queryset", "Patient.ssn", "Count(distinct=True)",
         lambda: Patient.objects.all()[:10].aggregate(n=Count("ssn", distinct=True))),
    # Comparisons of another column with ciphertext.
    case("compared_with_another_column", "Patient.ssn", "'exact' lookup",
         lambda: list(Patient.objects.filter(name=F("ssn")))),
    case("in_a_subquery_of_it", "Patient.ssn", "'in' lookup",
         lambda: list(LegacyRecord.objects.filter(ssn__in=Patient.objects.values("ssn")).values("id"))),
    case("ciphertext_written_to_a_plain_column", "LegacyRecord.ssn_encrypted",
         "update() would write its ciphertext into testapp.LegacyRecord.ssn",
         lambda: LegacyRecord.objects.update(ssn=F("ssn_encrypted"))),
    # Set operations.
    case("union_with_another_field", "Invoice.iban",
         "union() would put ciphertext of testapp.Invoice.iban in the column of testapp.Patient.ssn",
         lambda: list(Patient.objects.values_list("ssn").union(Invoice.objects.values_list("iban")))),
    case("union_with_another_field_of_the_model", "Patient.notes", "in the column of testapp.Patient.ssn (column 2)",
         lambda: list(Patient.objects.only("ssn").union(Patient.objects.only("notes")))),
    case("union_with_a_plain_column_first", "Patient.ssn", "in a column that is not encrypted",
         lambda: list(Patient.objects.values_list("name").union(Patient.objects.values_list("ssn")))),
    case("union_of_one_column", "Patient.ssn", "union() compares whole rows",
         lambda: list(Patient.objects.values_list("ssn").union(Patient.objects.values_list("ssn")))),
    case("union_then_values", "Patient.ssn", "union() compares whole rows",
         lambda: list(Patient.objects.filter(name="a").union(Patient.objects.all()).values_list("name", "ssn"))),
    case("intersection", "Patient.ssn", "intersection() compares whole rows",
         lambda: list(Patient.objects.values_list("ssn").intersection(Patient.objects.values_list("ssn")))),
    case("difference", "Invoice.iban", "difference() would put ciphertext",
         lambda: list(Patient.objects.values_list("ssn").difference(Invoice.objects.values_list("iban")))),
]


@pytest.mark.parametrize("run, label, reason", REFUSED)
def test_queries_that_would_use_ciphertext_are_refused_before_any_sql(run, label, reason):
    message = refused(run)

    assert label in message
    assert reason in message
    assert "is encrypted, so the database only has its ciphertext" in message


def test_a_refused_query_says_what_to_do_instead():
    count_distinct = refused(lambda: Patient.objects.aggregate(n=Count("ssn", distinct=True)))
    grouped = refused(lambda: list(Patient.objects.values("ssn").annotate(n=Count("id"))))

    assert "Count the distinct values in Python" in count_distinct
    assert "equal values never have equal ciphertexts" in grouped
    assert "Select the primary key too" in refused(lambda: list(Patient.objects.values_list("ssn").distinct()))
    assert "Order by another column" in refused(lambda: list(Patient.objects.order_by("ssn")))


@isolate_apps("tests.testapp")
def test_meta_ordering_by_the_field_is_refused_where_django_would_use_it():
    class PatientBySsn(Patient):
        class Meta:
            proxy = True
            app_label = "testapp"
            ordering = ["name", "-ssn"]

    assert "ordering by it" in refused(lambda: list(PatientBySsn.objects.all()))
    assert "ordering by it" in refused(lambda: list(PatientBySsn.objects.values_list("name", flat=True)))
    # Explicit ordering replaces Meta.ordering, and a GROUP BY query drops it.
    assert list(PatientBySsn.objects.order_by("name")) == []
    assert list(PatientBySsn.objects.values("name").annotate(n=Count("id"))) == []


def test_ordering_by_a_relation_whose_meta_ordering_is_the_field_is_refused(monkeypatch):
    monkeypatch.setattr(Patient._meta, "ordering", ["ssn"])

    assert "testapp.Patient.ssn" in refused(lambda: list(Referral.objects.order_by("patient")))
    assert list(Referral.objects.order_by("patient_id")) == []


# --- what gives the right answer keeps working ---------------------------------------------------


@pytest.fixture
def patients():
    """Two patients share an ssn and a referral reason: equal values, different ciphertexts."""
    ann = Patient.objects.create(name="ann", ssn="111", notes="n")
    bob = Patient.objects.create(name="bob", ssn="111")
    cyd = Patient.objects.create(name="cyd", ssn="222", notes="m")
    Referral.objects.create(patient=ann, reason="cardiology")
    Referral.objects.create(patient=ann, reason="cardiology")
    Referral.objects.create(patient=bob, reason="cardiology")
    return ann, bob, cyd


def test_counting_values_and_null_checks_keep_working(patients):
    assert Patient.objects.aggregate(ssn=Count("ssn"), notes=Count("notes")) == {"ssn": 3, "notes": 2}
    assert Patient.objects.aggregate(n=Count("ssn", filter=Q(notes__isnull=False)))["n"] == 2
    assert dict(Patient.objects.values_list("name").annotate(n=Count("notes"))) == {"ann": 1, "bob": 0, "cyd": 1}
    assert Patient.objects.filter(notes__isnull=True).count() == 1
    assert Patient.objects.exclude(notes=None).exists()
    assert Patient.objects.all()[:2].aggregate(n=Count("ssn"))["n"] == 2


def test_selecting_the_column_keeps_working(patients):
    ann, bob, cyd = patients
    by_name = Patient.objects.order_by("name")

    assert list(by_name.values_list("ssn", flat=True)) == ["111", "111", "222"]
    assert [p.copy for p in by_name.annotate(copy=F("notes"))] == ["n", None, "m"]
    assert [p.ssn for p in by_name.only("ssn")] == ["111", "111", "222"]
    consented = by_name.annotate(shown=Case(When(notes__isnull=False, then="ssn"), default=None))
    assert [p.shown for p in consented] == ["111", None, "222"]
    referrals = Referral.objects.select_related("patient").order_by("-id")
    assert [r.patient.ssn for r in referrals] == ["111", "111", "111"]
    latest_reason = Referral.objects.filter(patient=OuterRef("pk")).order_by("-id").values("reason")[:1]
    with_reason = by_name.annotate(reason=Subquery(latest_reason))
    assert list(with_reason.values_list("reason", flat=True)) == ["cardiology", "cardiology", None]


def test_distinct_and_grouping_with_the_primary_key_keep_working(patients):
    ann, bob, cyd = patients

    # Whole rows: the key makes every row distinct, and one row's ciphertext is always the same.
    assert Patient.objects.distinct().count() == 3
    assert Patient.objects.filter(referrals__reason__isnull=False).distinct().count() == 2
    expected = [(ann.pk, "111"), (bob.pk, "111"), (cyd.pk, "222")]
    assert sorted(Patient.objects.values_list("id", "ssn").distinct()) == expected
    anns = Referral.objects.filter(patient=ann).values_list("patient_id", "patient__ssn")
    assert list(anns.distinct()) == [(ann.pk, "111")]
    # A column reached through a foreign key belongs to one row per selected row.
    assert sorted(Referral.objects.values_list("patient__ssn", "id").distinct()) == [
        ("111", referral.pk) for referral in Referral.objects.order_by("pk")
    ]
    # GROUP BY every column of the model (SQLite, MariaDB) or its key (PostgreSQL).
    assert {p.name: p.n for p in Patient.objects.annotate(n=Count("referrals"))} == {"ann": 2, "bob": 1, "cyd": 0}
    grouped = Referral.objects.annotate(ssn=F("patient__ssn"), n=Count("id"))
    assert sorted(grouped.values_list("ssn", "n")) == [("111", 1)] * 3


def test_set_operations_over_the_same_columns_keep_working(patients):
    ann, bob, cyd = patients

    union = Patient.objects.filter(name="ann").union(Patient.objects.filter(ssn__isnull=False, name="cyd"))
    assert sorted((p.name, p.ssn) for p in union) == [("ann", "111"), ("cyd", "222")]
    union = Patient.objects.filter(name="ann").union(Patient.objects.filter(name="bob"))
    assert sorted(union.values_list("id", "ssn")) == [(ann.pk, "111"), (bob.pk, "111")]
    everyone = Patient.objects.values_list("ssn", flat=True)
    assert sorted(everyone.filter(name="ann").union(everyone.exclude(name="ann"), all=True)) == ["111", "111", "222"]
    rows = Patient.objects.values_list("id", "ssn")
    assert list(rows.intersection(rows.filter(name="bob"))) == [(bob.pk, "111")]


def test_writes_and_ordering_by_other_columns_keep_working(patients):
    ann, bob, cyd = patients
    field = Patient._meta.get_field("ssn")

    ann.ssn, bob.ssn = "333", "444"
    Patient.objects.bulk_update([ann, bob], ["ssn"])
    Patient.objects.filter(pk=cyd.pk).update(ssn=Value("555", output_field=field), notes=F("notes"))
    Patient.objects.filter(pk=cyd.pk).update(ssn=F("ssn"))

    assert list(Patient.objects.order_by("-name").values_list("ssn", flat=True)) == ["555", "444", "333"]
    assert Patient.objects.order_by("ssn").count() == 3  # count() drops the ordering
    assert Patient.objects.order_by("ssn").exists()

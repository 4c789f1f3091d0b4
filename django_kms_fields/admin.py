"""The admin list filter for encrypted fields.

The database can answer one question about an encrypted column: whether it holds a value (``IS
NULL``). ``EncryptedFieldListFilter`` asks exactly that, and its links carry ``<field>__isnull=0|1``,
never a value. Django's default filter would list every decrypted value as a link (``?ssn=…``), which
puts plaintext in URLs, access logs, browser history and Referer headers, and then fails to compare
it; so this module also registers ``EncryptedFieldListFilter`` as the default filter for encrypted
fields. The system check ``kms_fields.E041`` still refuses ``list_filter`` entries on encrypted fields
unless they name this filter; the registration only matters where that check cannot see the filters
(``get_list_filter()``) or was silenced.

Imported by the app's ``ready()`` when ``django.contrib.admin`` is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.admin.filters import FieldListFilter
from django.contrib.admin.utils import get_last_value_from_parameters
from django.db import models
from django.utils.translation import gettext_lazy as _

from .fields import EncryptedField

__all__ = ["EncryptedFieldListFilter"]


class EncryptedFieldListFilter(FieldListFilter):
    """Filters on whether an encrypted field holds a value; shown only for ``null=True`` fields.

    Use it as ``list_filter = [("xray", EncryptedFieldListFilter)]`` (paths through relations work,
    ``("patient__xray", EncryptedFieldListFilter)``).
    """

    def __init__(self, field: models.Field, request: Any, params: dict[str, Any], model: Any, model_admin: Any, field_path: str):
        self.lookup_kwarg = f"{field_path}__isnull"
        self.lookup_val = get_last_value_from_parameters(params, self.lookup_kwarg)
        super().__init__(field, request, params, model, model_admin, field_path)

    def has_output(self) -> bool:
        # A column that cannot be NULL always holds a value: nothing to filter.
        return self.field.null

    def expected_parameters(self) -> list[str]:
        return [self.lookup_kwarg]

    def get_facet_counts(self, pk_attname: str, filtered_qs: Any) -> dict[str, Any]:
        return {
            "stored__c": models.Count(pk_attname, filter=models.Q(**{self.lookup_kwarg: False})),
            "null__c": models.Count(pk_attname, filter=models.Q(**{self.lookup_kwarg: True})),
        }

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        facet_counts = self.get_facet_queryset(changelist) if changelist.add_facets else None
        for lookup, title, count_field in (
            (None, _("All"), None),
            ("0", _("Has a value"), "stored__c"),
            ("1", _("No value"), "null__c"),
        ):
            if facet_counts is not None and count_field is not None:
                title = f"{title} ({facet_counts[count_field]})"
            yield {
                "selected": self.lookup_val == lookup,
                "query_string": changelist.get_query_string({self.lookup_kwarg: lookup}),
                "display": title,
            }


# Ahead of Django's own filters, so that an encrypted field never gets the filter that lists values.
FieldListFilter.register(lambda field: isinstance(field, EncryptedField), EncryptedFieldListFilter, take_priority=True)

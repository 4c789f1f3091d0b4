"""System checks for admin options that would search, filter or sort on an encrypted field.

Each value is encrypted with its own data key and nonce, so the database can neither compare nor sort
encrypted values: a search fails with ``EncryptedLookupError`` (a server error), Django's list filter
puts every decrypted value in a link and then fails the same way, and sorting orders rows by random
ciphertext. These checks refuse such options before the first request does:

- ``kms_fields.E040``: ``search_fields`` names an encrypted field;
- ``kms_fields.E041``: ``list_filter`` names one, with a filter other than ``EncryptedFieldListFilter``;
- ``kms_fields.E042``: ``ordering`` (of a ``ModelAdmin`` or an inline) names one;
- ``kms_fields.E043``: ``sortable_by`` names one;
- ``kms_fields.E044``: ``list_display`` shows one while ``sortable_by`` is unset, which makes every
  column sortable;
- ``kms_fields.E045``: a ``list_display`` column's ``admin_order_field`` (``@admin.display(ordering=…)``)
  names one;
- ``kms_fields.E046``: ``date_hierarchy`` names one;
- ``kms_fields.E047``: ``prepopulated_fields`` fills a field from one, which copies its plaintext, in
  the browser, into a column that may not be encrypted.

Names are resolved like the admin resolves them: ``"-ssn"``, ``"^ssn"``, ``"=ssn"``, ``"@ssn"``,
``"ssn__iexact"``, paths through relations (``"patient__ssn"``, reverse ones included) and ``F()``
expressions. Names that do not resolve are left to Django's own admin checks. What a ``ModelAdmin``
decides per request (``get_search_fields()``, ``get_list_filter()``, ``get_ordering()``...) cannot be
checked; a ``ModelAdmin`` that overrides ``get_sortable_by()`` is trusted to leave encrypted columns out.

Registered with the ``admin`` tag by the app's ``ready()`` when ``django.contrib.admin`` is installed;
like Django's own admin checks, it covers every ``AdminSite`` instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP

from .admin import EncryptedFieldListFilter
from .fields import EncryptedField

__all__ = ["check_admin_options"]

WHY = "Each value is encrypted with its own data key and nonce, so the database cannot compare or sort the values."


def check_admin_options(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    # Django's own admin checks walk the same sites (django.contrib.admin.checks.check_admin_app).
    from django.contrib.admin.sites import all_sites

    errors: list[checks.CheckMessage] = []
    for site in all_sites:
        for model, model_admin in site._registry.items():
            if app_configs is None or model._meta.app_config in app_configs:
                errors.extend(model_admin_errors(model_admin))
    return errors


def model_admin_errors(model_admin: admin.ModelAdmin) -> list[checks.CheckMessage]:
    obj = type(model_admin)
    model = model_admin.model
    return [
        *_search_fields(model_admin, model, obj),
        *_list_filter(model_admin, model, obj),
        *_ordering(model_admin.ordering, model, obj),
        *_list_display_sorting(model_admin, model, obj),
        *_date_hierarchy(model_admin, model, obj),
        *_prepopulated_fields(model_admin, model, obj),
        *(
            error
            for inline in model_admin.inlines or ()
            if isinstance(inline, type) and getattr(inline, "model", None) is not None
            for error in _ordering(inline.ordering, inline.model, inline)
        ),
    ]


# -- resolving names ----------------------------------------------------------------------------------


def encrypted_field_on_path(model: type[models.Model], path: str) -> EncryptedField | None:
    """The encrypted field that ``path`` reaches from ``model`` (``"ssn"``, ``"patient__ssn__iexact"``).

    ``None`` when the path reaches no encrypted field, or does not resolve (Django's own checks
    report that). Whatever follows an encrypted field is a lookup or transform on it.
    """
    opts = model._meta
    for part in path.split(LOOKUP_SEP):
        try:
            field = opts.get_field(opts.pk.name if part == "pk" else part)
        except FieldDoesNotExist:
            return None
        if isinstance(field, EncryptedField):
            return field
        path_infos = getattr(field, "path_infos", None)
        if not path_infos:
            return None  # a plain field; what follows are its lookups and transforms
        opts = path_infos[-1].to_opts
    return None


def _ordering_names(item: Any) -> Iterator[str]:
    """The field paths an ``ordering`` entry or ``admin_order_field`` sorts by: ``"-ssn"``, ``F("ssn").desc()``."""
    if isinstance(item, str):
        if item != "?":
            yield item.removeprefix("-")
    elif isinstance(item, models.F):
        yield item.name
    elif hasattr(item, "get_source_expressions"):
        for expression in item.get_source_expressions():
            yield from _ordering_names(expression)


def _first_encrypted(model: type[models.Model], item: Any) -> EncryptedField | None:
    for name in _ordering_names(item):
        field = encrypted_field_on_path(model, name)
        if field is not None:
            return field
    return None


def _label(field: EncryptedField) -> str:
    return f"{field.model._meta.label}.{field.name}"


def _error(option: str, item: Any, field: EncryptedField, problem: str, hint: str, obj: Any, id: str) -> checks.Error:
    return checks.Error(
        f"The value of '{option}' refers to {item!r}, which is encrypted ({_label(field)}): {problem}",
        hint=hint,
        obj=obj,
        id=id,
    )


# -- the options ---------------------------------------------------------------------------------------


def _search_fields(model_admin: admin.ModelAdmin, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    for index, item in enumerate(model_admin.search_fields or ()):
        field = encrypted_field_on_path(model, str(item).lstrip("^=@"))
        if field is not None and field.searchable:
            problem = _searchable_search_problem(str(item), field)
            if problem:
                yield _error(f"search_fields[{index}]", item, field, problem[0], problem[1], obj, "kms_fields.E040")
        elif field is not None:
            yield _error(
                f"search_fields[{index}]",
                item,
                field,
                "the database cannot search its values, and every search would fail with EncryptedLookupError.",
                f"{WHY} Remove it from search_fields, or make the field searchable=True and search it exactly "
                f"('{field.name}__exact', or '={field.name}' with a case-folding search_normalizer).",
                obj,
                "kms_fields.E040",
            )


def _searchable_search_problem(item: str, field: EncryptedField) -> tuple[str, str] | None:
    """Why a search_fields entry cannot use ``field``'s blind index, or None when it can."""
    from .searchable import folds_case

    path, _, lookup = item.lstrip("^=@").rpartition(LOOKUP_SEP)
    if not path or lookup not in ("exact", "iexact"):
        path, lookup = item.lstrip("^=@"), ""
    if item.startswith("=") or lookup == "iexact":
        if folds_case(field):
            return None
        return (
            "'=' searches with iexact, and this field's blind index is case-sensitive.",
            f"Search it with '{path}__exact', or give the field a case-folding search_normalizer "
            "(django_kms_fields.normalizers.casefold or .email).",
        )
    if lookup == "exact" and not item.startswith(("^", "@")):
        return None
    return (
        "its blind index answers exact searches only; this search would fail with EncryptedLookupError.",
        f"Search it exactly: '{path}__exact', or '={path}' with a case-folding search_normalizer.",
    )


def _list_filter(model_admin: admin.ModelAdmin, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    for index, item in enumerate(model_admin.list_filter or ()):
        if isinstance(item, (list, tuple)) and len(item) == 2:
            path, filter_class = item
            if isinstance(filter_class, type) and issubclass(filter_class, EncryptedFieldListFilter):
                continue
        elif isinstance(item, str):
            path = item
        else:
            continue  # a SimpleListFilter: its own queries, which the lookups refuse if they compare values
        field = encrypted_field_on_path(model, str(path))
        if field is None:
            continue
        hint = (
            f"{WHY} Django's list filters also put each value in a link (?{path}=...), so plaintext would reach "
            "URLs, access logs, browser history and Referer headers. Remove it from list_filter"
        )
        if field.null:
            hint += (
                f"; to filter on whether a value is stored, use ({path!r}, "
                "django_kms_fields.admin.EncryptedFieldListFilter)."
            )
        else:
            hint += "."
        yield _error(
            f"list_filter[{index}]",
            item,
            field,
            "a list filter would show its decrypted values as links and compare them in the database.",
            hint,
            obj,
            "kms_fields.E041",
        )


def _ordering(ordering: Any, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    for index, item in enumerate(ordering or ()):
        field = _first_encrypted(model, item)
        if field is not None:
            yield _error(
                f"ordering[{index}]",
                item,
                field,
                "rows would be sorted by ciphertext.",
                f"{WHY} Ciphertext order is random. Order by another field.",
                obj,
                "kms_fields.E042",
            )


def _column_field(model_admin: admin.ModelAdmin, model: type[models.Model], name: str) -> EncryptedField | None:
    """The encrypted model field a ``list_display`` name shows and sorts by, as ``ChangeList`` resolves it."""
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        if hasattr(model_admin, name) or hasattr(model, name) or LOOKUP_SEP not in name:
            return None  # a method or attribute: sortable only through its admin_order_field
        return encrypted_field_on_path(model, name)
    return field if isinstance(field, EncryptedField) else None


def _admin_order_field(model_admin: admin.ModelAdmin, model: type[models.Model], item: Any) -> Any:
    if callable(item):
        attr = item
    elif isinstance(item, str) and hasattr(model_admin, item):
        attr = getattr(model_admin, item)
    elif isinstance(item, str) and hasattr(model, item):
        attr = getattr(model, item)
    else:
        return None
    if isinstance(attr, property):
        attr = attr.fget
    return getattr(attr, "admin_order_field", None)


def _list_display_sorting(model_admin: admin.ModelAdmin, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    sortable_by = model_admin.sortable_by
    sortable_by_decided_per_request = type(model_admin).get_sortable_by is not admin.ModelAdmin.get_sortable_by
    for index, item in enumerate(sortable_by or ()):
        field = _column_field(model_admin, model, item) if isinstance(item, str) else None
        if field is not None:
            yield _error(
                f"sortable_by[{index}]",
                item,
                field,
                "its column would be sorted by ciphertext.",
                f"{WHY} Ciphertext order is random. Leave encrypted columns out of sortable_by.",
                obj,
                "kms_fields.E043",
            )
    for index, item in enumerate(model_admin.list_display or ()):
        field = _column_field(model_admin, model, item) if isinstance(item, str) else None
        if field is not None:
            if sortable_by is None and not sortable_by_decided_per_request:
                yield _error(
                    f"list_display[{index}]",
                    item,
                    field,
                    "sortable_by is not set, so every column is sortable, and this one would be sorted by "
                    "ciphertext.",
                    f"{WHY} Ciphertext order is random. Set sortable_by to the columns that may be sorted, "
                    f"leaving {item!r} out (sortable_by = () makes no column sortable).",
                    obj,
                    "kms_fields.E044",
                )
            continue
        order_field = _admin_order_field(model_admin, model, item)
        field = _first_encrypted(model, order_field) if order_field is not None else None
        if field is not None:
            yield checks.Error(
                f"The value of 'list_display[{index}]' refers to {getattr(item, '__name__', item)!r}, whose "
                f"admin_order_field {order_field!r} is encrypted ({_label(field)}): its column would be sorted by "
                "ciphertext.",
                hint=f"{WHY} Ciphertext order is random. Remove the ordering of this column "
                "(@admin.display(ordering=...)), or point it at another field.",
                obj=obj,
                id="kms_fields.E045",
            )


def _date_hierarchy(model_admin: admin.ModelAdmin, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    path = model_admin.date_hierarchy
    field = encrypted_field_on_path(model, path) if isinstance(path, str) else None
    if field is not None:
        yield _error(
            "date_hierarchy",
            path,
            field,
            "the database cannot group or compare its dates.",
            f"{WHY} Use a date field that is not encrypted for date_hierarchy.",
            obj,
            "kms_fields.E046",
        )


def _prepopulated_fields(model_admin: admin.ModelAdmin, model: type[models.Model], obj: Any) -> Iterator[checks.Error]:
    prepopulated = model_admin.prepopulated_fields
    for target, sources in (prepopulated.items() if isinstance(prepopulated, dict) else ()):
        for item in sources if isinstance(sources, (list, tuple)) else ():
            field = encrypted_field_on_path(model, item) if isinstance(item, str) else None
            if field is not None:
                yield _error(
                    f"prepopulated_fields[{target!r}]",
                    item,
                    field,
                    f"the admin's JavaScript would copy its plaintext into {target!r}.",
                    "Prepopulate from a field that is not encrypted, or encrypt the target too and fill it yourself.",
                    obj,
                    "kms_fields.E047",
                )

"""Lookups on encrypted columns: refused, because the database would compare ciphertext.

Each value is encrypted with its own data key and nonce, so equal values never have equal
ciphertexts. Only ``isnull`` (and ``field=None``, which Django turns into ``isnull``) is answered,
except on a searchable field, whose equality lookups ``searchable`` answers from its blind index.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.lookups import Lookup

from .exceptions import EncryptedLookupError

__all__ = ["EQUALITY_LOOKUPS", "lookup_refusal", "lookup_for"]


EQUALITY_LOOKUPS = ("exact", "iexact", "in")


def lookup_refusal(field: models.Field, lookup_name: str) -> EncryptedLookupError:
    """The error for a lookup (or transform) named ``lookup_name`` on the encrypted ``field``."""
    instead = "Filter on another column, or compare the decrypted values in Python."
    if getattr(field, "searchable", False):
        answered = (
            "only 'exact', 'in', 'isnull' and, with a case-folding search_normalizer, 'iexact' are: its blind "
            "index answers equality and nothing else"
        )
    else:
        answered = "only 'isnull' is"
        if lookup_name in EQUALITY_LOOKUPS:
            instead = (
                "Declare the field with searchable=True to find rows by an equal value through a blind index, "
                "or filter on another column."
            )
    return EncryptedLookupError(
        f"{field.model._meta.label}.{field.name} is encrypted, so the database cannot compare its contents: "
        f"the '{lookup_name}' lookup is not supported ({answered}). Each value is encrypted with its own data "
        f"key and nonce, so equal values never have equal ciphertexts. {instead}"
    )


class _NoneOnlyLookup(Lookup):
    """``field=None`` must keep working: Django turns it into ``isnull`` after building the lookup."""

    can_use_none_as_rhs = False

    def __init__(self, lhs: Any, rhs: Any) -> None:
        if rhs is not None:
            raise lookup_refusal(lhs.output_field, self.lookup_name)
        super().__init__(lhs, rhs)


class _NoneOnlyExact(_NoneOnlyLookup):
    lookup_name = "exact"


class _NoneOnlyIExact(_NoneOnlyLookup):
    lookup_name = "iexact"


_NONE_ONLY_LOOKUPS: dict[str, type[Lookup]] = {"exact": _NoneOnlyExact, "iexact": _NoneOnlyIExact}


def lookup_for(field: models.Field, lookup_name: str, isnull: type[Lookup] | None) -> type[Lookup] | None:
    """The lookup class ``field.get_lookup(lookup_name)`` returns; raises for any that compares contents.

    ``isnull`` is the field's own (Django's) ``isnull`` lookup, passed in by the field.
    """
    if lookup_name == "isnull":
        return isnull
    if lookup_name in _NONE_ONLY_LOOKUPS:
        return _NONE_ONLY_LOOKUPS[lookup_name]
    raise lookup_refusal(field, lookup_name)

"""Search normalisers for ``search_normalizer=``: what a searchable field indexes, and looks up, in
place of the value as written (which is what is stored and read back).

A normaliser is an importable function from a value to a value of the same type. One marked
``case_insensitive = True`` folds case, which lets ``iexact`` lookups and the admin's ``"=field"``
search use the blind index. Changing a field's normaliser changes every index: run
``kms_fields_reindex`` after the change (until then lookups refuse, see the README).
"""

from __future__ import annotations

__all__ = ["casefold", "email", "strip"]


def strip(value: str) -> str:
    """Leading and trailing whitespace removed."""
    return value.strip()


def casefold(value: str) -> str:
    """Case folded (``str.casefold``, stronger than ``lower()``: "Straße" and "STRASSE" are equal) and stripped."""
    return value.strip().casefold()


casefold.case_insensitive = True  # type: ignore[attr-defined]


def email(value: str) -> str:
    """An email address as people mean it: stripped and case folded, domain and local part alike (the
    rule of ``casefold`` today; a name of its own, so that it can grow without renaming every tag)."""
    return casefold(value)


email.case_insensitive = True  # type: ignore[attr-defined]

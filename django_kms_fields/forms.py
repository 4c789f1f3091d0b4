"""Form fields for the encrypted model fields."""

from __future__ import annotations

from typing import Any

from django import forms

__all__ = ["BinaryUploadField"]


class BinaryUploadField(forms.FileField):
    """A file upload whose cleaned value is the file's bytes (or None when cleared or left empty)."""

    def to_python(self, data: Any) -> bytes | None:
        uploaded = super().to_python(data)
        if uploaded is None:
            return None
        uploaded.seek(0)
        return uploaded.read()

    def clean(self, data: Any, initial: Any = None) -> bytes | None:
        cleaned = super().clean(data, initial)
        # FileField cleans a ticked "clear" box to False; for a bytes column that means no value.
        return None if cleaned is False else cleaned

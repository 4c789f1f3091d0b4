"""Form fields for the encrypted model fields."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import ngettext

__all__ = ["BinaryUploadField", "StoredBinaryInput"]


class StoredBinaryInput(forms.ClearableFileInput):
    """A file input that says a value is stored, and how large it is, and can clear it.

    Like Django's ``ClearableFileInput`` for a ``FileField``, but a stored value has no URL: the widget
    shows "Currently: a stored value of N bytes" (never the bytes, never a link) and, when the column
    may be NULL and the field is not required, a "Clear" checkbox. Submitting no file keeps the value.
    The markup is the admin's file widget's (``file-upload``, ``clearable-file-input``), so the admin
    styles it; outside the admin those classes are inert.
    """

    template_name = "django_kms_fields/widgets/stored_binary_input.html"
    # Set by BinaryUploadField: whether clearing may store NULL.
    allows_null = True

    def is_initial(self, value: Any) -> bool:
        # b"" is a stored value too; only None (NULL) is no value.
        return isinstance(value, (bytes, bytearray, memoryview))

    def format_value(self, value: Any) -> None:
        return None  # a file input never renders a value, and these bytes are plaintext

    def use_required_attribute(self, initial: Any) -> bool:
        # FileInput tests the initial value's truth: a stored b"" would make the browser demand a file.
        return not self.is_hidden and not self.is_initial(initial)

    @property
    def can_clear(self) -> bool:
        return self.allows_null and not self.is_required

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        stored = None
        if self.is_initial(value):
            size = len(value)
            stored = ngettext("a stored value of %(size)d byte", "a stored value of %(size)d bytes", size) % {
                "size": size
            }
        context["widget"].update({"stored": stored, "can_clear": self.can_clear})
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if self.can_clear:
            return super().value_from_datadict(data, files, name)
        # A clear box posted for a column that cannot be NULL (or a required field) is ignored.
        return forms.FileInput.value_from_datadict(self, data, files, name)


class BinaryUploadField(forms.FileField):
    """A file upload whose cleaned value is the file's bytes.

    Submitting no file keeps the initial (stored) value, ``b""`` included. Ticking "Clear" cleans to
    ``None``; it is offered only when ``empty_value`` is ``None``, i.e. when the model field is
    ``null=True``. With no file and no stored value, the field cleans to ``empty_value``: ``None`` for a
    nullable column, ``b""`` for one that is not.
    """

    widget = StoredBinaryInput

    def __init__(self, *, empty_value: bytes | None = None, **kwargs: Any) -> None:
        self.empty_value = empty_value
        super().__init__(**kwargs)
        self.widget.allows_null = empty_value is None

    def to_python(self, data: Any) -> bytes | None:
        uploaded = super().to_python(data)
        if uploaded is None:
            return None
        uploaded.seek(0)
        return uploaded.read()

    def clean(self, data: Any, initial: Any = None) -> bytes | None:
        if initial is not None and (self.disabled or data in self.empty_values):
            # No upload (a disabled field gets its initial value as data): the stored value stays.
            # FileField would take a stored b"" for no value, and a disabled field's bytes for a bad file.
            return bytes(initial)
        cleaned = super().clean(data, initial)
        if cleaned is False:  # "Clear" ticked
            return None
        return self.empty_value if cleaned is None else cleaned

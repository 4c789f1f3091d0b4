"""Signals sent by django-kms-fields.

``kms_call`` is sent after every KMS operation this app makes (GenerateDataKey, Encrypt, Decrypt), with
``sender`` set to the keyring alias and these keyword arguments:

- ``operation``: the KMS operation name.
- ``key_arn`` and ``region``: the key used and the region of the client that called KMS.
- ``attempts``: HTTP attempts made, retries included.
- ``duration``: seconds, retries and backoff included.
- ``outcome``: ``"ok"`` or the name of the error raised (``"KMSUnavailableError"``, ...).

It carries no plaintext, data key or ciphertext, so a receiver may log or export all of it.
"""

from django.dispatch import Signal

__all__ = ["kms_call"]

kms_call = Signal()

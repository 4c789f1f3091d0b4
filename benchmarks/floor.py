"""The "no layers" contender: what issue 14's rules alone cost, measured in the flow of a scenario.

Installed on ``CachedRow.value`` for one contender's rounds, it replaces the field's save hook and its
descriptor's read with the bare steps the rules require, one function each, nothing between them:
the data key from the same caching materials manager (so the same cache entries, counts and KMS
calls), a message id, HKDF-SHA512, AES-GCM for the header tag and the one frame, and the header's
bytes; on reads, the header, the data key through the field-bound manager (the binding check issue
14 requires), the key commitment, the tags. No error translation, no event-loop refusal, no
``sensitive_variables``: not the product, never installed outside the benchmark. It handles the
benchmark's value only (one frame, no failure path). Lazy decryption stays (the converter, the
pending value, the descriptor): an earlier issue asked for it.

Its time is a floor for any implementation that keeps the rules, measured where the steps really run
(a step timed on its own, repeated, runs warm, and ``benchmarks.value_costs`` shows it cheaper than in
a load). When it is above what a target allows, no trimming of the app's other layers reaches the
target.
"""

from __future__ import annotations

import hmac
import os
from contextlib import contextmanager

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@contextmanager
def installed(model):
    """Within the block, ``model.value`` saves and reads through the bare steps."""
    from django_kms_fields import conf, crypto, fastpath, lazy

    field = model._meta.get_field("value")
    pending_type = lazy.PendingDecryption
    header_iv = bytes(12)

    def field_crypto():
        return crypto._field_crypto(conf.get_keyring(field.keyring), field.field_binding())

    # What the field needs per value, looked up once (the app looks it up per value, to follow settings).
    current = [field_crypto()]

    def save_hook(value, connection):
        plaintext = value.encode()
        record = current[0]
        materials = record.manager.encryption_materials_for_length(
            record.encryption_context, len(plaintext), fastpath.SUITE, fastpath.FRAME_LENGTH, fastpath.COMMITMENT_POLICY
        )
        message_id = os.urandom(32)
        derived, commitment = fastpath._keys(materials.data_encryption_key.data_key, message_id)
        header = b"".join((fastpath._PREFIX, message_id, fastpath._context_and_data_keys(materials),
                           fastpath._CONTENT_AND_FRAME, commitment))
        cipher = AESGCM(derived)
        length = len(plaintext).to_bytes(4, "big")
        return b"".join((
            header, cipher.encrypt(header_iv, b"", header), fastpath._ONLY_FRAME_START, length,
            cipher.encrypt(fastpath._ONLY_FRAME_IV, plaintext, message_id + fastpath._ONLY_FRAME_AAD_MIDDLE + length),
        ))

    def read(descriptor, instance, cls=None):
        if instance is None:
            return descriptor
        value = instance.__dict__[descriptor.attname]
        if type(value) is pending_type:
            record = current[0]
            message = value.message
            header = fastpath._parsed_header(message, record.max_encrypted_data_keys)
            materials = record.bound_manager.decrypt_materials(request=header.request)
            derived, commitment = fastpath._keys(materials.data_key.data_key, header.message_id)
            if not hmac.compare_digest(commitment, header.commitment):
                raise ValueError("key commitment mismatch")
            cipher = AESGCM(derived)
            end = header.end
            cipher.decrypt(header_iv, message[end : end + 16], message[:end])
            value = fastpath._read_frames(message, end + 16, header.message_id, cipher).decode()
            instance.__dict__[descriptor.attname] = value
        return value

    # Both ways checked against the app's own path before anything is timed.
    check = "0123456789abcdef0123456789abcdef"
    if field.decrypt_message(save_hook(check, None)) != check:
        raise AssertionError("the no-layers write is not a message the app reads")
    descriptor = model.__dict__["value"]
    app_descriptor_type = type(descriptor)
    if "get_db_prep_save" in field.__dict__:
        raise AssertionError("the field already has a save hook of its own")
    try:
        # This model's descriptor only: its class swapped for one whose __get__ is the bare read.
        descriptor.__class__ = type("NoLayersAttribute", (app_descriptor_type,), {"__get__": read})
        field.get_db_prep_save = save_hook  # an instance attribute: this field only, until the block ends
        probe = model()
        app_message = crypto.encrypt(check.encode(), conf.get_keyring(field.keyring), field.field_binding())
        probe.__dict__["value"] = pending_type(field, app_message)
        if probe.value != check:
            raise AssertionError("the no-layers read does not read the app's messages")
        conf.reset()  # the checks' data keys are not the contender's: it starts from empty caches too
        current[0] = field_crypto()
        yield
    finally:
        descriptor.__class__ = app_descriptor_type
        field.__dict__.pop("get_db_prep_save", None)

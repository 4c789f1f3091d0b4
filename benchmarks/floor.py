"""The "no layers" contender: what issue 14's rules alone cost, measured in the flow of a scenario.

Installed on ``CachedRow.value`` for one contender's rounds, it replaces the field's save hook and its
descriptor's read with a direct call of ``fastpath.write`` and ``fastpath.read``: the steps the rules
require and nothing above them. The same caching materials manager (so the same cache entries,
counts and KMS calls), a message id, HKDF-SHA512, AES-GCM, the header; on reads, the data key
through the field-bound manager (the binding check issue 14 requires) and every check the fast path
makes. No error translation, no event-loop refusal, no ``sensitive_variables``: not the product,
never installed outside the benchmark, and it handles the benchmark's values only (no failure
path). Lazy decryption stays (the converter, the pending value, the descriptor): an earlier issue
asked for it.

Its time is a floor for any implementation that keeps the rules, measured where the steps really run
(a step timed on its own, repeated, runs warm, and ``benchmarks.value_costs`` shows it cheaper than in
a load). When it is above what a target allows, no trimming of the app's other layers reaches the
target.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def installed(model):
    """Within the block, ``model.value`` saves and reads through the bare steps."""
    from django_kms_fields import conf, crypto, fastpath, lazy

    field = model._meta.get_field("value")
    pending_type = lazy.PendingDecryption

    def field_crypto():
        return crypto._field_crypto(conf.get_keyring(field.keyring), field.field_binding())

    # What the field needs per value, looked up once (the app looks it up per value, to follow settings).
    current = [field_crypto()]

    def save_hook(value, connection):
        record = current[0]
        return fastpath.write(value.encode(), record.manager, record.encryption_context, record.max_encrypted_data_keys)

    def read(descriptor, instance, cls=None):
        if instance is None:
            return descriptor
        value = instance.__dict__[descriptor.attname]
        if type(value) is pending_type:
            record = current[0]
            plaintext = fastpath.read(value.message, record.bound_manager, record.max_encrypted_data_keys)
            if not isinstance(plaintext, bytes):
                raise AssertionError("the fast path declined a message the benchmark wrote")
            value = plaintext.decode()
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

"""The two ways issue 14 allowed for the fast path's read, timed side by side on one 32-byte value.

    python -m benchmarks.fastpath_variants

- our own parser (``django_kms_fields.fastpath.read``, what the app uses);
- the SDK's lower-level functions with fewer layers in between (``deserialize_header``,
  ``derive_data_encryption_key``, ``calculate_commitment_key``, ``validate_header``,
  ``deserialize_frame``, the SDK's ``decrypt``), making the same checks;
- and, for reference, the SDK's stream (the app with the fast path off), and the app's whole read.
Every variant asks the same field-bound caching materials manager for the data key.
"""

from __future__ import annotations

import hmac
import io
import os
import timeit

from benchmarks.__main__ import VALUE, start_kms


def main() -> None:
    local_kms, front, key_arn = start_kms()
    os.environ.update(DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_DATABASE=":memory:",
                      BENCH_KMS_ENDPOINT=front.endpoint, BENCH_KEY_ARN=key_arn)
    import django

    django.setup()
    from aws_encryption_sdk.internal.crypto.data_keys import calculate_commitment_key, derive_data_encryption_key
    from aws_encryption_sdk.internal.crypto.encryption import decrypt as sdk_decrypt
    from aws_encryption_sdk.internal.formatting.deserialize import (
        deserialize_frame,
        deserialize_header,
        deserialize_header_auth,
        validate_header,
    )
    from aws_encryption_sdk.internal.formatting.encryption_context import assemble_content_aad
    from aws_encryption_sdk.internal.utils import get_aad_content_string
    from aws_encryption_sdk.materials_managers import DecryptionMaterialsRequest

    from benchmarks.benchapp.models import CachedRow
    from django_kms_fields import conf, crypto, fastpath

    keyring = conf.get_keyring("default")
    binding = CachedRow._meta.get_field("value").field_binding()
    message = crypto.encrypt(VALUE.encode(), keyring, binding)
    _sdk, manager = crypto._sdk_objects(keyring)
    bound = crypto._field_crypto(keyring, binding).bound_manager
    max_keys = crypto._max_encrypted_data_keys(keyring)

    def via_sdk_functions() -> bytes:
        stream = io.BytesIO(message)
        header, raw = deserialize_header(stream, max_keys)
        request = DecryptionMaterialsRequest(
            encrypted_data_keys=header.encrypted_data_keys, algorithm=header.algorithm,
            encryption_context=header.encryption_context, commitment_policy=fastpath.COMMITMENT_POLICY,
        )
        materials = bound.decrypt_materials(request)
        auth = deserialize_header_auth(version=header.version, stream=stream, algorithm=header.algorithm)
        key = derive_data_encryption_key(materials.data_key.data_key, header.algorithm, header.message_id)
        commitment = calculate_commitment_key(materials.data_key.data_key, header.algorithm, header.message_id)
        if not hmac.compare_digest(commitment, header.commitment_key):
            raise ValueError("commitment")
        validate_header(header=header, header_auth=auth, raw_header=raw, data_key=key)
        chunks, sequence_number = [], 0
        while True:
            frame, final = deserialize_frame(stream, header)
            sequence_number += 1
            if frame.sequence_number != sequence_number:
                raise ValueError("order")
            aad = assemble_content_aad(header.message_id, get_aad_content_string(header.content_type, final),
                                       frame.sequence_number, len(frame.ciphertext))
            chunks.append(sdk_decrypt(algorithm=header.algorithm, key=key, encrypted_data=frame, associated_data=aad))
            if final:
                break
        if stream.read(1):
            raise ValueError("trailing")
        return b"".join(chunks)

    def stream_read() -> bytes:
        fastpath.ENABLED = False
        try:
            return crypto.decrypt(message, keyring, binding)
        finally:
            fastpath.ENABLED = True

    variants = {
        "own parser (fastpath.read)": lambda: fastpath.read(message, bound, max_keys),
        "SDK lower-level functions": via_sdk_functions,
        "SDK stream (crypto.decrypt, fast path off)": stream_read,
        "crypto.decrypt, fast path on": lambda: crypto.decrypt(message, keyring, binding),
    }
    for run in variants.values():
        assert run() == VALUE.encode()
    print("| read of one 32-byte value | best of 5 rounds of 3000 |\n| --- | --- |")
    for name, run in variants.items():
        print(f"| {name} | {min(timeit.repeat(run, number=3000, repeat=5)) / 3000 * 1e6:.1f} µs |")
    front.stop()
    local_kms.stop()


if __name__ == "__main__":
    main()

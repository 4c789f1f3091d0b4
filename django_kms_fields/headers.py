"""Reading a stored message's header without decrypting it and without a KMS call.

For operations tools (rotation, legacy plaintext): which keys wrap a value, and whether a stored value
is a message at all. The SDK's public API has no header-only reader, so this is the one module that
imports its internal ``deserialize_header`` (see docs/design.md, "What we rely on").
"""

from __future__ import annotations

import io
import struct

from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.identifiers import Algorithm, SerializationVersion
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header

from .conf import ALGORITHMS, KeyringConfig
from .exceptions import DecryptionError
from .keys import KMS_PROVIDER_ID

__all__ = ["MALFORMED_HEADER_ERRORS", "MESSAGE_PREFIXES", "looks_like_message", "is_current_message", "wrapping_key_arns"]

# What the SDK's header parser raises for bytes that are not a message header: its own errors, and
# from deeper in it struct, value, index and key errors. The hostile-value fuzz proves the list.
MALFORMED_HEADER_ERRORS: tuple[type[BaseException], ...] = (
    AWSEncryptionSDKClientError,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    OverflowError,
)
# For reading headers outside a decryption (rotation): any message this app could have written.
_MAX_HEADER_DATA_KEYS = 64


def _message_prefix(algorithm_name: str) -> bytes:
    # Message format version 2 begins with its version byte, then the suite's two-byte id.
    return bytes([SerializationVersion.V2.value]) + Algorithm[algorithm_name].algorithm_id.to_bytes(2, "big")


# What every message this app can write begins with: one prefix per suite it may be configured with.
MESSAGE_PREFIXES = frozenset(_message_prefix(name) for name in ALGORITHMS)
_PREFIX_LENGTH = 3


def looks_like_message(stored: bytes) -> bool:
    """Whether ``stored`` starts like a message this app writes (left-over plaintext does not)."""
    return bytes(stored[:_PREFIX_LENGTH]) in MESSAGE_PREFIXES


def is_current_message(stored: bytes, keyring: KeyringConfig) -> bool:
    """Whether ``stored`` is a message wrapped by exactly the keyring's ``KEY_ARNS`` (header only, no KMS)."""
    if not looks_like_message(stored):
        return False
    try:
        return wrapping_key_arns(stored) == frozenset(keyring.key_arns)
    except DecryptionError:
        return False


def wrapping_key_arns(message: bytes) -> frozenset[str]:
    """The ARNs of the KMS keys that wrap the message's data key, read from its header alone.

    Raises ``DecryptionError`` when the header cannot be read. No KMS call is made.
    """
    try:
        header, _raw = deserialize_header(io.BytesIO(bytes(message)), _MAX_HEADER_DATA_KEYS)
    except MALFORMED_HEADER_ERRORS as err:
        raise DecryptionError(
            f"the stored value has no readable message header ({type(err).__name__}).", code=type(err).__name__
        ) from None
    return frozenset(
        edk.key_provider.key_info.decode("utf-8", errors="replace")
        for edk in header.encrypted_data_keys
        if edk.key_provider.provider_id == KMS_PROVIDER_ID
    )

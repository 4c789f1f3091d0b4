"""What more than one test module needs: keyring settings, raw column access, the message layout.

Test modules import from here and never from each other, so running or editing one module never
depends on another module's tests.
"""

import struct
from dataclasses import dataclass

from django.db import connection

# The region of every key the local KMS makes for the suite.
REGION = "eu-west-1"


def keyring(key_arns: list[str], endpoint: str, **options: object) -> dict[str, object]:
    """A keyring setting with test-sized bounds: a broken test fails in seconds, not minutes."""
    return {
        "KEY_ARNS": key_arns,
        "ENDPOINT_URL": endpoint,
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": 5,
        "MAX_ATTEMPTS": 2,
        **options,
    }


def stored(model, pk, column):
    """The raw bytes in the column, read past the ORM."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name(column)} FROM {table} WHERE id = %s", [pk])
        value = cursor.fetchone()[0]
    return None if value is None else bytes(value)


def write_raw(model, pk, column, value):
    """Puts ``value`` in the column past the ORM, as a tampering user or an old plaintext column would."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {connection.ops.quote_name(column)} = %s WHERE id = %s",
            [None if value is None else connection.Database.Binary(value), pk],
        )


@dataclass(frozen=True)
class Regions:
    """Byte ranges of one AWS Encryption SDK v2 message, framed, non-signing."""

    version_and_suite: range
    message_id: range
    context: range
    data_keys: range
    content_type_and_frame: range
    commitment: range
    header_tag: range
    frame_header: range
    frame_iv: range
    body: range
    body_tag: range


def regions_of(message: bytes) -> Regions:
    position = 1 + 2 + 32
    (context_length,) = struct.unpack_from(">H", message, position)
    context = range(position, position + 2 + context_length)
    position = context.stop
    (key_count,) = struct.unpack_from(">H", message, position)
    start = position
    position += 2
    for _ in range(key_count):
        for _field in range(3):  # provider id, provider info, wrapped key
            (length,) = struct.unpack_from(">H", message, position)
            position += 2 + length
    data_keys = range(start, position)
    content_type_and_frame = range(position, position + 1 + 4)
    commitment = range(content_type_and_frame.stop, content_type_and_frame.stop + 32)
    header_tag = range(commitment.stop, commitment.stop + 16)
    frame_header = range(header_tag.stop, header_tag.stop + 8)  # end marker + sequence number
    frame_iv = range(frame_header.stop, frame_header.stop + 12)
    (content_length,) = struct.unpack_from(">I", message, frame_iv.stop)
    body = range(frame_iv.stop, frame_iv.stop + 4 + content_length)
    body_tag = range(body.stop, body.stop + 16)
    assert body_tag.stop == len(message), "the test's idea of the format is off"
    return Regions(range(0, 3), range(3, 35), context, data_keys, content_type_and_frame, commitment, header_tag,
                   frame_header, frame_iv, body, body_tag)

"""Decoders for the small binary encodings inside containerd's BoltDB values."""

from __future__ import annotations

import datetime
import struct
from typing import Final

_GO_EPOCH_OFFSET: Final = 62135596800
"""Seconds from 0001-01-01 (Go's zero time) to 1970-01-01."""


class CodecError(ValueError):
    """Raised when a stored value does not have the encoding its field promises."""


def uvarint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode an unsigned varint (Go's ``binary.Uvarint``); return (value, next offset)."""
    value = shift = 0
    for index in range(offset, min(len(data), offset + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    raise CodecError(f"truncated or overlong varint in {data[offset:offset + 10].hex()}")


def varint(data: bytes) -> int:
    """Decode a signed zigzag varint (Go's ``binary.Varint``)."""
    raw, _ = uvarint(data)
    return (raw >> 1) ^ -(raw & 1)


def go_time(data: bytes) -> datetime.datetime:
    """Decode Go's ``time.MarshalBinary`` (versions 1 and 2) as an aware datetime."""
    if len(data) not in (15, 16) or data[0] not in (1, 2):
        raise CodecError(f"not a Go binary time: {data.hex()}")
    seconds, nanos = struct.unpack(">qi", data[1:13])
    unix = seconds - _GO_EPOCH_OFFSET + nanos / 1e9
    return datetime.datetime.fromtimestamp(unix, tz=datetime.timezone.utc)


def protobuf_any(data: bytes) -> tuple[str, bytes]:
    """Decode a protobuf ``Any``: return (type_url, value)."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        key, offset = uvarint(data, offset)
        if key & 7 != 2:
            raise CodecError(f"protobuf Any field {key >> 3} has wire type {key & 7}, not 2")
        length, offset = uvarint(data, offset)
        if offset + length > len(data):
            raise CodecError(f"protobuf Any field {key >> 3} runs past the value's end")
        fields[key >> 3] = data[offset : offset + length]
        offset += length
    return fields.get(1, b"").decode("utf-8", "replace"), fields.get(2, b"")


def text(data: bytes | None) -> str | None:
    """Decode a stored string; bytes that are not UTF-8 survive as surrogates."""
    if data is None:
        return None
    return data.decode("utf-8", "surrogateescape")

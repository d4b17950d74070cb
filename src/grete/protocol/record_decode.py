"""Record batch v2: a defensive decoder (:func:`decode_batches`) for untrusted
input, and the :class:`Record` and :class:`RecordBatch` it returns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from grete.errors import CorruptRecordError, ProtocolError
from grete.protocol.compression import DEFAULT_MAX_DECOMPRESSED_SIZE, CompressionType, decompress
from grete.protocol.crc32c import crc32c
from grete.protocol.record_format import (
    _ATTR_COMPRESSION_MASK,
    _ATTR_CONTROL,
    _ATTR_DELETE_HORIZON,
    _ATTR_LOG_APPEND_TIME,
    _ATTR_TRANSACTIONAL,
    _CRC_START,
    _MAGIC,
    _MIN_BATCH_LENGTH,
    _MIN_RECORD,
    _TAIL,
    BATCH_OVERHEAD,
)

__all__ = ["Record", "RecordBatch", "decode_batches"]


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class RecordBatch:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[Record] = field(default_factory=list)

    @property
    def compression(self) -> CompressionType:
        return CompressionType(self.attributes & _ATTR_COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> int:
        """0 for CreateTime, 1 for LogAppendTime."""
        return 1 if self.attributes & _ATTR_LOG_APPEND_TIME else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _ATTR_CONTROL)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & _ATTR_DELETE_HORIZON)

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Zigzag varlong at ``pos``; ProtocolError when truncated or over 10 bytes."""
    shift = 0
    result = 0
    limit = min(end, pos + 10)
    while pos < limit:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    if pos >= end:
        raise ProtocolError("truncated varint in record")
    raise ProtocolError("varint longer than 10 bytes in record")


def decode_batches(
    data: bytes | bytearray | memoryview,
    *,
    allow_partial_tail: bool = False,
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> list[RecordBatch]:
    """Decode the record batches of ``data`` (a produce or fetch records field).

    The input is untrusted: anything malformed raises :class:`ProtocolError` (a bad
    CRC raises its subclass :class:`CorruptRecordError`) in time linear in its size.
    Fetch responses may cut the last batch short; with ``allow_partial_tail`` such
    an incomplete trailing batch is silently dropped, otherwise it is an error.
    Legacy message sets (magic 0 and 1) are not supported.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    view = memoryview(buf)
    end = len(buf)
    pos = 0
    batches: list[RecordBatch] = []
    while pos < end:
        if end - pos < 17:
            if allow_partial_tail:
                break
            raise ProtocolError(f"truncated record batch header at byte {pos}")
        base_offset, batch_length, leader_epoch, magic = struct.unpack_from(">qiib", buf, pos)
        if magic != _MAGIC:
            raise ProtocolError(f"unsupported magic {magic} at byte {pos} (only v2 batches)")
        if batch_length < _MIN_BATCH_LENGTH:
            raise ProtocolError(f"record batch length {batch_length} is too small")
        batch_end = pos + 12 + batch_length
        if batch_end > end:
            if allow_partial_tail:
                break
            raise ProtocolError(
                f"record batch at byte {pos} needs {batch_length + 12} bytes, "
                f"only {end - pos} remain"
            )
        (crc,) = struct.unpack_from(">I", buf, pos + 17)
        actual = crc32c(view[pos + _CRC_START : batch_end])
        if actual != crc:
            raise CorruptRecordError(
                f"record batch at offset {base_offset} has CRC {actual:#010x}, "
                f"header says {crc:#010x}"
            )
        (
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        ) = _TAIL.unpack_from(buf, pos + _CRC_START)
        batch = RecordBatch(
            base_offset,
            batch_length,
            leader_epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
        )
        codec = attributes & _ATTR_COMPRESSION_MASK
        if codec > CompressionType.ZSTD:
            raise ProtocolError(f"unknown compression type {codec} in record batch")
        start = pos + BATCH_OVERHEAD
        if codec:
            rbuf = decompress(CompressionType(codec), view[start:batch_end], max_decompressed_size)
            rstart, rend = 0, len(rbuf)
        else:
            rbuf, rstart, rend = buf, start, batch_end
        if count < 0 or count > (rend - rstart) // _MIN_RECORD:
            raise ProtocolError(f"record count {count} cannot fit in {rend - rstart} bytes")
        fixed_ts = max_timestamp if attributes & _ATTR_LOG_APPEND_TIME else None
        batch.records = _decode_records(
            rbuf, rstart, rend, count, base_offset, base_timestamp, fixed_ts
        )
        batches.append(batch)
        pos = batch_end
    return batches


def _decode_records(
    buf: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    fixed_timestamp: int | None,
) -> list[Record]:
    records: list[Record] = []
    append = records.append
    rv = _read_varint
    for _ in range(count):
        length, pos = rv(buf, pos, end)
        rec_end = pos + length
        if length < 6 or rec_end > end:
            raise ProtocolError(f"record length {length} is impossible here")
        pos += 1  # record attributes: unused by the protocol
        ts_delta, pos = rv(buf, pos, rec_end)
        off_delta, pos = rv(buf, pos, rec_end)
        klen, pos = rv(buf, pos, rec_end)
        key: bytes | None = None
        if klen >= 0:
            if klen > rec_end - pos:
                raise ProtocolError(f"record key length {klen} overruns the record")
            key = buf[pos : pos + klen]
            pos += klen
        elif klen != -1:
            raise ProtocolError(f"negative record key length {klen}")
        vlen, pos = rv(buf, pos, rec_end)
        value: bytes | None = None
        if vlen >= 0:
            if vlen > rec_end - pos:
                raise ProtocolError(f"record value length {vlen} overruns the record")
            value = buf[pos : pos + vlen]
            pos += vlen
        elif vlen != -1:
            raise ProtocolError(f"negative record value length {vlen}")
        hcount, pos = rv(buf, pos, rec_end)
        hdrs: list[tuple[str, bytes | None]] = []
        if hcount:
            # Each header takes at least two bytes (empty key, null value).
            if hcount < 0 or hcount > (rec_end - pos) // 2:
                raise ProtocolError(f"record header count {hcount} is impossible here")
            for _ in range(hcount):
                hklen, pos = rv(buf, pos, rec_end)
                if hklen < 0 or hklen > rec_end - pos:
                    raise ProtocolError(f"record header key length {hklen} is invalid")
                try:
                    hkey = buf[pos : pos + hklen].decode()
                except UnicodeDecodeError:
                    raise ProtocolError("record header key is not UTF-8") from None
                pos += hklen
                hvlen, pos = rv(buf, pos, rec_end)
                hval: bytes | None = None
                if hvlen >= 0:
                    if hvlen > rec_end - pos:
                        raise ProtocolError(f"record header value length {hvlen} overruns")
                    hval = buf[pos : pos + hvlen]
                    pos += hvlen
                elif hvlen != -1:
                    raise ProtocolError(f"negative record header value length {hvlen}")
                hdrs.append((hkey, hval))
        if pos != rec_end:
            raise ProtocolError(f"record length {length} does not match its fields")
        append(
            Record(
                base_offset + off_delta,
                base_timestamp + ts_delta if fixed_timestamp is None else fixed_timestamp,
                key,
                value,
                hdrs,
            )
        )
    if pos != end:
        raise ProtocolError(f"{end - pos} bytes left over after the batch's {count} records")
    return records

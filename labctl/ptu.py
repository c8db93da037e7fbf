"""Read PicoQuant PTU time-tag files (T2 and T3) into labctl's time-tag format.

A PTU file is a tagged header followed by a flat array of 32-bit little-endian
TTTR records. This module parses the header, decodes every PicoQuant record
type with Numba kernels (whole file or block by block, the counter-wrap state
carried from block to block) and returns int64 picosecond timestamps and
uint8 channels, the same representation as :class:`drivers.tdc.TagBatch`.

Public API
----------
``read_header(path)`` -> :class:`PtuHeader`; ``read_ptu(path)`` ->
:class:`PtuData`; ``iter_ptu(path, block_records=...)`` yields
:class:`PtuBlock`; :class:`PtuDecoder` decodes uint32 record arrays from any
source with state carried across calls; ``encode_t2_records`` /
``encode_t3_records`` / ``write_ptu`` / ``synthetic_records`` make files for
tests and benchmarks; ``decode_benchmark`` times labctl against ptufile.

Header layout
-------------
Bytes 0-7 hold the magic ``PQTTTR\\0\\0``, bytes 8-15 a NUL-padded ASCII
version. Then come 48-byte tag entries: a 32-byte NUL-padded ASCII name, an
int32 index (-1 for a scalar tag, 0, 1, ... for the elements of an array of
tags with one name), a uint32 type code and an 8-byte value. For the
variable-length types (Float8Array, AnsiString, WideString, BinaryBlob) the
value is the length in bytes of the data that follows the entry. The entry
named ``Header_End`` closes the header; the records start right after it.
In :attr:`PtuHeader.tags` a scalar tag maps its name to its value and an
indexed tag maps its name to a list whose element ``i`` is index ``i``
(``None`` where an index is missing). TDateTime values (days since
1899-12-30) become :class:`datetime.datetime`.

Record layouts (bit 31 is the most significant bit of the uint32)
---------------------------------------------------------------
PicoHarp 300 T2 (0x00010203): bits 31-28 channel code, bits 27-0 a 28-bit
time tag in units of the global resolution (4 ps). Code 0 is the sync input
(a timing input like the others in T2), codes 1-4 the detector input (routing
channels 1-4). Code 15 is special: if the four low bits of the time tag are
zero the time base wrapped and every later tag is offset by 210 698 240 more
ticks (the PicoHarp wrap is that fixed number, not 2**28); otherwise those
four bits are the marker-input bitmask, and they stay part of the marker's
time tag, so a PicoHarp T2 marker time is uncertain by up to 15 ticks.

PicoHarp 300 T3 (0x00010303): bits 31-28 channel code, bits 27-16 a 12-bit
start-stop time (dtime, in units of the resolution), bits 15-0 a 16-bit sync
counter. Codes 1-4 are photons on routing channels 1-4. Code 15 is special:
the low four dtime bits are a marker bitmask at the record's sync count, or,
if they are zero, the sync counter wrapped (+65 536 syncs).

HydraHarp, TimeHarp 260 N/P, MultiHarp and PicoHarp 330 ("Generic") T2
(0x00010204 HydraHarp V1, 0x01010204 HydraHarp V2, 0x00010205 TimeHarp 260 N,
0x00010206 TimeHarp 260 P, 0x00010207 Generic): bit 31 special flag, bits
30-25 a 6-bit channel, bits 24-0 a 25-bit time tag. Special 0: a photon on
input ``channel`` (numbered from 0 in the record). Special 1: channel 63 is a
time-base wrap; channel 0 an event on the sync input at the time tag;
channels 1-15 a marker (bitmask) at the time tag. A V1 (HydraHarp 1.x) wrap
adds 33 552 000 ticks per record; in all later formats one wrap record stands
for ``n`` wraps of 2**25 ticks, ``n`` being its time-tag field (0 counts as 1,
as in PicoQuant's own reader).

HydraHarp / TimeHarp 260 / Generic T3 (0x00010304 V1, 0x01010304 V2,
0x00010305, 0x00010306, 0x00010307): bit 31 special flag, bits 30-25 channel,
bits 24-10 a 15-bit dtime, bits 9-0 a 10-bit sync counter. Special 0: a photon
on input ``channel`` (0-based in the record). Special 1: channel 63 is a sync
counter wrap (V1: +1024 syncs per record; later formats: +1024 x the sync
field, 0 counting as 1); channels 1-15 a marker bitmask at the record's sync
count.

Records that fit none of these (a PicoHarp code 5-14, a PicoHarp T3 code 0, a
special HydraHarp-family record with channel 16-62, or channel 0 in T3) are
invalid: by default decoding stops with :class:`PtuFormatError` naming the
byte offset of the record; ``on_invalid="skip"`` counts and skips them.

Channel numbering in labctl
---------------------------
``channel`` is the input number as printed on the hardware's front panel,
with 0 for the sync input: HydraHarp-family records carry ``channel + 1`` for
photons (record channel 0 is input 1) and 0 for T2 sync events; PicoHarp
records keep their code (T2: 0 = sync input ("channel 0"), 1-4 = input 1 via
routing channels 1-4; T3: 1-4). ptufile numbers HydraHarp-family and
PicoHarp T3 photons from 0 (labctl = ptufile + 1) and gives HydraHarp T2 sync
events channel 0 too, indistinguishable from input 1; tttrlib keeps the
record's channel field. Markers are separate arrays: ``marker_bits`` is the
marker bitmask (1-15).

Times and rounding
------------------
T2: ``timestamp_ps = round(ticks x G)`` with ``G`` the global resolution in
ps (``MeasDesc_GlobalResolution``). T3: ``sync_count`` counts sync periods
(the wraps included), ``dtime_bins`` is the start-stop time in bins of
``MeasDesc_Resolution`` and ``timestamp_ps = round(sync_count x G +
dtime_bins x R)`` with ``G`` the sync period (``MeasDesc_GlobalResolution``)
and ``R`` the bin width, both in ps. Each resolution is taken as the shortest
decimal that round-trips the stored float64 (so ``4e-12`` is exactly 4 ps);
``G = Gi + Gf`` with integer ``Gi`` and ``0 <= Gf < 1``, and
``round(x) = Gi*ticks + floor(ticks*Gf + 0.5)`` (the fractional part in
float64). When G and R are whole picoseconds (PicoHarp 300 4 ps, HydraHarp
and PicoHarp 330 1 ps, MultiHarp 160 5 ps, MultiHarp 150 80 ps, TimeHarp 260 P
25 ps, an 80 MHz sync period of 12 500 ps) the result is exact integer
arithmetic; otherwise it is the nearest picosecond (ties up) to a value
within 0.001 ps of the exact product, for counts below 1e12.

T2 photons are returned in time order (PicoQuant hardware writes them that
way; a file that is not is sorted stably by :func:`read_ptu`, with a
warning). T3 photons are in record order (ordered by ``sync_count``;
``timestamp_ps`` can step back within one sync period across channels);
:meth:`PtuBlock.to_tag_batch` sorts by ``timestamp_ps`` when needed.

Truncated files
---------------
When the file holds fewer complete records than ``TTResult_NumberOfRecords``
declares (an acquisition that was cut short, a partial copy), the complete
records are decoded and a :class:`PtuTruncatedWarning` names the file, the
byte offset where the record section ends and the declared count;
``strict=True`` raises :class:`PtuFormatError` instead. A declared count of 0
or less (some writers leave it at 0 while acquiring) decodes every complete
record in the file, also with a warning. Bytes after the declared records
are ignored.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from drivers.tdc import TagBatch

__all__ = [
    "PTU_MAGIC",
    "PtuBlock",
    "PtuData",
    "PtuDecoder",
    "PtuFormatError",
    "PtuHeader",
    "PtuTruncatedWarning",
    "RecordType",
    "TagType",
    "decode_benchmark",
    "encode_t2_records",
    "encode_t3_records",
    "iter_ptu",
    "read_header",
    "read_ptu",
    "synthetic_records",
    "write_ptu",
]

PTU_MAGIC = b"PQTTTR\0\0"
_TAG_ENTRY_BYTES = 48
_RECORD_BYTES = 4

OnInvalid = Literal["raise", "skip"]


class PtuFormatError(ValueError):
    """A PTU file (or record array) that cannot be read as written.

    ``path`` is the file (or ``"<records>"`` for a bare array) and
    ``offset_bytes`` the byte offset of the problem in it.
    """

    def __init__(self, path: str, offset_bytes: int, message: str) -> None:
        self.path = path
        self.offset_bytes = int(offset_bytes)
        self.reason = message
        super().__init__(f"{path}: at byte {self.offset_bytes}: {message}")


class PtuTruncatedWarning(UserWarning):
    """The record section is shorter than the header declares (complete records are kept)."""


class TagType(enum.IntEnum):
    """PTU header tag type codes."""

    EMPTY8 = 0xFFFF0008
    BOOL8 = 0x00000008
    INT8 = 0x10000008
    BITSET64 = 0x11000008
    COLOR8 = 0x12000008
    FLOAT8 = 0x20000008
    TDATETIME = 0x21000008
    FLOAT8_ARRAY = 0x2001FFFF
    ANSI_STRING = 0x4001FFFF
    WIDE_STRING = 0x4002FFFF
    BINARY_BLOB = 0xFFFFFFFF


class RecordType(enum.IntEnum):
    """``TTResultFormat_TTTRRecType`` values: hardware and T2/T3 mode."""

    PICOHARP_T2 = 0x00010203
    PICOHARP_T3 = 0x00010303
    HYDRAHARP_V1_T2 = 0x00010204
    HYDRAHARP_V1_T3 = 0x00010304
    HYDRAHARP_V2_T2 = 0x01010204
    HYDRAHARP_V2_T3 = 0x01010304
    TIMEHARP_260N_T2 = 0x00010205
    TIMEHARP_260N_T3 = 0x00010305
    TIMEHARP_260P_T2 = 0x00010206
    TIMEHARP_260P_T3 = 0x00010306
    GENERIC_T2 = 0x00010207  # MultiHarp 150/160, PicoHarp 330
    GENERIC_T3 = 0x00010307

    @property
    def is_t3(self) -> bool:
        """True for T3 (sync count + start-stop time) records."""
        return (self.value >> 8) & 0xFF == 0x03

    @property
    def mode(self) -> Literal["T2", "T3"]:
        """``"T2"`` or ``"T3"``."""
        return "T3" if self.is_t3 else "T2"

    @property
    def kernel_kind(self) -> int:
        """Decoder family: 0 PicoHarp 300, 1 HydraHarp V1, 2 later 32-bit formats."""
        if self in (RecordType.PICOHARP_T2, RecordType.PICOHARP_T3):
            return _KIND_PICOHARP
        if self in (RecordType.HYDRAHARP_V1_T2, RecordType.HYDRAHARP_V1_T3):
            return _KIND_HH_V1
        return _KIND_HH_V2

    @property
    def max_channel(self) -> int:
        """Highest labctl photon channel the record type can carry."""
        if self.kernel_kind == _KIND_PICOHARP:
            return 4
        return 64

    @property
    def dtime_bins(self) -> int:
        """Number of start-stop time bins of a T3 record (0 for T2)."""
        if not self.is_t3:
            return 0
        return 4096 if self.kernel_kind == _KIND_PICOHARP else 32768


_KIND_PICOHARP = 0
_KIND_HH_V1 = 1
_KIND_HH_V2 = 2

# time-base wrap periods: T2 in ticks of the global resolution, T3 in sync periods
_PT2_WRAP_TICKS = 210_698_240
_HT2_V1_WRAP_TICKS = 33_552_000
_HT2_V2_WRAP_TICKS = 1 << 25
_PT3_WRAP_SYNCS = 1 << 16
_HT3_WRAP_SYNCS = 1 << 10


# --------------------------------------------------------------------------- header


def _resolution_ps(value_s: float) -> tuple[int, float]:
    """Split a resolution in s into whole ps and the fractional ps (see module doc)."""
    exact = Fraction(repr(float(value_s))) * 10**12
    whole = exact.numerator // exact.denominator
    return int(whole), float(exact - whole)


@dataclass(frozen=True)
class PtuHeader:
    """A parsed PTU header.

    ``tags`` maps tag names to values (see the module doc for indexed tags),
    ``tag_offsets_bytes`` the name to the byte offset of its (last) entry.
    ``n_records`` is the number of records that will be decoded: the declared
    count, or fewer if the file is truncated (then ``truncation`` says why).
    """

    path: str
    version: str
    tags: dict[str, Any]
    tag_offsets_bytes: dict[str, int]
    record_type: RecordType
    records_offset_bytes: int
    file_size_bytes: int
    n_records_declared: int | None
    n_records_in_file: int
    n_records: int
    global_resolution_s: float
    resolution_s: float
    truncation: str | None = None
    truncation_offset_bytes: int | None = None

    @property
    def is_truncated(self) -> bool:
        """True when the file holds fewer records than the header declares."""
        declared = self.n_records_declared
        return declared is not None and declared > self.n_records_in_file

    @property
    def is_t3(self) -> bool:
        """True for a T3 file."""
        return self.record_type.is_t3

    @property
    def mode(self) -> Literal["T2", "T3"]:
        """``"T2"`` or ``"T3"``."""
        return self.record_type.mode

    @property
    def sync_period_s(self) -> float | None:
        """T3: the sync period (MeasDesc_GlobalResolution); None for T2."""
        return self.global_resolution_s if self.is_t3 else None


class _TagReader:
    """Reads tag entries sequentially, checking every length against the file size."""

    def __init__(self, fh: Any, path: str, size: int) -> None:
        self.fh = fh
        self.path = path
        self.size = size

    def error(self, offset: int, message: str) -> PtuFormatError:
        return PtuFormatError(self.path, offset, message)

    def read_exact(self, offset: int, n: int, what: str) -> bytes:
        if n < 0 or offset + n > self.size:
            raise self.error(
                offset,
                f"{what}: {n} bytes needed but the file ends at byte {self.size}",
            )
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) != n:
            raise self.error(offset, f"{what}: short read ({len(data)} of {n} bytes)")
        return data


def _decode_tag_value(
    reader: _TagReader, offset: int, name: str, type_code: int, raw: bytes
) -> tuple[Any, int]:
    """Return (value, offset after the entry and its data) of one tag entry."""
    end = offset + _TAG_ENTRY_BYTES
    try:
        tag_type = TagType(type_code)
    except ValueError:
        raise reader.error(offset, f"tag {name!r} has unknown tag type 0x{type_code:08X}") from None
    (as_int,) = struct.unpack("<q", raw)
    (as_float,) = struct.unpack("<d", raw)
    if tag_type is TagType.EMPTY8:
        return None, end
    if tag_type is TagType.BOOL8:
        return as_int != 0, end
    if tag_type in (TagType.INT8, TagType.BITSET64, TagType.COLOR8):
        return as_int, end
    if tag_type is TagType.FLOAT8:
        return as_float, end
    if tag_type is TagType.TDATETIME:
        try:
            return datetime(1899, 12, 30) + timedelta(days=as_float), end
        except (OverflowError, ValueError):
            return as_float, end  # out of datetime's range: keep the raw day count
    # variable length: the value is the byte length of the data that follows
    if as_int < 0 or end + as_int > reader.size:
        raise reader.error(
            offset,
            f"tag {name!r} ({tag_type.name}) declares {as_int} bytes of data at byte {end}, "
            f"beyond the end of the file (size {reader.size} bytes)",
        )
    data = reader.read_exact(end, as_int, f"data of tag {name!r}")
    if tag_type is TagType.FLOAT8_ARRAY:
        if as_int % 8:
            raise reader.error(
                offset, f"tag {name!r} Float8Array length {as_int} is not a multiple of 8"
            )
        return np.frombuffer(data, dtype="<f8").copy(), end + as_int
    if tag_type is TagType.ANSI_STRING:
        return data.split(b"\0", 1)[0].decode("cp1252", errors="replace"), end + as_int
    if tag_type is TagType.WIDE_STRING:
        text = data[: len(data) - len(data) % 2].decode("utf-16-le", errors="replace")
        return text.split("\0", 1)[0], end + as_int
    return bytes(data), end + as_int  # BINARY_BLOB


def _source_name(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


def read_header(path: str | os.PathLike[str]) -> PtuHeader:
    """Parse the tagged header of a PTU file (reads only the header)."""
    name = _source_name(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        reader = _TagReader(fh, name, size)
        magic = fh.read(8)
        if magic != PTU_MAGIC:
            raise PtuFormatError(
                name, 0, f"not a PTU file: magic {magic!r}, expected {PTU_MAGIC!r}"
            )
        version_raw = reader.read_exact(8, 8, "header version")
        version = version_raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()
        tags: dict[str, Any] = {}
        offsets: dict[str, int] = {}
        offset = 16
        while True:
            if offset + _TAG_ENTRY_BYTES > size:
                raise PtuFormatError(
                    name,
                    offset,
                    "header not terminated: the file ends before a Header_End tag "
                    f"(file size {size} bytes)",
                )
            entry = reader.read_exact(offset, _TAG_ENTRY_BYTES, "tag entry")
            ident, index, type_code = struct.unpack_from("<32siI", entry)
            tag_name = ident.split(b"\0", 1)[0].decode("ascii", errors="replace")
            value, next_offset = _decode_tag_value(
                reader, offset, tag_name, type_code, entry[40:48]
            )
            if tag_name == "Header_End":
                records_offset = next_offset
                break
            offsets[tag_name] = offset
            if index < 0:
                tags[tag_name] = value
            else:
                items = tags.get(tag_name)
                if not isinstance(items, list):
                    items = []
                    tags[tag_name] = items
                while len(items) <= index:
                    items.append(None)
                items[index] = value
            offset = next_offset
    return _header_from_tags(name, version, tags, offsets, records_offset, size)


def _scalar_tag(tags: Mapping[str, Any], key: str) -> Any:
    value = tags.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _header_from_tags(
    name: str,
    version: str,
    tags: dict[str, Any],
    offsets: dict[str, int],
    records_offset: int,
    size: int,
) -> PtuHeader:
    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        value = _scalar_tag(tags, key)
        if value is None:
            raise PtuFormatError(name, records_offset, f"header has no {key} tag")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PtuFormatError(
                name, offsets[key], f"tag {key} has value {value!r} of the wrong type"
            )
        return value

    raw_type = need("TTResultFormat_TTTRRecType", int)
    try:
        record_type = RecordType(raw_type & 0xFFFFFFFF)
    except ValueError:
        raise PtuFormatError(
            name,
            offsets["TTResultFormat_TTTRRecType"],
            f"unknown record type 0x{raw_type & 0xFFFFFFFF:08X} (TTResultFormat_TTTRRecType)",
        ) from None
    bits = _scalar_tag(tags, "TTResultFormat_BitsPerRecord")
    if bits is not None and bits not in (0, 32):
        raise PtuFormatError(
            name,
            offsets["TTResultFormat_BitsPerRecord"],
            f"TTResultFormat_BitsPerRecord is {bits}; only 32-bit records are defined",
        )
    global_res = float(need("MeasDesc_GlobalResolution", (float, int)))
    res_value = _scalar_tag(tags, "MeasDesc_Resolution")
    if record_type.is_t3 and res_value is None:
        raise PtuFormatError(name, records_offset, "T3 header has no MeasDesc_Resolution tag")
    resolution = float(res_value) if res_value is not None else global_res
    for key, value in (
        ("MeasDesc_GlobalResolution", global_res),
        ("MeasDesc_Resolution", resolution),
    ):
        if not np.isfinite(value) or value <= 0.0:
            raise PtuFormatError(
                name, offsets.get(key, records_offset), f"{key} is {value!r}; need a time > 0 s"
            )

    available = (size - records_offset) // _RECORD_BYTES
    partial = (size - records_offset) % _RECORD_BYTES
    data_end = records_offset + available * _RECORD_BYTES
    partial_note = f" and a partial record of {partial} bytes at byte {data_end}" if partial else ""
    declared_raw = _scalar_tag(tags, "TTResult_NumberOfRecords")
    declared = int(declared_raw) if isinstance(declared_raw, int) else None
    truncation = None
    truncation_offset = None
    if declared is None or declared <= 0:
        n_records = available
        if available or partial:
            truncation_offset = offsets.get("TTResult_NumberOfRecords", records_offset)
            truncation = (
                f"TTResult_NumberOfRecords is {declared_raw!r}; decoding the {available} "
                f"complete records from byte {records_offset} to the end of the file"
                f"{partial_note}"
            )
    elif declared > available:
        n_records = available
        truncation_offset = data_end
        truncation = (
            f"record section truncated: TTResult_NumberOfRecords declares {declared} records "
            f"(bytes {records_offset} to {records_offset + declared * _RECORD_BYTES}) but the "
            f"file holds {available} complete records{partial_note}"
        )
    else:
        n_records = declared
    return PtuHeader(
        path=name,
        version=version,
        tags=tags,
        tag_offsets_bytes=offsets,
        record_type=record_type,
        records_offset_bytes=records_offset,
        file_size_bytes=size,
        n_records_declared=declared,
        n_records_in_file=available,
        n_records=n_records,
        global_resolution_s=global_res,
        resolution_s=resolution,
        truncation=truncation,
        truncation_offset_bytes=truncation_offset,
    )


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, inline="always")
def _ps(ticks: int, p_int: int, p_frac: float) -> int:
    if p_frac == 0.0:
        return ticks * p_int
    return ticks * p_int + np.int64(np.floor(ticks * p_frac + 0.5))


@njit(cache=True, nogil=True)
def _decode_t2_kernel(records, kind, skip_invalid, ofl, prev_ps, p_int, p_frac, out_ps, out_ch):
    """Photons from the front of out_*, markers from the back (reversed).

    Output indices are unsigned so that stores skip Numba's negative-index
    wraparound; photons take the first branch. Both roughly double the speed.
    """
    one = np.uint64(1)
    head = np.uint64(0)
    tail = np.uint64(records.size)
    wraps = 0
    disorder = 0
    n_invalid = 0
    first_invalid = -1
    if kind == 0:  # PicoHarp 300
        for i in range(records.size):
            r = np.int64(records[i])
            code = r >> 28
            if code <= 4:
                x = _ps(ofl + (r & 0x0FFFFFFF), p_int, p_frac)
                disorder += x < prev_ps
                prev_ps = x
                out_ps[head] = x
                out_ch[head] = code
                head += one
            elif code == 15:
                bits = r & 0xF
                if bits == 0:
                    ofl += _PT2_WRAP_TICKS
                    wraps += 1
                else:
                    tail -= one
                    out_ps[tail] = _ps(ofl + (r & 0x0FFFFFFF), p_int, p_frac)
                    out_ch[tail] = bits
            else:
                n_invalid += 1
                if first_invalid < 0:
                    first_invalid = i
                if not skip_invalid:
                    break
    else:  # HydraHarp V1 (kind 1) and the later formats (kind 2)
        for i in range(records.size):
            r = np.int64(records[i])
            if r < 0x80000000:  # photon
                x = _ps(ofl + (r & 0x1FFFFFF), p_int, p_frac)
                disorder += x < prev_ps
                prev_ps = x
                out_ps[head] = x
                out_ch[head] = ((r >> 25) & 0x3F) + 1
                head += one
                continue
            ch = (r >> 25) & 0x3F
            tag = r & 0x1FFFFFF
            if ch == 0:  # sync input
                x = _ps(ofl + tag, p_int, p_frac)
                disorder += x < prev_ps
                prev_ps = x
                out_ps[head] = x
                out_ch[head] = 0
                head += one
            elif ch == 63:
                if kind == 1:
                    ofl += _HT2_V1_WRAP_TICKS
                    wraps += 1
                else:
                    k = tag if tag > 1 else 1
                    ofl += k * _HT2_V2_WRAP_TICKS
                    wraps += k
            elif ch <= 15:
                tail -= one
                out_ps[tail] = _ps(ofl + tag, p_int, p_frac)
                out_ch[tail] = ch
            else:
                n_invalid += 1
                if first_invalid < 0:
                    first_invalid = i
                if not skip_invalid:
                    break
    return head, tail, ofl, prev_ps, wraps, disorder, n_invalid, first_invalid


@njit(cache=True, nogil=True, inline="always")
def _ps3(sync, dtime, p_int, p_frac, r_int, r_frac):
    base = sync * p_int + dtime * r_int
    if p_frac == 0.0 and r_frac == 0.0:
        return base
    return base + np.int64(np.floor(sync * p_frac + dtime * r_frac + 0.5))


@njit(cache=True, nogil=True)
def _decode_t3_kernel(
    records,
    kind,
    skip_invalid,
    ofl,
    prev_sync,
    p_int,
    p_frac,
    r_int,
    r_frac,
    out_sync,
    out_dtime,
    out_ps,
    out_ch,
):
    """Photons from the front of out_*, markers from the back (reversed)."""
    one = np.uint64(1)
    head = np.uint64(0)
    tail = np.uint64(records.size)
    wraps = 0
    disorder = 0
    n_invalid = 0
    first_invalid = -1
    if kind == 0:  # PicoHarp 300
        for i in range(records.size):
            r = np.int64(records[i])
            code = r >> 28
            sync = ofl + (r & 0xFFFF)
            dtime = (r >> 16) & 0xFFF
            if code >= 1 and code <= 4:
                disorder += sync < prev_sync
                prev_sync = sync
                out_sync[head] = sync
                out_dtime[head] = dtime
                out_ps[head] = _ps3(sync, dtime, p_int, p_frac, r_int, r_frac)
                out_ch[head] = code
                head += one
            elif code == 15:
                bits = dtime & 0xF
                if bits == 0:
                    ofl += _PT3_WRAP_SYNCS
                    wraps += 1
                else:
                    tail -= one
                    out_sync[tail] = sync
                    out_dtime[tail] = 0
                    out_ps[tail] = _ps3(sync, 0, p_int, p_frac, r_int, r_frac)
                    out_ch[tail] = bits
            else:
                n_invalid += 1
                if first_invalid < 0:
                    first_invalid = i
                if not skip_invalid:
                    break
    else:
        for i in range(records.size):
            r = np.int64(records[i])
            nsync = r & 0x3FF
            if r < 0x80000000:  # photon
                sync = ofl + nsync
                dtime = (r >> 10) & 0x7FFF
                disorder += sync < prev_sync
                prev_sync = sync
                out_sync[head] = sync
                out_dtime[head] = dtime
                out_ps[head] = _ps3(sync, dtime, p_int, p_frac, r_int, r_frac)
                out_ch[head] = ((r >> 25) & 0x3F) + 1
                head += one
                continue
            ch = (r >> 25) & 0x3F
            if ch == 63:
                if kind == 1:
                    ofl += _HT3_WRAP_SYNCS
                    wraps += 1
                else:
                    k = nsync if nsync > 1 else 1
                    ofl += k * _HT3_WRAP_SYNCS
                    wraps += k
            elif ch >= 1 and ch <= 15:
                tail -= one
                sync = ofl + nsync
                out_sync[tail] = sync
                out_dtime[tail] = 0
                out_ps[tail] = _ps3(sync, 0, p_int, p_frac, r_int, r_frac)
                out_ch[tail] = ch
            else:
                n_invalid += 1
                if first_invalid < 0:
                    first_invalid = i
                if not skip_invalid:
                    break
    return head, tail, ofl, prev_sync, wraps, disorder, n_invalid, first_invalid


# --------------------------------------------------------------------------- decoded data


@dataclass(frozen=True, kw_only=True)
class PtuBlock:
    """Events decoded from a run of consecutive records.

    Photons: ``timestamp_ps`` (int64), ``channel`` (uint8, numbering in the
    module doc); T3 adds ``sync_count`` (int64) and ``dtime_bins`` (uint16),
    both None for T2. Markers: ``marker_timestamp_ps``, ``marker_bits`` and
    (T3) ``marker_sync_count``. ``n_overflows`` counts time-base wraps,
    ``n_invalid`` skipped invalid records, ``n_out_of_order`` photons earlier
    than the photon before them (T2 time, T3 sync count; 0 in a good file).
    ``horizon_ps``: every photon earlier than it has been delivered (this or
    earlier blocks); later blocks hold only photons at or after it.
    """

    mode: Literal["T2", "T3"]
    record_start: int
    n_records: int
    timestamp_ps: np.ndarray
    channel: np.ndarray
    sync_count: np.ndarray | None
    dtime_bins: np.ndarray | None
    marker_timestamp_ps: np.ndarray
    marker_bits: np.ndarray
    marker_sync_count: np.ndarray | None
    n_overflows: int
    n_invalid: int = 0
    n_out_of_order: int = 0
    horizon_ps: int = 0
    is_last: bool = False

    def __len__(self) -> int:
        return int(self.timestamp_ps.size)

    def to_tag_batch(self) -> TagBatch:
        """The photons as a :class:`drivers.tdc.TagBatch` (time-sorted; markers left out)."""
        from drivers.tdc import TagBatch

        ts = self.timestamp_ps
        ch = self.channel
        if ts.size > 1 and bool(np.any(ts[1:] < ts[:-1])):
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            ch = ch[order]
        return TagBatch(
            channel=np.ascontiguousarray(ch, dtype=np.uint8),
            timestamp_ps=np.ascontiguousarray(ts, dtype=np.int64),
            horizon_ps=self.horizon_ps,
        )


@dataclass(frozen=True, kw_only=True)
class PtuData(PtuBlock):
    """A whole PTU file decoded (:func:`read_ptu`): a :class:`PtuBlock` plus its header."""

    header: PtuHeader
    truncated: bool = False


class PtuDecoder:
    """Decodes uint32 PTU records block by block, carrying the wrap state.

    Feed consecutive record arrays to :meth:`decode`; any split of a record
    stream gives the same events as decoding it whole. ``source`` and
    ``records_offset_bytes`` only serve error messages (byte offsets of
    invalid records).
    """

    def __init__(
        self,
        record_type: RecordType | int,
        global_resolution_s: float,
        resolution_s: float | None = None,
        *,
        on_invalid: OnInvalid = "raise",
        source: str = "<records>",
        records_offset_bytes: int = 0,
    ) -> None:
        try:
            self.record_type = RecordType(int(record_type))
        except ValueError:
            raise PtuFormatError(
                source, 0, f"unknown record type 0x{int(record_type):08X}"
            ) from None
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        res = global_resolution_s if resolution_s is None else resolution_s
        for what, value in (("global_resolution_s", global_resolution_s), ("resolution_s", res)):
            if not np.isfinite(value) or value <= 0.0:
                raise ValueError(f"{what} must be a time > 0 s, got {value!r}")
        self.global_resolution_s = float(global_resolution_s)
        self.resolution_s = float(res)
        self.on_invalid: OnInvalid = on_invalid
        self.source = source
        self.records_offset_bytes = int(records_offset_bytes)
        self._p = _resolution_ps(self.global_resolution_s)
        self._r = _resolution_ps(self.resolution_s)
        self._overflow = 0  # ticks (T2) or syncs (T3) added by wraps so far
        self._prev = np.iinfo(np.int64).min
        self._n_done = 0

    @classmethod
    def for_header(cls, header: PtuHeader, *, on_invalid: OnInvalid = "raise") -> PtuDecoder:
        """A decoder for the records of a file whose header was read."""
        return cls(
            header.record_type,
            header.global_resolution_s,
            header.resolution_s,
            on_invalid=on_invalid,
            source=header.path,
            records_offset_bytes=header.records_offset_bytes,
        )

    @property
    def n_records_done(self) -> int:
        """Records decoded so far."""
        return self._n_done

    @property
    def overflow_count(self) -> int:
        """Wrap offset reached so far, in ticks (T2) or sync periods (T3)."""
        return self._overflow

    def decode(self, records: np.ndarray, *, is_last: bool = False) -> PtuBlock:
        """Decode the next consecutive records (any length, including 0)."""
        rec = np.ascontiguousarray(records, dtype=np.uint32)
        if rec.ndim != 1:
            raise ValueError("records must be a 1-D array of uint32")
        n = rec.size
        kind = self.record_type.kernel_kind
        skip = self.on_invalid == "skip"
        p_int, p_frac = self._p
        ts = np.empty(n, dtype=np.int64)
        ch = np.empty(n, dtype=np.uint8)
        sync: np.ndarray | None = None
        dtime: np.ndarray | None = None
        if self.record_type.is_t3:
            r_int, r_frac = self._r
            sync = np.empty(n, dtype=np.int64)
            dtime = np.empty(n, dtype=np.uint16)
            head, tail, ofl, prev, wraps, disorder, n_invalid, first_bad = _decode_t3_kernel(
                rec,
                kind,
                skip,
                np.int64(self._overflow),
                np.int64(self._prev),
                np.int64(p_int),
                p_frac,
                np.int64(r_int),
                r_frac,
                sync,
                dtime,
                ts,
                ch,
            )
        else:
            head, tail, ofl, prev, wraps, disorder, n_invalid, first_bad = _decode_t2_kernel(
                rec,
                kind,
                skip,
                np.int64(self._overflow),
                np.int64(self._prev),
                np.int64(p_int),
                p_frac,
                ts,
                ch,
            )
        head, tail = int(head), int(tail)
        if n_invalid and not skip:
            self._raise_invalid(rec, int(first_bad))
        start = self._n_done
        self._overflow = int(ofl)
        self._prev = int(prev)
        self._n_done += n
        horizon = self._horizon_ps()
        if is_last and head:
            horizon = max(horizon, int(ts[:head].max()) + 1)
        return PtuBlock(
            mode=self.record_type.mode,
            record_start=start,
            n_records=n,
            timestamp_ps=ts[:head],
            channel=ch[:head],
            sync_count=None if sync is None else sync[:head],
            dtime_bins=None if dtime is None else dtime[:head],
            marker_timestamp_ps=ts[tail:][::-1].copy(),
            marker_bits=ch[tail:][::-1].copy(),
            marker_sync_count=None if sync is None else sync[tail:][::-1].copy(),
            n_overflows=int(wraps),
            n_invalid=int(n_invalid),
            n_out_of_order=int(disorder),
            horizon_ps=horizon,
            is_last=is_last,
        )

    def _horizon_ps(self) -> int:
        """Lower bound of every photon still to come (0 before the first photon)."""
        if self._prev == np.iinfo(np.int64).min:
            return 0
        if not self.record_type.is_t3:
            return self._prev  # T2 photons come in time order
        # a later T3 photon has a sync count >= the last one seen and dtime >= 0
        p_int, p_frac = self._p
        extra = 0 if p_frac == 0.0 else int(np.floor(self._prev * p_frac + 0.5))
        return self._prev * p_int + extra

    def _raise_invalid(self, rec: np.ndarray, index: int) -> None:
        value = int(rec[index])
        offset = self.records_offset_bytes + (self._n_done + index) * _RECORD_BYTES
        raise PtuFormatError(
            self.source,
            offset,
            f"invalid {self.record_type.name} record 0x{value:08X} "
            f"(record {self._n_done + index}): {_invalid_reason(self.record_type, value)}",
        )


def _invalid_reason(record_type: RecordType, value: int) -> str:
    if record_type.kernel_kind == _KIND_PICOHARP:
        return f"channel code {value >> 28} is not defined"
    return f"special record with channel {(value >> 25) & 0x3F} is not defined"


# --------------------------------------------------------------------------- file readers


def _truncation_check(header: PtuHeader, strict: bool) -> bool:
    """Warn (or with ``strict`` raise, if records are missing); True if truncated."""
    if header.truncation is None or header.truncation_offset_bytes is None:
        return False
    if strict and header.is_truncated:
        raise PtuFormatError(header.path, header.truncation_offset_bytes, header.truncation)
    warnings.warn(
        f"{header.path}: at byte {header.truncation_offset_bytes}: {header.truncation}",
        PtuTruncatedWarning,
        stacklevel=3,
    )
    return header.is_truncated


def _read_records(fh: Any, header: PtuHeader, start: int, count: int) -> np.ndarray:
    fh.seek(header.records_offset_bytes + start * _RECORD_BYTES)
    rec = np.fromfile(fh, dtype="<u4", count=count)
    if rec.size != count:  # the file shrank since the header was read
        raise PtuFormatError(
            header.path,
            header.records_offset_bytes + (start + rec.size) * _RECORD_BYTES,
            f"record section ends early: {count} records expected from record {start}",
        )
    return rec


def iter_ptu(
    path: str | os.PathLike[str],
    *,
    block_records: int = 1 << 22,
    strict: bool = False,
    on_invalid: OnInvalid = "raise",
) -> Iterator[PtuBlock]:
    """Decode a PTU file block by block, ``block_records`` records at a time.

    Only one block of records and its events are in memory at once; the wrap
    state is carried across blocks, so concatenating the blocks gives exactly
    :func:`read_ptu`'s events (T2 files not written in time order are left in
    file order here; see ``n_out_of_order``). Truncation is handled as in
    :func:`read_ptu`.
    """
    if block_records < 1:
        raise ValueError(f"block_records must be >= 1, got {block_records}")
    header = read_header(path)
    _truncation_check(header, strict)
    decoder = PtuDecoder.for_header(header, on_invalid=on_invalid)
    with open(path, "rb") as fh:
        start = 0
        total = header.n_records
        while True:
            count = min(block_records, total - start)
            rec = _read_records(fh, header, start, count)
            start += count
            yield decoder.decode(rec, is_last=start >= total)
            if start >= total:
                return


def read_ptu(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    on_invalid: OnInvalid = "raise",
) -> PtuData:
    """Read and decode a whole PTU file (T2 or T3, any PicoQuant record type).

    A truncated record section gives the complete records and a
    :class:`PtuTruncatedWarning` (``strict=True``: :class:`PtuFormatError`).
    Malformed headers and invalid records raise :class:`PtuFormatError`
    naming the file and byte offset.
    """
    header = read_header(path)
    truncated = _truncation_check(header, strict)
    decoder = PtuDecoder.for_header(header, on_invalid=on_invalid)
    with open(path, "rb") as fh:
        rec = _read_records(fh, header, 0, header.n_records)
    block = decoder.decode(rec, is_last=True)
    ts, ch = block.timestamp_ps, block.channel
    if block.mode == "T2" and block.n_out_of_order:
        warnings.warn(
            f"{header.path}: {block.n_out_of_order} T2 photons are out of time order; "
            "sorting them (stable)",
            stacklevel=2,
        )
        order = np.argsort(ts, kind="stable")
        ts, ch = ts[order], ch[order]
    return PtuData(
        header=header,
        truncated=truncated,
        mode=block.mode,
        record_start=0,
        n_records=block.n_records,
        timestamp_ps=ts,
        channel=ch,
        sync_count=block.sync_count,
        dtime_bins=block.dtime_bins,
        marker_timestamp_ps=block.marker_timestamp_ps,
        marker_bits=block.marker_bits,
        marker_sync_count=block.marker_sync_count,
        n_overflows=block.n_overflows,
        n_invalid=block.n_invalid,
        n_out_of_order=block.n_out_of_order,
        horizon_ps=block.horizon_ps,
        is_last=True,
    )


# --------------------------------------------------------------------------- writing


@njit(cache=True, nogil=True)
def _encode_kernel(ticks, dtime, channel, t3, kind, out):
    """Encode photons (and sync events, T2 channel 0) with wrap records.

    Times must be sorted and >= 0. With ``out.size == 0`` only counts the
    records needed; returns the number of records.
    """
    count_only = out.size == 0
    n_out = 0
    ofl = np.int64(0)
    if t3:
        wrap = _PT3_WRAP_SYNCS if kind == 0 else _HT3_WRAP_SYNCS
        max_k = _HT3_WRAP_SYNCS - 1
    else:
        max_k = _HT2_V2_WRAP_TICKS - 1
        if kind == 0:
            wrap = _PT2_WRAP_TICKS
        elif kind == 1:
            wrap = _HT2_V1_WRAP_TICKS
        else:
            wrap = _HT2_V2_WRAP_TICKS
    for i in range(ticks.size):
        t = ticks[i]
        wraps = (t - ofl) // wrap
        while wraps > 0:
            k = min(wraps, max_k) if kind == 2 else 1
            if not count_only:
                if kind == 0:
                    out[n_out] = 15 << 28  # special, marker bits / dtime 0
                elif kind == 1:
                    out[n_out] = (1 << 31) | (63 << 25)
                else:
                    out[n_out] = (1 << 31) | (63 << 25) | k
            n_out += 1
            ofl += k * wrap
            wraps -= k
        low = t - ofl
        c = np.int64(channel[i])
        if not count_only:
            if kind == 0:
                if t3:
                    out[n_out] = (c << 28) | (np.int64(dtime[i]) << 16) | low
                else:
                    out[n_out] = (c << 28) | low
            elif t3:
                out[n_out] = ((c - 1) << 25) | (np.int64(dtime[i]) << 10) | low
            elif c == 0:
                out[n_out] = (1 << 31) | low
            else:
                out[n_out] = ((c - 1) << 25) | low
        n_out += 1
    return n_out


def _encode(
    ticks: np.ndarray,
    dtime: np.ndarray,
    channel: np.ndarray,
    record_type: RecordType,
) -> np.ndarray:
    ticks = np.ascontiguousarray(ticks, dtype=np.int64)
    channel = np.ascontiguousarray(channel, dtype=np.uint8)
    dtime = np.ascontiguousarray(dtime, dtype=np.int64)
    if ticks.shape != channel.shape or ticks.ndim != 1 or dtime.shape != ticks.shape:
        raise ValueError("times, channels (and dtime) must be 1-D arrays of one length")
    if ticks.size and (ticks[0] < 0 or bool(np.any(np.diff(ticks) < 0))):
        raise ValueError("times must be >= 0 and sorted")
    low = 1 if record_type.is_t3 else 0
    if record_type.is_t3:
        if dtime.size and (dtime.min() < 0 or dtime.max() >= record_type.dtime_bins):
            raise ValueError(f"dtime_bins must be in 0..{record_type.dtime_bins - 1}")
    if channel.size and (channel.min() < low or channel.max() > record_type.max_channel):
        raise ValueError(f"{record_type.name} channels must be in {low}..{record_type.max_channel}")
    t3 = record_type.is_t3
    kind = record_type.kernel_kind
    n = _encode_kernel(ticks, dtime, channel, t3, kind, np.zeros(0, dtype=np.uint32))
    out = np.empty(n, dtype=np.uint32)
    _encode_kernel(ticks, dtime, channel, t3, kind, out)
    return out


def encode_t2_records(
    timestamp_ticks: np.ndarray, channel: np.ndarray, record_type: RecordType | int
) -> np.ndarray:
    """Encode sorted T2 times (ticks of the global resolution) as uint32 records.

    Channels use labctl numbering (0 = sync input). Wrap records are inserted
    as needed; markers are not encoded.
    """
    rt = RecordType(int(record_type))
    if rt.is_t3:
        raise ValueError(f"{rt.name} is a T3 record type")
    ticks = np.asarray(timestamp_ticks)
    return _encode(ticks, np.zeros(ticks.shape, dtype=np.int64), np.asarray(channel), rt)


def encode_t3_records(
    sync_count: np.ndarray,
    dtime_bins: np.ndarray,
    channel: np.ndarray,
    record_type: RecordType | int,
) -> np.ndarray:
    """Encode T3 photons (sorted sync counts, delay bins, channels >= 1) as uint32 records."""
    rt = RecordType(int(record_type))
    if not rt.is_t3:
        raise ValueError(f"{rt.name} is a T2 record type")
    return _encode(np.asarray(sync_count), np.asarray(dtime_bins), np.asarray(channel), rt)


def _encode_tag(name: str, value: Any, index: int = -1) -> bytes:
    if value is None:
        code, payload, data = TagType.EMPTY8, struct.pack("<q", 0), b""
    elif isinstance(value, bool):
        code, payload, data = TagType.BOOL8, struct.pack("<q", int(value)), b""
    elif isinstance(value, int):
        code, payload, data = TagType.INT8, struct.pack("<q", value), b""
    elif isinstance(value, float):
        code, payload, data = TagType.FLOAT8, struct.pack("<d", value), b""
    elif isinstance(value, datetime):
        days = (value - datetime(1899, 12, 30)) / timedelta(days=1)
        code, payload, data = TagType.TDATETIME, struct.pack("<d", days), b""
    elif isinstance(value, str | bytes):
        raw = value.encode("cp1252") + b"\0" if isinstance(value, str) else bytes(value)
        raw += b"\0" * (-len(raw) % 8)
        code = TagType.ANSI_STRING if isinstance(value, str) else TagType.BINARY_BLOB
        payload, data = struct.pack("<q", len(raw)), raw
    else:
        raise TypeError(f"tag {name!r}: cannot encode a {type(value).__name__}")
    return struct.pack("<32siI", name.encode("ascii"), index, int(code)) + payload + data


def write_ptu(
    path: str | os.PathLike[str],
    records: np.ndarray,
    *,
    record_type: RecordType | int,
    global_resolution_s: float,
    resolution_s: float | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Write uint32 records with a minimal PTU header (for tests and benchmarks).

    ``tags`` adds or overrides header tags (None, bool, int, float, str,
    bytes or datetime values).
    """
    rt = RecordType(int(record_type))
    rec = np.ascontiguousarray(records, dtype="<u4")
    res = global_resolution_s if resolution_s is None else resolution_s
    header_tags: dict[str, Any] = {
        "File_GUID": "{" + str(uuid.uuid4()).upper() + "}",
        "CreatorSW_Name": "labctl.ptu",
        "Measurement_Mode": 3 if rt.is_t3 else 2,
        "Measurement_SubMode": 0,
        "MeasDesc_GlobalResolution": float(global_resolution_s),
        "MeasDesc_Resolution": float(res),
        "MeasDesc_BinningFactor": 1,
        "TTResultFormat_TTTRRecType": int(rt),
        "TTResultFormat_BitsPerRecord": 32,
        "TTResult_NumberOfRecords": int(rec.size),
    }
    if rt.is_t3:
        header_tags["TTResult_SyncRate"] = round(1.0 / global_resolution_s)
    header_tags.update(tags or {})
    parts = [PTU_MAGIC, b"1.0.00\0\0"]
    parts += [_encode_tag(k, v) for k, v in header_tags.items()]
    parts.append(_encode_tag("Header_End", None))
    with open(path, "wb") as fh:
        fh.write(b"".join(parts))
        rec.tofile(fh)


# typical base resolutions for synthetic data (T2 tick / T3 bin)
_SYNTH_RESOLUTION_S = {
    _KIND_PICOHARP: 4e-12,
    _KIND_HH_V1: 1e-12,
    _KIND_HH_V2: 5e-12,
}


def synthetic_records(
    n_photons: int,
    record_type: RecordType | int = RecordType.GENERIC_T2,
    *,
    count_rate_hz: float = 5e6,
    n_channels: int = 4,
    sync_rate_hz: float = 80e6,
    seed: int = 0,
) -> tuple[np.ndarray, float, float]:
    """Random Poisson photons on ``n_channels`` inputs, encoded.

    Returns ``(records, global_resolution_s, resolution_s)``; typical
    resolutions of the hardware family are used (PicoHarp 4 ps, HydraHarp V1
    1 ps, later formats 5 ps); T3 uses ``sync_rate_hz``.
    """
    rt = RecordType(int(record_type))
    rng = np.random.default_rng(seed)
    res_s = _SYNTH_RESOLUTION_S[rt.kernel_kind]
    max_ch = min(n_channels, rt.max_channel)
    channel = rng.integers(1, max_ch + 1, size=n_photons).astype(np.uint8)
    if rt.is_t3:
        period_s = 1.0 / sync_rate_hz
        gaps = rng.geometric(min(1.0, count_rate_hz / sync_rate_hz), size=n_photons) - 1
        sync = np.cumsum(gaps, dtype=np.int64)
        n_bins = min(rt.dtime_bins, max(1, int(period_s / res_s)))
        dtime = rng.integers(0, n_bins, size=n_photons)
        return encode_t3_records(sync, dtime, channel, rt), period_s, res_s
    mean_gap = 1.0 / (count_rate_hz * res_s)
    ticks = np.cumsum(rng.exponential(mean_gap, size=n_photons)).astype(np.int64)
    return encode_t2_records(ticks, channel, rt), res_s, res_s


# --------------------------------------------------------------------------- benchmark


def decode_benchmark(
    path_or_records: str | os.PathLike[str] | np.ndarray,
    *,
    record_type: RecordType | int | None = None,
    global_resolution_s: float | None = None,
    resolution_s: float | None = None,
    repeats: int = 5,
) -> dict[str, Any]:
    """Time labctl and ptufile decoding the same PTU records in one run.

    ``path_or_records`` is a PTU file, or a uint32 record array (then
    ``record_type`` and ``global_resolution_s`` are needed and it is written
    to a temporary file so both readers see the same file). Both decode the
    records already in memory (``labctl_mrec_s`` vs ``ptufile_mrec_s``,
    ptufile's ``PtuFile.decode_records``) and the file end to end (open,
    read, decode: ``*_file_mrec_s``). Figures are records / best wall time
    of ``repeats`` runs, one thread, in millions of records per second;
    ``ratio`` = labctl / ptufile. ptufile figures are None if it is not
    installed.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(path_or_records, np.ndarray):
            if record_type is None or global_resolution_s is None:
                raise ValueError("a record array needs record_type and global_resolution_s")
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            path = tmp / "bench.ptu"
            write_ptu(
                path,
                path_or_records,
                record_type=record_type,
                global_resolution_s=global_resolution_s,
                resolution_s=resolution_s,
            )
        else:
            path = Path(path_or_records)
        result = _run_benchmark(path, repeats)
    return result


def _run_benchmark(path: Path, repeats: int) -> dict[str, Any]:
    header = read_header(path)
    with open(path, "rb") as fh:
        records = _read_records(fh, header, 0, header.n_records)
    n = int(records.size)
    try:
        import ptufile
    except ImportError:
        ptufile = None

    def labctl_decode() -> None:
        PtuDecoder.for_header(header).decode(records)

    def labctl_file() -> None:
        read_ptu(path)

    runs: dict[str, Any] = {"labctl": labctl_decode, "labctl_file": labctl_file}
    if ptufile is not None:
        reader = ptufile.PtuFile(path)

        def ptufile_decode() -> None:
            reader.decode_records(records)

        def ptufile_file() -> None:
            with ptufile.PtuFile(path) as ptu:
                ptu.decode_records()

        runs.update(ptufile=ptufile_decode, ptufile_file=ptufile_file)
    best = dict.fromkeys(runs, float("inf"))
    try:
        for fn in runs.values():  # warm up: compile or load kernels, fill the page cache
            fn()
        for _ in range(max(1, repeats)):  # interleaved, so both see the same machine load
            for key, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - t0)
    finally:
        if ptufile is not None:
            reader.close()
    result: dict[str, Any] = {
        "path": str(path),
        "record_type": header.record_type.name,
        "n_records": n,
        "repeats": max(1, repeats),
        "labctl_mrec_s": n / best["labctl"] / 1e6,
        "labctl_file_mrec_s": n / best["labctl_file"] / 1e6,
        "ptufile_version": None,
        "ptufile_mrec_s": None,
        "ptufile_file_mrec_s": None,
        "ratio": None,
        "file_ratio": None,
    }
    if ptufile is not None:
        result.update(
            ptufile_version=ptufile.__version__,
            ptufile_mrec_s=n / best["ptufile"] / 1e6,
            ptufile_file_mrec_s=n / best["ptufile_file"] / 1e6,
            ratio=best["ptufile"] / best["labctl"],
            file_ratio=best["ptufile_file"] / best["labctl_file"],
        )
    return result

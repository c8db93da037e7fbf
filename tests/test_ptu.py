"""PicoQuant PTU reader (labctl.ptu) against independent writers and readers.

Files come from ptufile's own writer (PtuWriter / imwrite: PicoHarp T3 and
Generic T3 image files) and from a minimal writer in this test module,
written from PicoQuant's format description and sharing no code with
labctl.ptu, for every record type (T2 and T3, markers, sync events, single
and multi-wrap overflow records). Decoded events are compared exactly with
the events the files were made from, with ptufile's decoder and with
tttrlib's reader (each skipped if that package is not installed).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import struct
import warnings
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl import ptu
from labctl.ptu import (
    PtuDecoder,
    PtuFormatError,
    PtuTruncatedWarning,
    RecordType,
    iter_ptu,
    read_header,
    read_ptu,
)

HAVE_PTUFILE = importlib.util.find_spec("ptufile") is not None
HAVE_TTTRLIB = importlib.util.find_spec("tttrlib") is not None
needs_ptufile = pytest.mark.skipif(not HAVE_PTUFILE, reason="ptufile not installed")
needs_tttrlib = pytest.mark.skipif(not HAVE_TTTRLIB, reason="tttrlib not installed")

# --------------------------------------------------------------------------- independent writer
# Written from PicoQuant's PTU description; deliberately shares nothing with labctl.ptu.

T_EMPTY8, T_BOOL8, T_INT8, T_BITSET64, T_COLOR8 = (
    0xFFFF0008,
    0x00000008,
    0x10000008,
    0x11000008,
    0x12000008,
)
T_FLOAT8, T_TDATETIME, T_FLOAT8ARRAY = 0x20000008, 0x21000008, 0x2001FFFF
T_ANSI, T_WIDE, T_BLOB = 0x4001FFFF, 0x4002FFFF, 0xFFFFFFFF


def entry(name: str, code: int, value: bytes, data: bytes = b"", index: int = -1) -> bytes:
    """One 48-byte tag entry (+ its data)."""
    assert len(value) == 8
    return name.encode().ljust(32, b"\0") + struct.pack("<iI", index, code) + value + data


def int_tag(name: str, value: int, code: int = T_INT8, index: int = -1) -> bytes:
    return entry(name, code, struct.pack("<q", value), index=index)


def float_tag(name: str, value: float, code: int = T_FLOAT8) -> bytes:
    return entry(name, code, struct.pack("<d", value))


def var_tag(name: str, code: int, data: bytes, declared: int | None = None) -> bytes:
    data += b"\0" * (-len(data) % 8)
    n = len(data) if declared is None else declared
    return entry(name, code, struct.pack("<q", n), data)


def header_bytes(
    record_type: int,
    n_records: int,
    global_res_s: float,
    res_s: float,
    extra: bytes = b"",
    end: bool = True,
) -> bytes:
    mode = 3 if (record_type >> 8) & 0xFF == 3 else 2
    parts = [
        b"PQTTTR\0\0",
        b"1.0.00\0\0",
        var_tag("File_GUID", T_ANSI, b"{6F0B9C5E-1B1A-4B8E-9D3B-0C3C2E2A7A11}\0"),
        int_tag("Measurement_Mode", mode),
        int_tag("Measurement_SubMode", 0),
        float_tag("MeasDesc_GlobalResolution", global_res_s),
        float_tag("MeasDesc_Resolution", res_s),
        int_tag("TTResultFormat_TTTRRecType", record_type),
        int_tag("TTResultFormat_BitsPerRecord", 32),
        int_tag("TTResult_NumberOfRecords", n_records),
        extra,
    ]
    if end:
        parts.append(entry("Header_End", T_EMPTY8, bytes(8)))
    return b"".join(parts)


def ptu_file(
    path: Path,
    record_type: int,
    records: np.ndarray,
    global_res_s: float,
    res_s: float | None = None,
    *,
    n_declared: int | None = None,
    extra: bytes = b"",
) -> Path:
    n = len(records) if n_declared is None else n_declared
    res = global_res_s if res_s is None else res_s
    path.write_bytes(
        header_bytes(record_type, n, global_res_s, res, extra)
        + np.asarray(records, dtype="<u4").tobytes()
    )
    return path


# family, T3?, wrap period (ticks or syncs), max wraps per overflow record
FAMILY: dict[int, tuple[str, bool]] = {
    0x00010203: ("pico", False),
    0x00010303: ("pico", True),
    0x00010204: ("hh1", False),
    0x00010304: ("hh1", True),
    0x01010204: ("hh2", False),
    0x01010304: ("hh2", True),
    0x00010205: ("hh2", False),
    0x00010305: ("hh2", True),
    0x00010206: ("hh2", False),
    0x00010306: ("hh2", True),
    0x00010207: ("hh2", False),
    0x00010307: ("hh2", True),
}
WRAP = {
    ("pico", False): 210698240,
    ("pico", True): 65536,
    ("hh1", False): 33552000,
    ("hh1", True): 1024,
    ("hh2", False): 1 << 25,
    ("hh2", True): 1024,
}
# resolutions per record type: (global / sync period, T3 bin); a few are not whole ps
RESOLUTION = {
    0x00010203: (4e-12, 4e-12),
    0x00010303: (12.5e-9, 4e-12),
    0x00010204: (1e-12, 1e-12),
    0x00010304: (25e-9, 1e-12),
    0x01010204: (1e-12, 1e-12),
    0x01010304: (1 / 79.9987e6, 2e-12),
    0x00010205: (250e-12, 250e-12),
    0x00010305: (50e-9, 250e-12),
    0x00010206: (25e-12, 25e-12),
    0x00010306: (12.5e-9, 25e-12),
    0x00010207: (80e-12 / 3, 80e-12 / 3),
    0x00010307: (1 / 80.0123e6, 5e-12),
}


def make_events(
    rng: np.random.Generator, record_type: int, n: int, *, big_gaps: bool = True
) -> list[tuple[str, int, int, int]]:
    """Events in record order: (kind, time, channel or marker bits, dtime).

    Time is in ticks (T2) or syncs (T3); kind is 'photon' or 'marker'.
    Channels use labctl numbering (T2 HydraHarp family: 0 = sync event).
    """
    fam, t3 = FAMILY[record_type]
    wrap = WRAP[(fam, t3)]
    bins = (4096 if fam == "pico" else 32768) if t3 else 0
    out = []
    t = 0
    for _ in range(n):
        u = rng.random()
        if u < 0.02:
            gap = int(rng.integers(1, 5)) * wrap + int(rng.integers(0, wrap))
        elif big_gaps and u < 0.025:
            # T3: > 1023 wraps, several V2 overflow records; T2: < 128 wraps (see
            # test_v2_t2_overflow_count_of_128_or_more for ptufile and larger counts)
            gap = int(rng.integers(1025, 2500) if t3 else rng.integers(100, 128)) * wrap
        else:
            gap = int(rng.integers(0, wrap // 3))
        t += gap
        if rng.random() < 0.06:
            bits = int(rng.integers(1, 16))
            if fam == "pico" and not t3:
                t = ((t >> 4) + 1) << 4 | bits  # PicoHarp T2: marker bits are the low time bits
            out.append(("marker", t, bits, 0))
        else:
            if fam == "pico":
                ch = int(rng.integers(1 if t3 else 0, 5))
            else:
                ch = int(rng.integers(1 if t3 else 0, 65))
            dt = int(rng.integers(0, bins)) if t3 else 0
            out.append(("photon", t, ch, dt))
    return out


def encode_events(events: list[tuple[str, int, int, int]], record_type: int) -> np.ndarray:
    fam, t3 = FAMILY[record_type]
    wrap = WRAP[(fam, t3)]
    max_k = 1023 if t3 else (1 << 25) - 1
    out: list[int] = []
    ofl = 0
    for kind, t, val, dt in events:
        while t - ofl >= wrap:
            k = min((t - ofl) // wrap, max_k) if fam == "hh2" else 1
            if fam == "pico":
                out.append(0xF << 28)
            else:
                out.append(1 << 31 | 63 << 25 | (k if fam == "hh2" else 0))
            ofl += k * wrap
        low = t - ofl
        if fam == "pico" and not t3:
            out.append((15 << 28 | low) if kind == "marker" else (val << 28 | low))
        elif fam == "pico":
            if kind == "marker":
                out.append(15 << 28 | val << 16 | low)
            else:
                out.append(val << 28 | dt << 16 | low)
        elif not t3:
            if kind == "marker":
                out.append(1 << 31 | val << 25 | low)
            elif val == 0:
                out.append(1 << 31 | low)  # sync event
            else:
                out.append((val - 1) << 25 | low)
        elif kind == "marker":
            out.append(1 << 31 | val << 25 | low)
        else:
            out.append((val - 1) << 25 | dt << 10 | low)
    return np.array(out, dtype=np.uint32)


def exact_ps(ticks: Any, res_s: float, dtime: Any = None, bin_s: float | None = None) -> np.ndarray:
    """round-half-up(ticks * res + dtime * bin) in ps, exactly, res taken as repr(float)."""
    g = Fraction(repr(res_s)) * 10**12
    r = Fraction(repr(bin_s)) * 10**12 if bin_s is not None else Fraction(0)
    ticks = [int(x) for x in ticks]
    dts = [0] * len(ticks) if dtime is None else [int(x) for x in dtime]
    return np.array(
        [math.floor(t * g + d * r + Fraction(1, 2)) for t, d in zip(ticks, dts, strict=True)],
        dtype=np.int64,
    )


def expected(events: list[tuple[str, int, int, int]], record_type: int) -> dict[str, np.ndarray]:
    g, r = RESOLUTION[record_type]
    t3 = FAMILY[record_type][1]
    ph = [e for e in events if e[0] == "photon"]
    mk = [e for e in events if e[0] == "marker"]
    out = {
        "time": np.array([e[1] for e in ph], dtype=np.int64),
        "channel": np.array([e[2] for e in ph], dtype=np.uint8),
        "dtime": np.array([e[3] for e in ph], dtype=np.uint16),
        "marker_time": np.array([e[1] for e in mk], dtype=np.int64),
        "marker_bits": np.array([e[2] for e in mk], dtype=np.uint8),
    }
    if t3:
        out["timestamp_ps"] = exact_ps(out["time"], g, out["dtime"], r)
        out["marker_ps"] = exact_ps(out["marker_time"], g)
    else:
        out["timestamp_ps"] = exact_ps(out["time"], g)
        out["marker_ps"] = exact_ps(out["marker_time"], g)
    return out


def check_truth(data: ptu.PtuBlock, exp: dict[str, np.ndarray], t3: bool) -> None:
    np.testing.assert_array_equal(data.timestamp_ps, exp["timestamp_ps"])
    np.testing.assert_array_equal(data.channel, exp["channel"])
    np.testing.assert_array_equal(data.marker_timestamp_ps, exp["marker_ps"])
    np.testing.assert_array_equal(data.marker_bits, exp["marker_bits"])
    assert data.timestamp_ps.dtype == np.int64 and data.channel.dtype == np.uint8
    if t3:
        assert data.sync_count is not None and data.dtime_bins is not None
        assert data.marker_sync_count is not None
        np.testing.assert_array_equal(data.sync_count, exp["time"])
        np.testing.assert_array_equal(data.dtime_bins, exp["dtime"])
        np.testing.assert_array_equal(data.marker_sync_count, exp["marker_time"])
    else:
        assert data.sync_count is None and data.dtime_bins is None


# --------------------------------------------------------------------------- reference readers


def check_ptufile(path: Path, data: ptu.PtuData) -> None:
    """labctl's events equal ptufile's decoding (channel numbering mapped)."""
    import ptufile

    rt = data.header.record_type
    g, r = data.header.global_resolution_s, data.header.resolution_s
    with ptufile.PtuFile(path) as pf:
        dec = pf.decode_records()
    photon = dec["channel"] >= 0
    marker = dec["marker"] > 0
    ticks = dec["time"][photon].astype(np.int64)
    ch = dec["channel"][photon].astype(np.int64)
    if rt.is_t3:
        dtime = dec["dtime"][photon]
        np.testing.assert_array_equal(data.sync_count, ticks)
        np.testing.assert_array_equal(data.dtime_bins, dtime)
        np.testing.assert_array_equal(data.timestamp_ps, exact_ps(ticks, g, dtime, r))
        np.testing.assert_array_equal(data.channel, ch + 1)  # ptufile counts from 0
        np.testing.assert_array_equal(data.marker_sync_count, dec["time"][marker])
    else:
        np.testing.assert_array_equal(data.timestamp_ps, exact_ps(ticks, g))
        if rt.kernel_kind == 0:
            np.testing.assert_array_equal(data.channel, ch)  # PicoHarp T2: same codes
        else:  # ptufile gives sync events and input 1 both channel 0
            lab = data.channel.astype(np.int64)
            np.testing.assert_array_equal(np.where(lab == 0, 0, lab - 1), ch)
    np.testing.assert_array_equal(data.marker_timestamp_ps, exact_ps(dec["time"][marker], g))
    np.testing.assert_array_equal(data.marker_bits, dec["marker"][marker])


def check_tttrlib(path: Path, data: ptu.PtuData) -> None:
    """labctl's events equal tttrlib's reading of the same file."""
    import tttrlib

    rt = data.header.record_type
    tt = tttrlib.TTTR(str(path), "PTU")
    macro = np.asarray(tt.get_macro_times(), dtype=np.int64)
    rc = np.asarray(tt.get_routing_channel(), dtype=np.int64)
    et = np.asarray(tt.get_event_type(), dtype=np.int64)
    micro = np.asarray(tt.get_micro_times(), dtype=np.int64)
    g = data.header.global_resolution_s
    if rt.kernel_kind == 0 and rt.is_t3:
        # tttrlib 0.26.2: PicoHarp T3 markers are event type 0 on channel 15, and
        # photons with dtime 0 get event type 1; classify by channel alone
        photon, marker = rc != 15, rc == 15
        lab_ch, bits = rc[photon], micro[marker]
    elif rt.kernel_kind == 0:
        photon, marker = et == 0, et == 1
        lab_ch, bits = rc[photon], rc[marker]
    else:  # HydraHarp family: T2 sync = event type 1 on routing channel 0
        sync = (et == 1) & (rc == 0) if not rt.is_t3 else np.zeros_like(et, dtype=bool)
        photon, marker = (et == 0) | sync, (et == 1) & ~sync
        lab_ch, bits = np.where(sync, 0, rc + 1)[photon], rc[marker]
    np.testing.assert_array_equal(data.channel, lab_ch)
    np.testing.assert_array_equal(data.marker_bits, bits)
    if rt.is_t3:
        np.testing.assert_array_equal(data.sync_count, macro[photon])
        np.testing.assert_array_equal(data.dtime_bins, micro[photon])
        np.testing.assert_array_equal(data.marker_sync_count, macro[marker])
    else:
        np.testing.assert_array_equal(data.timestamp_ps, exact_ps(macro[photon], g))
        np.testing.assert_array_equal(data.marker_timestamp_ps, exact_ps(macro[marker], g))


# --------------------------------------------------------------------------- every record type

ALL_TYPES = sorted(FAMILY)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, list, np.ndarray]]:
    """One file per record type from the test writer: (path, events, records)."""
    folder = tmp_path_factory.mktemp("ptu")
    out = {}
    for i, rt in enumerate(ALL_TYPES):
        events = make_events(np.random.default_rng(100 + i), rt, 1500)
        records = encode_events(events, rt)
        g, r = RESOLUTION[rt]
        out[rt] = (ptu_file(folder / f"{rt:08x}.ptu", rt, records, g, r), events, records)
    return out


@pytest.mark.parametrize("record_type", ALL_TYPES, ids=lambda rt: RecordType(rt).name)
def test_every_record_type_matches_written_events(written: dict, record_type: int) -> None:
    path, events, records = written[record_type]
    data = read_ptu(path)
    t3 = FAMILY[record_type][1]
    assert data.header.record_type == record_type and data.mode == ("T3" if t3 else "T2")
    assert data.n_records == len(records) and not data.truncated
    check_truth(data, expected(events, record_type), t3)
    assert data.n_overflows == (events[-1][1] // WRAP[FAMILY[record_type]])
    if not t3:
        assert np.all(np.diff(data.timestamp_ps) >= 0)
    if HAVE_PTUFILE:
        check_ptufile(path, data)
    if HAVE_TTTRLIB:
        check_tttrlib(path, data)


@needs_ptufile
@pytest.mark.parametrize("record_type", [0x00010303, 0x00010307], ids=["PicoHarpT3", "GenericT3"])
def test_files_written_by_ptufile(tmp_path: Path, record_type: int) -> None:
    """ptufile's own writer (T3 image mode: photons, line/frame markers, overflows)."""
    import ptufile

    rng = np.random.default_rng(7)
    n_ch = 2
    hist = rng.integers(0, 4, size=(2, 12, 10, n_ch, 96)).astype(np.uint16)  # T Y X C H
    path = tmp_path / "ptufile_written.ptu"
    ptufile.imwrite(
        path,
        hist,
        12.5e-9,
        12.5e-9 / 96,
        pixel_time=2e-5,
        record_type=ptufile.PtuRecordType(record_type),
    )
    data = read_ptu(path)
    assert data.header.record_type == record_type
    assert data.n_overflows > 0 and data.marker_bits.size > 0
    check_ptufile(path, data)
    if HAVE_TTTRLIB:
        check_tttrlib(path, data)
    # the histogram ptufile encoded, recovered from labctl's events
    for c in range(n_ch):
        dt = data.dtime_bins[data.channel == c + 1]
        np.testing.assert_array_equal(
            np.bincount(dt, minlength=96), hist[..., c, :].sum(axis=(0, 1, 2))
        )
    assert len(data) == int(hist.sum())
    # ptufile's header tags came through
    assert data.header.tags["CreatorSW_Name"] == "ptufile.py"
    assert isinstance(data.header.tags["File_CreatingTime"], datetime)


def _packaged_samples() -> list[Path]:
    found: list[Path] = []
    for name in ("ptufile", "tttrlib", "phconvert"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        roots = [Path(spec.origin).parent]
        if spec.submodule_search_locations is None:  # a single-module package (tttrlib)
            roots = [p for p in roots[0].glob(f"{name}*") if p.is_dir()]
        for root in roots:
            found += [p for p in root.rglob("*") if p.suffix.lower() == ".ptu"]
    return sorted(set(found))


@pytest.mark.parametrize("sample", _packaged_samples() or [None])
def test_packaged_sample_files(sample: Path | None) -> None:
    """Any *.ptu shipped inside ptufile / tttrlib / phconvert (none ship any today)."""
    if sample is None:
        pytest.skip("no .ptu sample files inside the installed ptufile/tttrlib/phconvert")
    data = read_ptu(sample)
    if HAVE_PTUFILE:
        check_ptufile(sample, data)
    if HAVE_TTTRLIB:
        check_tttrlib(sample, data)


# --------------------------------------------------------------------------- overflow details


@needs_ptufile
@pytest.mark.parametrize(
    ("record_type", "wrap"),
    [(0x01010204, 1 << 25), (0x00010207, 1 << 25), (0x01010304, 1024), (0x00010307, 1024)],
)
def test_v2_overflow_count_zero_counts_as_one(tmp_path: Path, record_type: int, wrap: int) -> None:
    """A V2+ overflow record with count 0 is one wrap (PicoQuant's reader, ptufile)."""
    t3 = FAMILY[record_type][1]
    photon = (2 << 25 | 5 << 10 | 7) if t3 else (2 << 25 | 7)
    overflow = 1 << 31 | 63 << 25
    records = np.array([photon, overflow | 0, photon, overflow | 3, photon], dtype=np.uint32)
    path = ptu_file(tmp_path / "ofl0.ptu", record_type, records, *RESOLUTION[record_type])
    data = read_ptu(path)
    times = data.sync_count if t3 else None
    if t3:
        np.testing.assert_array_equal(times, [7, 7 + wrap, 7 + 4 * wrap])
    assert data.n_overflows == 4
    check_ptufile(path, data)


@pytest.mark.parametrize("count", [127, 128, 5000, (1 << 25) - 1, 1 << 25, 3 << 25])
def test_v2_t2_overflow_count_of_128_or_more(tmp_path: Path, count: int) -> None:
    """Long silences: one V2 T2 overflow record stands for up to 2**25 - 1 wraps.

    tttrlib agrees with labctl. ptufile 2026.2.6 multiplies the count by 2**25
    in 32-bit arithmetic, so from 128 wraps on its times are short by a
    multiple of 2**32 ticks; the test pins that down instead of failing on it.
    """
    ticks = np.array([3, count * (1 << 25) + 7], dtype=np.int64)
    events = [("photon", int(t), 2, 0) for t in ticks]
    records = encode_events(events, 0x00010207)
    assert records.size == 2 + -(-count // ((1 << 25) - 1))  # overflow records hold < 2**25
    path = ptu_file(tmp_path / "silence.ptu", 0x00010207, records, 5e-12)
    data = read_ptu(path)
    np.testing.assert_array_equal(data.timestamp_ps, ticks * 5)
    assert data.n_overflows == count
    if HAVE_TTTRLIB:
        check_tttrlib(path, data)
    if HAVE_PTUFILE:
        import ptufile

        with ptufile.PtuFile(path) as pf:
            dec = pf.decode_records()
        ref = dec["time"][dec["channel"] >= 0].astype(np.int64)
        assert np.all((ticks - ref) % (1 << 32) == 0)
        if count < 128:
            np.testing.assert_array_equal(ref, ticks)


def test_v1_overflow_ignores_count_field(tmp_path: Path) -> None:
    """HydraHarp V1 wraps by 33 552 000 ticks (T2) / 1024 syncs (T3) per record."""
    overflow = 1 << 31 | 63 << 25 | 5  # count field set: V1 ignores it
    t2 = ptu_file(tmp_path / "v1t2.ptu", 0x00010204, np.array([overflow, 3], np.uint32), 1e-12)
    np.testing.assert_array_equal(read_ptu(t2).timestamp_ps, [33_552_003])
    t3 = ptu_file(
        tmp_path / "v1t3.ptu", 0x00010304, np.array([overflow, 9 << 10 | 3], np.uint32), 25e-9
    )
    assert read_ptu(t3).sync_count.tolist() == [1027]


def test_non_integer_resolution_rounds_to_nearest_ps(tmp_path: Path) -> None:
    g = 1 / 79.9987e6  # 12500.203... ps sync period
    r = 80e-12 / 3  # 26.666... ps bins
    sync = np.array([0, 1, 3, 10**6, 10**9, 7 * 10**11], dtype=np.int64)
    dtime = np.array([0, 1, 2, 3, 2000, 32767], dtype=np.int64)
    rec = ptu.encode_t3_records(sync, dtime, np.ones(6, np.uint8), RecordType.GENERIC_T3)
    path = ptu_file(tmp_path / "round.ptu", 0x00010307, rec, g, r)
    data = read_ptu(path)
    np.testing.assert_array_equal(data.timestamp_ps, exact_ps(sync, g, dtime, r))
    rec2 = ptu.encode_t2_records(sync, np.ones(6), 0x00010207)
    t2 = ptu_file(tmp_path / "round2.ptu", 0x00010207, rec2, r)
    np.testing.assert_array_equal(read_ptu(t2).timestamp_ps, exact_ps(sync, r))


# --------------------------------------------------------------------------- chunking

# the module-scoped ``written`` fixture is read-only, so sharing it across examples is safe
FIXTURE_OK = [HealthCheck.function_scoped_fixture]
CHUNK_TYPES = [0x00010203, 0x00010204, 0x00010207, 0x00010303, 0x00010304, 0x01010304]


def _concat(blocks: list[ptu.PtuBlock]) -> dict[str, np.ndarray]:
    keys = ["timestamp_ps", "channel", "marker_timestamp_ps", "marker_bits"]
    if blocks[0].mode == "T3":
        keys += ["sync_count", "dtime_bins", "marker_sync_count"]
    return {k: np.concatenate([getattr(b, k) for b in blocks]) for k in keys}


@pytest.mark.parametrize("record_type", CHUNK_TYPES, ids=lambda rt: RecordType(rt).name)
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1600), max_size=12))
def test_any_split_decodes_identically(written: dict, record_type: int, cuts: list[int]) -> None:
    _, _, records = written[record_type]
    g, r = RESOLUTION[record_type]
    whole = PtuDecoder(record_type, g, r).decode(records)
    decoder = PtuDecoder(record_type, g, r)
    edges = [0, *sorted(min(c, records.size) for c in cuts), records.size]
    blocks = [decoder.decode(records[a:b]) for a, b in itertools.pairwise(edges)]
    got, ref = _concat(blocks), _concat([whole])
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert sum(b.n_overflows for b in blocks) == whole.n_overflows
    assert [b.record_start for b in blocks] == edges[:-1]


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(block=st.integers(min_value=1, max_value=2000), which=st.sampled_from(CHUNK_TYPES))
def test_iter_ptu_any_block_size(written: dict, block: int, which: int) -> None:
    path, _, records = written[which]
    whole = read_ptu(path)
    blocks = list(iter_ptu(path, block_records=block))
    assert len(blocks) == max(1, -(-records.size // block))
    assert blocks[-1].is_last and not any(b.is_last for b in blocks[:-1])
    got, ref = _concat(blocks), _concat([whole])
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    # horizons never decrease and never pass a photon still to come
    horizons = [b.horizon_ps for b in blocks]
    assert horizons == sorted(horizons)
    still_to_come = np.iinfo(np.int64).max  # earliest photon of the later blocks
    for b in reversed(blocks):
        assert b.horizon_ps <= still_to_come
        if len(b):
            still_to_come = min(still_to_come, int(b.timestamp_ps.min()))


# --------------------------------------------------------------------------- header tags


def test_header_tag_types(tmp_path: Path) -> None:
    extra = b"".join(
        [
            entry("Empty", T_EMPTY8, bytes(8)),
            int_tag("Flag", 1, T_BOOL8),
            int_tag("Bits", 0x5A, T_BITSET64),
            int_tag("Colour", 0x00FF00, T_COLOR8),
            float_tag("When", 45000.5, T_TDATETIME),
            var_tag("Floats", T_FLOAT8ARRAY, struct.pack("<3d", 1.5, -2.0, 3.25)),
            var_tag("Wide", T_WIDE, "µs-Ω\0".encode("utf-16-le")),
            var_tag("Blob", T_BLOB, b"\x01\x02\x03"),
            int_tag("HW_InpChan", 7, index=0),
            int_tag("HW_InpChan", 9, index=2),
            var_tag("Comment", T_ANSI, "caf\xe9\0".encode("cp1252")),
        ]
    )
    path = ptu_file(tmp_path / "tags.ptu", 0x00010203, np.zeros(0, np.uint32), 4e-12, extra=extra)
    hdr = read_header(path)
    tags = hdr.tags
    assert tags["Empty"] is None and tags["Flag"] is True
    assert tags["Bits"] == 0x5A and tags["Colour"] == 0x00FF00
    assert tags["When"] == datetime(2023, 3, 15, 12, 0)
    np.testing.assert_array_equal(tags["Floats"], [1.5, -2.0, 3.25])
    assert tags["Wide"] == "µs-Ω" and tags["Comment"] == "café"
    assert tags["Blob"].rstrip(b"\0") == b"\x01\x02\x03"
    assert tags["HW_InpChan"] == [7, None, 9]
    assert tags["TTResultFormat_TTTRRecType"] == 0x00010203
    assert tags["TTResult_NumberOfRecords"] == 0
    assert hdr.record_type is RecordType.PICOHARP_T2 and hdr.mode == "T2"
    assert hdr.global_resolution_s == 4e-12 and hdr.n_records == 0
    assert hdr.records_offset_bytes == path.stat().st_size
    data = read_ptu(path)
    assert len(data) == 0 and data.marker_bits.size == 0


# --------------------------------------------------------------------------- malformed files


def _expect_error(path: Path, offset: int, *words: str, **kwargs: Any) -> PtuFormatError:
    with pytest.raises(PtuFormatError) as info:
        read_ptu(path, **kwargs)
    err = info.value
    assert str(path) in str(err)
    assert err.offset_bytes == offset and f"at byte {offset}" in str(err)
    for word in words:
        assert word in str(err)
    return err


def _good_bytes(record_type: int = 0x00010207, n: int = 50) -> tuple[bytes, int]:
    events = make_events(np.random.default_rng(3), record_type, n, big_gaps=False)
    records = encode_events(events, record_type)
    head = header_bytes(record_type, records.size, *RESOLUTION[record_type])
    return head + records.tobytes(), len(head)


def test_bad_magic(tmp_path: Path) -> None:
    raw, _ = _good_bytes()
    path = tmp_path / "histo.phu"
    path.write_bytes(b"PQHISTO\0" + raw[8:])
    _expect_error(path, 0, "magic")
    (tmp_path / "empty.ptu").write_bytes(b"")
    _expect_error(tmp_path / "empty.ptu", 0, "magic")


def test_truncated_header(tmp_path: Path) -> None:
    raw, rec_off = _good_bytes()
    tag_at = raw.index(b"TTResult_NumberOfRecords")
    path = tmp_path / "cut.ptu"
    path.write_bytes(raw[: tag_at + 20])  # inside a tag entry
    _expect_error(path, tag_at, "Header_End", "not terminated")
    path.write_bytes(raw[: rec_off - 48])  # every entry whole, no Header_End
    _expect_error(path, rec_off - 48, "Header_End")
    with pytest.raises(PtuFormatError):
        read_header(path)


def test_string_length_beyond_end_of_file(tmp_path: Path) -> None:
    head = header_bytes(0x00010207, 0, 5e-12, 5e-12, end=False)
    path = tmp_path / "longstr.ptu"
    path.write_bytes(head + var_tag("File_Comment", T_ANSI, b"short", declared=4096))
    err = _expect_error(path, len(head), "File_Comment", "beyond the end")
    assert "4096" in str(err)
    path.write_bytes(head + var_tag("Blob", T_BLOB, b"", declared=-8))
    _expect_error(path, len(head), "Blob")


def test_unknown_tag_type(tmp_path: Path) -> None:
    head = header_bytes(0x00010207, 0, 5e-12, 5e-12, end=False)
    path = tmp_path / "tagtype.ptu"
    end = entry("Header_End", T_EMPTY8, bytes(8))
    path.write_bytes(head + entry("Weird", 0x12345678, bytes(8)) + end)
    _expect_error(path, len(head), "unknown tag type", "0x12345678", "Weird")


def test_unknown_record_type_and_bad_tags(tmp_path: Path) -> None:
    path = ptu_file(tmp_path / "rt.ptu", 0x00010208, np.zeros(4, np.uint32), 5e-12)
    offset = path.read_bytes().index(b"TTResultFormat_TTTRRecType")
    _expect_error(path, offset, "unknown record type", "0x00010208")
    raw = path.read_bytes().replace(b"TTResultFormat_TTTRRecType", b"TTResultFormat_Other______")
    path.write_bytes(raw)
    _expect_error(path, raw.index(b"Header_End") + 48, "TTResultFormat_TTTRRecType")
    bits = int_tag("TTResultFormat_BitsPerRecord", 16)
    path = ptu_file(tmp_path / "bits.ptu", 0x00010207, np.zeros(4, np.uint32), 5e-12, extra=bits)
    _expect_error(path, path.read_bytes().rindex(b"TTResultFormat_BitsPerRecord"), "32-bit")


def test_truncated_record_section(tmp_path: Path) -> None:
    raw, rec_off = _good_bytes(n=200)
    n_full = (len(raw) - rec_off) // 4
    keep = n_full - 7
    path = tmp_path / "short.ptu"
    path.write_bytes(raw[: rec_off + keep * 4 + 2])  # 7 records missing, the last one partial
    end = rec_off + keep * 4
    with pytest.warns(PtuTruncatedWarning, match=rf"short\.ptu: at byte {end}: .*partial"):
        data = read_ptu(path)
    assert data.truncated and data.n_records == keep
    assert data.header.n_records_declared == n_full
    ref = PtuDecoder(0x00010207, *RESOLUTION[0x00010207]).decode(
        np.frombuffer(raw[rec_off : rec_off + keep * 4], "<u4")
    )
    np.testing.assert_array_equal(data.timestamp_ps, ref.timestamp_ps)
    _expect_error(path, end, "truncated", str(n_full), strict=True)
    with pytest.warns(PtuTruncatedWarning, match=f"at byte {end}"):
        blocks = list(iter_ptu(path, block_records=16))
    assert sum(b.n_records for b in blocks) == keep


def test_zero_declared_records_reads_whole_file(tmp_path: Path) -> None:
    events = make_events(np.random.default_rng(5), 0x00010204, 80, big_gaps=False)
    records = encode_events(events, 0x00010204)
    path = ptu_file(tmp_path / "zero.ptu", 0x00010204, records, 1e-12, n_declared=0)
    with pytest.warns(PtuTruncatedWarning, match="TTResult_NumberOfRecords is 0"):
        data = read_ptu(path, strict=True)
    assert data.n_records == records.size and not data.truncated
    check_truth(data, expected(events, 0x00010204), t3=False)


def test_invalid_record_names_offset(tmp_path: Path) -> None:
    records = np.array([1 << 28 | 5, 2 << 28 | 9, 7 << 28 | 11, 1 << 28 | 20], np.uint32)
    path = ptu_file(tmp_path / "bad.ptu", 0x00010203, records, 4e-12)
    rec_off = read_header(path).records_offset_bytes
    _expect_error(path, rec_off + 8, "0x7000000B", "channel code 7", "record 2")
    data = read_ptu(path, on_invalid="skip")
    assert data.n_invalid == 1 and data.channel.tolist() == [1, 2, 1]
    assert data.timestamp_ps.tolist() == [20, 36, 80]
    hh = np.array([3, 1 << 31 | 20 << 25 | 4], np.uint32)  # special channel 20
    path = ptu_file(tmp_path / "bad_hh.ptu", 0x00010207, hh, 5e-12)
    _expect_error(path, read_header(path).records_offset_bytes + 4, "channel 20")
    with pytest.raises(PtuFormatError, match=r"<records>: at byte 4:"):
        PtuDecoder(0x00010307, 12.5e-9, 5e-12).decode(np.array([3, 1 << 31 | 3], np.uint32))
    with pytest.raises(PtuFormatError, match="unknown record type"):
        PtuDecoder(0x12345, 1e-12)


def test_out_of_order_t2_is_sorted_with_warning(tmp_path: Path) -> None:
    records = np.array([1 << 25 | 50, 2 << 25 | 40, 1 << 25 | 60], np.uint32)
    path = ptu_file(tmp_path / "order.ptu", 0x00010207, records, 1e-12)
    with pytest.warns(UserWarning, match="out of time order"):
        data = read_ptu(path)
    assert data.timestamp_ps.tolist() == [40, 50, 60] and data.channel.tolist() == [3, 2, 2]
    assert data.n_out_of_order == 1
    assert next(iter_ptu(path)).timestamp_ps.tolist() == [50, 40, 60]


# --------------------------------------------------------------------------- writer, engine, bench


@pytest.mark.parametrize("record_type", ALL_TYPES, ids=lambda rt: RecordType(rt).name)
def test_labctl_writer_read_by_ptufile(tmp_path: Path, record_type: int) -> None:
    """labctl's encoder + write_ptu produce files the independent readers agree on."""
    records, g, r = ptu.synthetic_records(3000, record_type, count_rate_hz=2e7, seed=4)
    path = tmp_path / "synthetic.ptu"
    ptu.write_ptu(path, records, record_type=record_type, global_resolution_s=g, resolution_s=r)
    data = read_ptu(path)
    assert len(data) == 3000
    if HAVE_PTUFILE:
        check_ptufile(path, data)
    if HAVE_TTTRLIB:
        check_tttrlib(path, data)


def test_tag_batch_for_the_engine(written: dict) -> None:
    from drivers.tdc import TagBatch

    for rt in (0x01010204, 0x00010307):
        path, _, _ = written[rt]
        data = read_ptu(path)
        batch = data.to_tag_batch()
        assert isinstance(batch, TagBatch) and len(batch) == len(data)
        assert np.all(np.diff(batch.timestamp_ps) >= 0)
        assert batch.horizon_ps == int(data.timestamp_ps.max()) + 1
        np.testing.assert_array_equal(np.sort(batch.timestamp_ps), np.sort(data.timestamp_ps))


def test_decode_benchmark_smoke() -> None:
    records, g, _ = ptu.synthetic_records(20_000, RecordType.GENERIC_T2)
    result = ptu.decode_benchmark(
        records, record_type=RecordType.GENERIC_T2, global_resolution_s=g, repeats=1
    )
    assert result["n_records"] == records.size and result["labctl_mrec_s"] > 0
    assert result["labctl_file_mrec_s"] > 0
    if HAVE_PTUFILE:
        assert result["ptufile_mrec_s"] > 0 and result["ratio"] > 0
    else:
        assert result["ratio"] is None


def test_no_warnings_on_good_file(written: dict) -> None:
    path, _, _ = written[0x00010203]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ptu(path)
        list(iter_ptu(path, block_records=100))

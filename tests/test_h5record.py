"""The HDF5 recording engine and its reader: round trips, SWMR following from another
process, the overrun policy, writer errors, refused files, and SIGKILL at random moments."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labctl import h5read
from labctl.h5read import Gap, RecordingError, open_recording
from labctl.h5record import (
    COMMIT_PATH,
    DEFAULT_CHUNK_BYTES,
    EVENTS_TABLE,
    STRING,
    FormatId,
    Recorder,
    RecorderError,
    RecorderOverrun,
    Schema,
    Static,
    Table,
    decode_commit,
    encode_commit,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE_OK = HealthCheck.function_scoped_fixture  # tmp_path_factory makes one dir per example
FMT = FormatId("labctl-test", (1, 2))

# The crash test's child and this module build the same schema and the same rows from this
# one source: row i of every table is a fixed function of i, so the test checks content.
CRASH_MODEL = textwrap.dedent(
    """
    import json
    import numpy as np
    from labctl.h5record import STRING, FormatId, Schema, Table

    STATUS = np.dtype([("t_s", "<f8"), ("index", "<i8"), ("power_w", "<f4"), ("ok", "?")])
    NOTE = np.dtype([("index", "<i8"), ("json", STRING)])

    def crash_schema():
        return Schema(FormatId("labctl-crash", (1, 0)), [
            Table("raw/codes", np.int16, (2, 128), chunk_rows=64, compression="gzip"),
            Table("raw/fast", np.float64, chunk_rows=4096),
            Table("derived/status", STATUS, chunk_rows=512, compression="lzf"),
            Table("text/log", STRING, chunk_rows=256),
            Table("text/notes", NOTE, chunk_rows=128),
        ])

    def crash_rows(table, start, n):
        i = np.arange(start, start + n, dtype=np.int64)
        if table == "raw/codes":
            grid = i[:, None] * 31 + np.arange(256)
            return ((grid % 65536) - 32768).astype(np.int16).reshape(n, 2, 128)
        if table == "raw/fast":
            return i * 0.5
        if table == "derived/status":
            out = np.zeros(n, STATUS)
            out["t_s"] = i * 1e-3
            out["index"] = i
            out["power_w"] = (i % 1000).astype(np.float32) / np.float32(7)
            out["ok"] = i % 2 == 0
            return out
        if table == "text/log":
            return np.array([f"row {k}: " + "é" * (k % 17) for k in i], dtype=object)
        out = np.zeros(n, NOTE)
        out["index"] = i
        out["json"] = [json.dumps({"i": int(k), "µ": [1, 2]}) for k in i]
        return out
    """
)
_model: dict = {}
exec(CRASH_MODEL, _model)
crash_schema = _model["crash_schema"]
crash_rows = _model["crash_rows"]
CRASH_TABLES = ("raw/codes", "raw/fast", "derived/status", "text/log", "text/notes")

CRASH_CHILD = CRASH_MODEL + textwrap.dedent(
    """
    import sys, time
    from labctl.h5record import Recorder

    path, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    rec = Recorder(path, crash_schema(), flush_interval_s=0.1)
    print(json.dumps({"ready": time.monotonic()}), flush=True)
    n = dict.fromkeys(["raw/codes", "raw/fast", "derived/status", "text/log", "text/notes"], 0)
    loop = 0
    while True:
        k = int(rng.integers(1, 9))  # tables grow at different, irregular rates
        plan = {"raw/codes": k, "raw/fast": 50, "derived/status": 1,
                "text/log": 1 if loop % 3 == 0 else 0, "text/notes": 1 if loop % 5 == 0 else 0}
        for table, m in plan.items():
            if m:
                rec.append(table, crash_rows(table, n[table], m))
                n[table] += m
        st = rec.stats()
        committed = {t: st.tables[t].rows_committed for t in n}
        print(json.dumps({"t": time.monotonic(), "appended": n, "committed": committed}),
              flush=True)
        loop += 1
        time.sleep(0.002)
    """
)


def small_schema(**kwargs: object) -> Schema:
    return Schema(
        FMT,
        [
            Table("raw/x", np.float64, chunk_rows=16, units="V", description="test volts"),
            Table("log", STRING, chunk_rows=16),
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def python_child(code: str, *args: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


#: Hang guard for waits on a child process: far beyond anything a healthy child needs, so
#: it never decides a result; a stuck child fails the test instead of hanging the run.
HANG_GUARD_S = 120.0


def lines_of(child: subprocess.Popen) -> queue.Queue[str]:
    """A child's stdout lines, read by a daemon thread ("" at end of file), so that waiting
    for one can time out (a blocking readline on a stuck child would hang the test run)."""
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in child.stdout:  # type: ignore[union-attr]
            out.put(line)
        out.put("")

    threading.Thread(target=read, daemon=True).start()
    return out


def next_line(child: subprocess.Popen, lines: queue.Queue[str]) -> str:
    """The child's next line; on end of file or a stuck child: kill it, fail with its stderr."""
    try:
        line = lines.get(timeout=HANG_GUARD_S)
    except queue.Empty:
        line = ""
    if not line:
        child.kill()
        child.wait()
        pytest.fail(f"the child ended or hung; its stderr:\n{child.stderr.read()}")  # type: ignore[union-attr]
    return line


class HeldRecorder(Recorder):
    """A recorder whose writer waits at ``gate`` before writing rows (set ``entered``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _write_rows(self, k: int, rows: np.ndarray) -> None:
        self.entered.set()
        self.gate.wait(HANG_GUARD_S)
        super()._write_rows(k, rows)


def assert_rows_equal(got: np.ndarray, expected: np.ndarray) -> None:
    """Exact equality, field by field (text compared as str, numbers bit for bit)."""
    assert got.shape == expected.shape
    if expected.dtype.names is None:
        if expected.dtype.kind == "O":
            assert got.tolist() == expected.tolist()
        else:  # bit for bit in the dtype read (np.concatenate may change the byte order)
            assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
            assert got.tobytes() == expected.astype(got.dtype).tobytes()
        return
    assert got.dtype.names == expected.dtype.names
    for name in expected.dtype.names:
        assert_rows_equal(np.ascontiguousarray(got[name]), np.ascontiguousarray(expected[name]))


# -- round trips ----------------------------------------------------------------------------
NUMERIC = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
    np.dtype("S6"),
    np.dtype(">i4"),  # big-endian stays big-endian
    np.dtype([("t_s", "<f8"), ("code", "<i2"), ("iq", "<f4", (2,)), ("flag", "?")]),
    np.dtype([("outer", [("a", "<u1"), ("b", "<f8")]), ("n", "<i8")]),  # nested
    np.dtype({"names": ["a", "b"], "formats": ["<i2", "<f8"], "aligned": True}),  # padding
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    dtype=st.sampled_from(NUMERIC),
    row_shape=st.sampled_from([(), (3,), (2, 5)]),
    compression=st.sampled_from([None, "gzip", "lzf"]),
    chunk_rows=st.integers(1, 9),
)
def test_round_trip_every_fixed_dtype(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    dtype: np.dtype,
    row_shape: tuple[int, ...],
    compression: str | None,
    chunk_rows: int,
) -> None:
    """Whatever rows, in whatever batches, come back bit for bit (all kinds, all codecs)."""
    dtype = np.dtype(dtype)
    batches = data.draw(
        st.lists(
            hnp.arrays(dtype, st.tuples(st.integers(0, 7)).map(lambda n: (n[0], *row_shape))),
            min_size=1,
            max_size=5,
        )
    )
    path = tmp_path_factory.mktemp("rt") / "r.h5"
    schema = Schema(FMT, [Table("t", dtype, row_shape, chunk_rows, compression)])
    with Recorder(path, schema, flush_interval_s=0.05) as rec:
        firsts = [rec.append("t", b) for b in batches]
    expected = np.concatenate(batches)
    assert firsts == list(np.cumsum([0] + [len(b) for b in batches[:-1]]))
    with open_recording(path, expected_format=FMT) as r:
        assert r.complete
        assert r.rows("t") == len(expected)
        assert_rows_equal(r.table("t"), expected)
        info = r.info("t")
        assert (info.dtype, info.row_shape, info.chunk_rows) == (dtype, row_shape, chunk_rows)
        assert info.compression == compression
        k = data.draw(st.integers(0, len(expected)))
        assert_rows_equal(r.table("t", k), expected[k:])


TEXTS = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(TEXTS, max_size=6), min_size=1, max_size=4))
def test_round_trip_text(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[str]]
) -> None:
    """Variable-length UTF-8 text, alone, in a structured row and per-row arrays of text."""
    note = np.dtype([("index", "<i8"), ("text", STRING), ("value", "<f8")])
    schema = Schema(
        FMT,
        [
            Table("text", STRING, chunk_rows=4),
            Table("pairs", STRING, (2,), chunk_rows=4),
            Table("notes", note, chunk_rows=4),
        ],
    )
    path = tmp_path_factory.mktemp("txt") / "t.h5"
    flat = [s for b in batches for s in b]
    with Recorder(path, schema, flush_interval_s=0.05) as rec:
        k = 0
        for b in batches:
            rec.append("text", b)
            rec.append("pairs", np.array([[s, s[::-1]] for s in b], object).reshape(-1, 2))
            rows = np.zeros(len(b), note)
            rows["index"] = np.arange(k, k + len(b))
            rows["text"] = b
            rows["value"] = np.arange(k, k + len(b)) / 3
            rec.append("notes", rows)
            k += len(b)
    with open_recording(path) as r:
        assert r.table("text").tolist() == flat
        assert r.table("pairs").tolist() == [[s, s[::-1]] for s in flat]
        notes = r.table("notes")
        assert notes["text"].tolist() == flat
        assert notes["index"].tolist() == list(range(len(flat)))
        assert notes["value"].tolist() == [i / 3 for i in range(len(flat))]


def test_append_row_and_python_values(tmp_path: Path) -> None:
    """Single rows and plain Python values are accepted when nothing is lost converting."""
    status = np.dtype([("t_s", "<f8"), ("msg", STRING), ("v", "<f4", (3,))])
    schema = Schema(
        FMT,
        [
            Table("i8", np.int8),
            Table("f4", np.float32, (2,)),
            Table("status", status),
            Table("text", STRING),
        ],
    )
    with Recorder(tmp_path / "p.h5", schema) as rec:
        assert rec.append("i8", [1, -2, 127]) == 0
        assert rec.append_row("i8", 5) == 3
        rec.append_row("f4", [0.1, 0.2])
        rec.append_row("status", (1.5, "ok ✓", [1, 2, 3]))
        rec.append("status", [(2.5, "", [0, 0, 0])])
        rec.append_row("text", "a\nb")
    with open_recording(tmp_path / "p.h5") as r:
        assert r.table("i8").tolist() == [1, -2, 127, 5]
        assert r.table("f4").tolist() == [[np.float32(0.1), np.float32(0.2)]]
        s = r.table("status")
        assert s["msg"].tolist() == ["ok ✓", ""]
        assert s["t_s"].tolist() == [1.5, 2.5]
        assert r.table("text").tolist() == ["a\nb"]


# -- layout: statics, attributes, chunks, compression ---------------------------------------
def test_statics_attributes_and_layout(tmp_path: Path) -> None:
    bench = '# bench file\n[laser1]\nmodel = "santec_tsl570"  # µW, °C\n'
    cal = np.linspace(0.0, 1.0, 7)
    schema = small_schema(
        statics=[
            Static("bench/config", bench, description="the bench file"),
            Static("cal/volts_per_code", cal, units="V/code"),
            Static("bench/names", ["laser1", "tec1"]),
        ],
        attrs={"sample_rate_hz": 1.0e9, "nodes": ["a", "b"], "seed": 7},
        groups={"raw": {"description": "raw captures"}},
    )
    path = tmp_path / "s.h5"
    with Recorder(path, schema, flush_interval_s=0.5) as rec:
        rec.append("raw/x", np.arange(3.0))
    with open_recording(path, expected_format="labctl-test") as r:
        assert r.format == FMT
        assert r.static("bench/config") == bench
        assert np.array_equal(r.static("cal/volts_per_code"), cal)
        assert r.static("bench/names").tolist() == ["laser1", "tec1"]
        assert r.attrs["sample_rate_hz"] == 1.0e9
        assert r.attrs["nodes"] == ["a", "b"]
        assert r.attrs["seed"] == 7
        assert r.attrs["engine"] == "labctl-h5record"
        assert r.flush_interval_s == 0.5
        assert r.info("raw/x").attrs == {"units": "V", "description": "test volts"}
        assert r.closed_unix_s is not None and r.committed_unix_s <= r.closed_unix_s
        assert r.statics == ("bench/config", "cal/volts_per_code", "bench/names")
        assert r.tables == ("raw/x", "log")
    with h5py.File(path, "r") as f:  # a normally closed file opens without SWMR
        assert f["raw"].attrs["description"] == "raw captures"
        assert f["cal/volts_per_code"].attrs["units"] == "V/code"
        # superblock version 3: the HDF5 1.10 format (SWMR), readable by HDF5 >= 1.10
        assert f.id.get_create_plist().get_version()[0] == 3


def test_compression_per_table(tmp_path: Path) -> None:
    """Each table gets its own filter; compressed tables are smaller and read back equal."""
    codes = (1000 * np.sin(np.arange(64 * 4096) / 300.0)).astype(np.int16).reshape(64, 4096)
    schema = Schema(
        FMT,
        [
            Table("plain", np.int16, (4096,), chunk_rows=16),
            Table("gz", np.int16, (4096,), chunk_rows=16, compression="gzip", gzip_level=6),
            Table("lzf", np.int16, (4096,), chunk_rows=16, compression="lzf"),
        ],
    )
    path = tmp_path / "c.h5"
    with Recorder(path, schema) as rec:
        for name in ("plain", "gz", "lzf"):
            rec.append(name, codes[:40])
            rec.append(name, codes[40:])
    with h5py.File(path, "r") as f:
        assert (f["plain"].compression, f["plain"].shuffle) == (None, False)
        assert (f["gz"].compression, f["gz"].compression_opts, f["gz"].shuffle) == ("gzip", 6, True)
        assert f["lzf"].compression == "lzf"
        size = {n: f[n].id.get_storage_size() for n in ("plain", "gz", "lzf")}
        assert size["gz"] < size["lzf"] < size["plain"]
        # the chunk our gzip path wrote decodes with zlib + numpy's un-shuffle (independent
        # of HDF5's filter code)
        mask, raw = f["gz"].id.read_direct_chunk((16, 0))
        assert mask == 0
        planes = np.frombuffer(zlib.decompress(raw), np.uint8).reshape(2, -1)
        assert np.array_equal(planes.T.copy().view(np.int16).reshape(16, 4096), codes[16:32])
    with open_recording(path) as r:
        for name in ("plain", "gz", "lzf"):
            assert np.array_equal(r.table(name), codes)


def test_default_chunks_are_sized_for_streaming(tmp_path: Path) -> None:
    schema = Schema(
        FMT,
        [
            Table("small", np.float64),
            Table("record", np.int16, (2, 1000)),
            Table("huge", np.int16, (2, 1 << 20)),
            Table("text", STRING),
        ],
    )
    with Recorder(tmp_path / "d.h5", schema):
        pass
    with h5py.File(tmp_path / "d.h5", "r") as f:
        for name in ("small", "record", "text"):
            ds = f[name]
            nbytes = ds.chunks[0] * ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
            assert DEFAULT_CHUNK_BYTES // 2 < nbytes <= DEFAULT_CHUNK_BYTES, name
        assert f["huge"].chunks == (1, 2, 1 << 20)  # a row bigger than the target: one row


# -- refused schemas and appends ------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Table("_recording/x", np.int8), "reserved"),
        (lambda: Table("a//b", np.int8), "not of the form"),
        (lambda: Table("u", np.dtype("U8")), "'u'.*unicode.*STRING"),
        (lambda: Table("o", object), "'o'.*object dtype.*STRING"),
        (lambda: Table("when", "M8[ns]"), "'when'.*datetime.*int64 ns"),
        (lambda: Table("log", STRING, compression="gzip"), "'log'.*16-byte references"),
        (lambda: Table("x", np.int8, row_shape=(0,)), "'x'.*row_shape"),
        (lambda: Table("x", np.int8, chunk_rows=0), "'x'.*chunk_rows"),
        (lambda: Table("x", np.int8, compression="zstd"), "'x'.*compression 'zstd'"),  # type: ignore[arg-type]
        (lambda: Table("x", np.int8, attrs={"cfg": {"a": 1}}), "'x'.*attribute 'cfg'.*JSON"),
        (
            lambda: Table("x", np.dtype([("inner", [("s", STRING)])])),
            "'x'.*top-level field",
        ),
        (lambda: Schema(FMT, [Table("a", np.int8), Table("a", np.int8)]), "'a' is declared twice"),
        (lambda: Schema(FMT, [Table("a", np.int8), Table("a/b", np.int8)]), "inside the table 'a'"),
        (lambda: Schema(FMT, [Table("a", np.int8)], attrs={"created": "x"}), "'created'"),
        (lambda: FormatId("x", (1,)), "'x' version"),  # type: ignore[arg-type]
    ],
)
def test_schema_mistakes_are_refused(make: object, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        make()  # type: ignore[operator]


def test_append_validates_at_once(tmp_path: Path) -> None:
    path = tmp_path / "v.h5"
    note = np.dtype([("i", "<i8"), ("text", STRING)])
    schema = Schema(
        FMT,
        [
            Table("raw/codes", np.int16, (2, 8)),
            Table("f32", np.float32),
            Table("i8", np.int8),
            Table("text", STRING),
            Table("notes", note),
        ],
    )
    with Recorder(path, schema) as rec:
        with pytest.raises(ValueError, match=r"v\.h5: table 'raw/codes'.*\(3, 8\).*\(n, 2, 8\)"):
            rec.append("raw/codes", np.zeros((3, 8), np.int16))
        with pytest.raises(ValueError, match=r"table 'raw/codes': a row has shape"):
            rec.append_row("raw/codes", np.zeros((2, 7), np.int16))
        with pytest.raises(TypeError, match=r"'f32'.*float64 cannot be stored as float32"):
            rec.append("f32", np.zeros(2))
        with pytest.raises(ValueError, match=r"'i8'.*out of the range of int8"):
            rec.append("i8", [1, 300])
        with pytest.raises(TypeError, match=r"'i8'.*cannot be stored"):
            rec.append("i8", [1.5])
        with pytest.raises(TypeError, match=r"'text'.*expected str, got int"):
            rec.append("text", ["a", 3])
        with pytest.raises(ValueError, match=r"'text'.*NUL"):
            rec.append("text", ["a\x00b"])
        with pytest.raises(ValueError, match=r"'text'.*not valid UTF-8"):
            rec.append("text", ["\ud800"])
        with pytest.raises(TypeError, match=r"'notes'.*fields \('i', 'txt'\)"):
            rec.append("notes", np.zeros(1, [("i", "<i8"), ("txt", STRING)]))
        with pytest.raises(ValueError, match=r"no table 'nope'.*'raw/codes'"):
            rec.append("nope", [1])
        with pytest.raises(ValueError, match=r"no table '_recording/events'"):
            rec.append(EVENTS_TABLE, [1])
        rec.append("i8", np.array([1, 2], np.int8))  # the recording goes on after refusals
    with open_recording(path) as r:
        assert r.table("i8").tolist() == [1, 2]
        assert all(r.rows(t) == 0 for t in r.tables if t != "i8")


def test_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "l.h5"
    rec = Recorder(path, small_schema())
    with pytest.raises(FileExistsError, match="never overwritten"):
        Recorder(path, small_schema())
    rec.append("raw/x", np.arange(4.0))
    rec.event("settings", json.dumps({"laser1.power_mw": 2.0}), table="raw/x")
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(RecorderError, match=r"l\.h5: table 'raw/x': append after close"):
        rec.append("raw/x", np.arange(1.0))
    st_ = rec.stats()
    assert st_.closed and st_.error is None and st_.commits >= 1
    assert st_.last_commit_unix_s is not None and st_.file_bytes == path.stat().st_size
    x = st_.tables["raw/x"]
    assert (x.rows_appended, x.rows_written, x.rows_committed, x.bytes_written) == (4, 4, 4, 32)
    with open_recording(path) as r:
        (ev,) = r.events()
        assert (ev["kind"], ev["table"], json.loads(ev["text"])) == (
            "settings",
            "raw/x",
            {"laser1.power_mw": 2.0},
        )
        assert r.gaps() == []
    with Recorder(path, small_schema(), overwrite=True) as rec2:
        rec2.append("log", ["fresh"])
    with open_recording(path) as r:
        assert r.rows("raw/x") == 0 and r.table("log").tolist() == ["fresh"]


# -- commit record --------------------------------------------------------------------------
@given(
    seq=st.integers(1, 2**40),
    counts=st.lists(st.integers(0, 2**50), min_size=1, max_size=6),
    byte=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_a_torn_commit_slot_falls_back_to_the_previous_commit(
    seq: int, counts: list[int], byte: int, flip: int
) -> None:
    previous = [max(0, c - 3) for c in counts]
    slots = np.stack(
        [encode_commit(seq, 123, counts), encode_commit(seq - 1 or seq + 2, 99, previous)]
    )
    newest = max(seq, seq - 1 or seq + 2)
    best = decode_commit(slots, len(counts))
    assert best is not None and best[0] == newest
    raw = bytearray(slots[0].tobytes())
    raw[byte % len(raw)] ^= flip
    slots[0] = np.frombuffer(bytes(raw), "<i8")
    other = decode_commit(slots[1:], len(counts))
    assert decode_commit(slots, len(counts)) == other  # the damaged slot is never used
    assert decode_commit(slots[:1], len(counts)) is None


# -- following a live file from another process ---------------------------------------------
FOLLOWER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from labctl.h5read import open_recording

    r = open_recording(sys.argv[1], follow=True)
    for line in sys.stdin:
        r.refresh()
        n = r.rows("raw/x")
        x = r.table("raw/x")
        log = r.table("log")
        ok = x.tolist() == [i * 0.25 for i in range(n)] and log.tolist() == [
            f"line {i} ✓" for i in range(r.rows("log"))]
        print(json.dumps({"x": n, "log": r.rows("log"), "ok": ok, "complete": r.complete}),
              flush=True)
    r.close()
    """
)


def test_a_reader_in_another_process_follows_the_live_file(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    rec = Recorder(path, small_schema(), flush_interval_s=60.0)  # commits only on flush()
    child = python_child(FOLLOWER, str(path), stdin=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    answers = lines_of(child)

    def ask() -> dict:
        child.stdin.write("check\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return json.loads(next_line(child, answers))

    try:
        assert ask() == {"x": 0, "log": 0, "ok": True, "complete": False}
        nx = nlog = 0
        for step in range(1, 6):
            rec.append("raw/x", np.arange(nx, nx + 7 * step) * 0.25)
            nx += 7 * step
            rec.append("log", [f"line {i} ✓" for i in range(nlog, nlog + step)])
            nlog += step
            rec.flush()
            assert ask() == {"x": nx, "log": nlog, "ok": True, "complete": False}
        rec.append("raw/x", np.arange(nx, nx + 3) * 0.25)
        rec.close()
        assert ask() == {"x": nx + 3, "log": nlog, "ok": True, "complete": True}
    finally:
        rec.close()
        child.stdin.close()
        try:
            child.wait(timeout=HANG_GUARD_S)
        finally:
            child.kill()
    assert child.returncode == 0, child.stderr.read()  # type: ignore[union-attr]


# -- overrun --------------------------------------------------------------------------------
def test_overrun_refuses_new_rows_loudly_and_logs_the_gap(tmp_path: Path) -> None:
    """The writer is held on purpose: the queue fills, appends are refused with an error,
    the callback fires once per episode, and the file records where rows are missing."""
    n = 64  # rows per append; 8 bytes each
    batch = n * 8
    errors: list[RecorderError] = []
    path = tmp_path / "o.h5"
    rec = HeldRecorder(path, small_schema(), queue_max_bytes=10 * batch, on_error=errors.append)
    entered, gate = rec.entered, rec.gate

    def rows(b: int) -> np.ndarray:
        return np.arange(b * n, (b + 1) * n, dtype=np.float64)

    try:
        rec.append("raw/x", rows(0))
        assert entered.wait(30)  # the writer holds batch 0: it still counts in the queue
        for b in range(1, 10):
            assert rec.append("raw/x", rows(b)) == b * n
        assert not rec.overrun
        with pytest.raises(RecorderOverrun) as info:
            rec.append("raw/x", rows(10))
        exc = info.value
        assert (exc.table, exc.rows, exc.queued_bytes, exc.queue_max_bytes) == (
            "raw/x",
            n,
            10 * batch,
            10 * batch,
        )
        assert str(path) in str(exc) and "'raw/x'" in str(exc) and "NOT recorded" in str(exc)
        with pytest.raises(RecorderOverrun):
            rec.append("raw/x", rows(11))
        assert rec.overrun
        assert [e.table for e in errors] == ["raw/x"]  # once per episode
        with pytest.raises(RecorderOverrun, match="'log'"):
            rec.append("log", ["never recorded"])  # this episode is still open at close()
        st_ = rec.stats()
        assert (st_.overruns, st_.rows_lost, st_.queue_fill) == (3, 2 * n + 1, 1.0)
        assert st_.tables["raw/x"].rows_lost == 2 * n
        assert [e.table for e in errors] == ["raw/x", "log"]
        gate.set()
        rec.flush()
        assert rec.append("raw/x", rows(12)) == 10 * n  # the next accepted row index
    finally:
        gate.set()
        rec.close()
    with open_recording(path) as r:
        expected = np.concatenate([rows(b) for b in (*range(10), 12)])
        assert np.array_equal(r.table("raw/x"), expected)
        (gap,) = r.gaps("raw/x")
        assert (gap.table, gap.row, gap.rows_lost) == ("raw/x", 10 * n, 2 * n)
        assert isinstance(gap, Gap) and "queue was full" in gap.text
        ((table, row, lost),) = [(g.table, g.row, g.rows_lost) for g in r.gaps("log")]
        assert (table, row, lost) == ("log", 0, 1) and r.rows("log") == 0
        assert len(r.gaps()) == 2


def test_an_append_larger_than_the_queue_is_a_configuration_error(tmp_path: Path) -> None:
    with Recorder(tmp_path / "q.h5", small_schema(), queue_max_bytes=100) as rec:
        with pytest.raises(ValueError, match=r"'raw/x': 160 bytes in one append exceed"):
            rec.append("raw/x", np.zeros(20))
        assert not rec.overrun


# -- writer errors --------------------------------------------------------------------------
DISK_FULL_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from labctl.h5record import FormatId, Recorder, RecorderError, Schema, Table

    path = sys.argv[1]
    calls = []
    schema = Schema(FormatId("labctl-test", (1, 0)),
                    [Table("raw/big", np.float64, (1024,), chunk_rows=8)])
    rec = Recorder(path, schema, flush_interval_s=0.05, on_error=calls.append)
    rec.append("raw/big", np.ones((8, 1024)))
    rec.flush()
    # the file system is full: writes past 1 MiB fail (EFBIG; Python ignores SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    out = {"append": None, "close": None}
    try:
        for i in range(1000):
            rec.append("raw/big", np.full((8, 1024), i, dtype=np.float64))
            rec.flush()
    except RecorderError as exc:
        out["append"] = str(exc)
    try:
        rec.close()
    except RecorderError as exc:
        out["close"] = str(exc)
    out["callbacks"] = [str(e) for e in calls]
    out["stats_error"] = rec.stats().error
    print(json.dumps(out))
    """
)


def test_a_writer_error_is_surfaced_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "full.h5"
    child = python_child(DISK_FULL_CHILD, str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result = json.loads(out)
    for where in ("append", "close", "stats_error"):
        msg = result[where]
        assert msg is not None and str(path) in msg, (where, msg)
        assert "table 'raw/big'" in msg or "committing" in msg, msg
    assert len(result["callbacks"]) == 1 and result["callbacks"][0] == result["close"]
    with open_recording(path) as r:  # the file keeps its last commit, intact
        n = r.rows("raw/big")
        assert n >= 8 and not r.complete
        data = r.table("raw/big")
        assert np.array_equal(data[:8], np.ones((8, 1024)))
        for k in range(8, n, 8):
            assert np.array_equal(data[k : k + 8], np.full((8, 1024), k // 8 - 1.0))


# -- refused files --------------------------------------------------------------------------
@pytest.fixture
def finished(tmp_path: Path) -> Path:
    path = tmp_path / "done.h5"
    with Recorder(path, small_schema()) as rec:
        rec.append("raw/x", np.arange(1000.0))
        rec.append("log", ["a", "b"])
    return path


CRASHED_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from labctl.h5record import STRING, FormatId, Recorder, Schema, Table

    schema = Schema(FormatId("labctl-test", (1, 2)), [
        Table("raw/x", np.float64, chunk_rows=16), Table("log", STRING, chunk_rows=16)])
    rec = Recorder(sys.argv[1], schema, flush_interval_s=3600.0)
    rec.append("raw/x", np.arange(1000.0))
    rec.append("log", ["a", "b"])
    rec.flush()
    rec.append("raw/x", np.arange(1000.0, 1100.0))  # never committed
    rec.append("log", ["c"])
    os._exit(0)  # dies without closing anything, like a SIGKILL
    """
)


@pytest.fixture(scope="module")
def crashed_original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crashed") / "crashed.h5"
    child = python_child(CRASHED_CHILD, str(path))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return path


@pytest.fixture
def crashed(crashed_original: Path, tmp_path: Path) -> Path:
    path = tmp_path / "crashed.h5"
    shutil.copyfile(crashed_original, path)
    return path


def test_a_crashed_file_shows_its_last_commit(crashed: Path) -> None:
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(crashed, "r")  # other tools need `h5clear -s` first (docs/recording.md)
    with open_recording(crashed, expected_format=FMT) as r:
        assert not r.complete and r.closed_unix_s is None
        assert np.array_equal(r.table("raw/x"), np.arange(1000.0))
        assert r.table("log").tolist() == ["a", "b"]


def test_missing_garbage_and_truncated_files(tmp_path: Path, finished: Path) -> None:
    with pytest.raises(RecordingError, match=r"nope\.h5: no such file"):
        open_recording(tmp_path / "nope.h5")
    with pytest.raises(RecordingError, match="is a directory"):
        open_recording(tmp_path)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(random.Random(1).randbytes(4096))
    with pytest.raises(RecordingError) as info:
        open_recording(garbage)
    assert str(info.value).startswith(
        f"{garbage}: not a readable HDF5 file (truncated or corrupt?): "
    )
    assert info.value.path == garbage
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match=r"empty\.h5: not a readable HDF5 file"):
        open_recording(empty)


@pytest.mark.parametrize("kind", ["finished", "crashed"])
@pytest.mark.parametrize("fraction", [0.001, 0.0025, 0.01, 0.2, 0.5, 0.8, 0.95, 0.999])
def test_a_truncated_file_is_refused(
    request: pytest.FixtureRequest, kind: str, fraction: float
) -> None:
    """Cut anywhere, a closed or a crashed recording is refused with "truncated" (at open,
    or at the latest when the lost rows are read), never read with zeros for lost bytes,
    never hanging in HDF5's SWMR retries."""
    # without the bound on those retries, a damaged crashed file hangs inside HDF5, where
    # pytest's timeout cannot interrupt it: fail here instead
    assert h5read._hdf5_library() is not None, "HDF5's SWMR read retries cannot be bounded"
    path: Path = request.getfixturevalue(kind)
    os.truncate(path, int(path.stat().st_size * fraction))
    with pytest.raises(RecordingError, match="truncated") as info, open_recording(path) as r:
        for name in r.tables:
            r.table(name)
        r.events()
    assert info.value.path == path


def test_wrong_schema_files(tmp_path: Path, finished: Path) -> None:
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(RecordingError, match=r"plain\.h5: not a labctl recording \(no root"):
        open_recording(plain)
    isaqn = tmp_path / "isaqn.h5"
    with h5py.File(isaqn, "w") as f:
        f.attrs["format"] = "labctl-isaqn"
        f.attrs["format_version"] = 1
    with pytest.raises(RecordingError, match=r"'labctl-isaqn' file.*read_isaqn_recording"):
        open_recording(isaqn)
    with pytest.raises(RecordingError, match=r"done\.h5: a 'labctl-test' recording, expected 'x'"):
        open_recording(finished, expected_format="x")
    with pytest.raises(RecordingError, match=r"version 1\.2 is newer than this reader's 0\.x"):
        open_recording(finished, expected_format=FormatId("labctl-test", (0, 9)))
    with open_recording(finished, expected_format=FormatId("labctl-test", (1, 0))) as r:
        assert r.format.version == (1, 2)  # minor versions only add: accepted
        with pytest.raises(RecordingError, match=r"no table 'nope'; tables: \['raw/x', 'log'\]"):
            r.table("nope")
        with pytest.raises(RecordingError, match=r"no static dataset 'raw/x'"):
            r.static("raw/x")
        with pytest.raises(RecordingError, match=r"refresh\(\) needs .*follow=True"):
            r.refresh()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: f.attrs.__setitem__("engine_version", "2.0"), r"newer labctl .*2\.0.*update"),
        (lambda f: f.attrs.__setitem__("format_version", "one"), r"'format_version' = 'one'"),
        (lambda f: f.attrs.__delitem__("format"), r"attribute 'format' is missing"),
        (lambda f: f.__delitem__("log"), r"table 'log' is listed in /_recording/tables"),
        (lambda f: f.__delitem__(COMMIT_PATH), r"/_recording/commit is missing"),
        (lambda f: f[COMMIT_PATH].__setitem__(slice(None), 7), r"commit is corrupt"),
        (lambda f: f["raw/x"].resize(10, axis=0), r"'raw/x': 1000 rows committed.*only 10"),
    ],
)
def test_damaged_recordings_are_named(finished: Path, damage: object, match: str) -> None:
    with h5py.File(finished, "r+") as f:
        damage(f)  # type: ignore[operator]
    with pytest.raises(RecordingError, match=match) as info:
        open_recording(finished)
    assert info.value.path == finished


def test_corrupt_chunk_data_is_named(tmp_path: Path) -> None:
    path = tmp_path / "z.h5"
    schema = Schema(FMT, [Table("gz", np.int32, chunk_rows=1024, compression="gzip")])
    with Recorder(path, schema) as rec:
        rec.append("gz", np.arange(4096, dtype=np.int32))
    with h5py.File(path, "r") as f:
        offset = f["gz"].id.get_chunk_info_by_coord((1024,)).byte_offset
    with open(path, "r+b") as fh:  # overwrite the start of a compressed chunk
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    with open_recording(path) as r:
        assert np.array_equal(r.table("gz", 0, 1024), np.arange(1024))
        with pytest.raises(RecordingError, match=r"z\.h5: table 'gz' rows 0\.\.4096 unreadable"):
            r.table("gz")


# -- SIGKILL at random moments --------------------------------------------------------------
FLUSH_INTERVAL_S = 0.1  # the child's
MARGIN_S = 0.9  # scheduling slack on a loaded 2-core CI machine, not a speed requirement


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_a_random_moment_keeps_every_committed_row(tmp_path: Path, seed: int) -> None:
    """A child appends to 5 tables (gzip, lzf, plain, text, structured text) at different
    rates and is killed at a seeded random moment. Then every table holds exactly a prefix
    of what the child wrote (content checked row by row), at least every row the child
    saw committed, and every row appended more than flush_interval_s + margin before the
    kill."""
    path = tmp_path / f"crash{seed}.h5"
    child = python_child(CRASH_CHILD, str(path), str(seed))
    assert child.stdout is not None
    lines = lines_of(child)
    try:
        next_line(child, lines)  # "ready" (a stuck child is killed before its stderr is read)
        time.sleep(random.Random(seed).uniform(1.2, 2.4))
        t_kill = time.monotonic()
        child.kill()
    finally:
        child.kill()
        child.wait(timeout=HANG_GUARD_S)
    received = []
    while (line := lines.get(timeout=HANG_GUARD_S)) != "":
        received.append(line)
    progress = [json.loads(x) for x in received if x.endswith("\n")]
    assert progress, "the child reported no progress"
    old = [p for p in progress if p["t"] <= t_kill - FLUSH_INTERVAL_S - MARGIN_S]
    assert old, "the kill came too early to test the flush interval"

    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")  # other tools need `h5clear -s` first (docs/recording.md)
    with open_recording(path, expected_format="labctl-crash") as r:
        assert not r.complete
        for table in CRASH_TABLES:
            n = r.rows(table)
            assert_rows_equal(r.table(table), crash_rows(table, 0, n))
            assert n >= max(p["committed"][table] for p in progress), table
            assert n >= old[-1]["appended"][table] > 0, table


# -- review fixes: threads and lifecycle ----------------------------------------------------
def test_close_with_a_timeout_reports_a_busy_writer_and_can_be_retried(tmp_path: Path) -> None:
    path = tmp_path / "busy.h5"
    rec = HeldRecorder(path, small_schema())
    try:
        rec.append("raw/x", np.arange(5.0))
        assert rec.entered.wait(HANG_GUARD_S)
        with pytest.raises(RecorderError, match=r"busy\.h5: close\(\) not done within 0 s"):
            rec.close(timeout_s=0)
        with pytest.raises(RecorderError, match="append after close"):
            rec.append("raw/x", np.arange(1.0))
    finally:
        rec.gate.set()
    rec.close()  # waits again, now to the end
    assert not rec._thread.is_alive()
    with open_recording(path) as r:
        assert r.complete and r.table("raw/x").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_flush_racing_a_close_waits_for_the_final_commit(tmp_path: Path) -> None:
    """flush() used to return at once when close() had been called, before the writer had
    drained the queue: here the writer is held, so flush() must still be waiting."""
    rec = HeldRecorder(tmp_path / "race.h5", small_schema())
    seen: list[tuple[int, int]] = []
    flushed = threading.Event()

    def flush() -> None:
        rec.flush()
        x = rec.stats().tables["raw/x"]
        seen.append((x.rows_appended, x.rows_committed))
        flushed.set()

    try:
        rec.append("raw/x", np.arange(3.0))
        assert rec.entered.wait(HANG_GUARD_S)
        closer = threading.Thread(target=rec.close)
        closer.start()
        while not rec.stats().closed:  # close() has started (it then waits for the writer)
            time.sleep(0.001)
        flusher = threading.Thread(target=flush)
        flusher.start()
        # the writer is still held: no commit can have happened, so flush() must not return
        assert not flushed.wait(0.2)
    finally:
        rec.gate.set()
    flusher.join(HANG_GUARD_S)
    closer.join(HANG_GUARD_S)
    assert seen == [(3, 3)]


def test_a_writer_error_stops_the_thread_even_if_on_error_closes(tmp_path: Path) -> None:
    """on_error runs in the writer thread after a failure; a close() there must neither
    deadlock (joining itself) nor leave the thread running; later calls raise the error."""

    class FailingRecorder(Recorder):
        def _write_rows(self, k: int, rows: np.ndarray) -> None:
            raise OSError(28, "No space left on device")

    calls: list[RecorderError] = []

    def on_error(exc: RecorderError) -> None:
        calls.append(exc)
        rec.close()

    path = tmp_path / "fail.h5"
    rec = FailingRecorder(path, small_schema(), on_error=on_error)
    rec.append("raw/x", np.arange(3.0))
    with pytest.raises(RecorderError, match=r"fail\.h5: table 'raw/x': writing failed.*space"):
        rec.flush(timeout_s=HANG_GUARD_S)
    with pytest.raises(RecorderError, match="No space left"):
        rec.close()
    assert not rec._thread.is_alive() and len(calls) == 1
    with open_recording(path) as r:  # the file keeps its (empty) last commit
        assert r.rows("raw/x") == 0 and not r.complete


def test_an_existing_file_is_never_truncated_even_if_it_appears_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs naming their files by the second: the existence check and the creation are
    not one step, so the creation itself refuses an existing file."""
    path = tmp_path / "run.h5"
    path.write_bytes(b"another run's recording")
    monkeypatch.setattr(Path, "exists", lambda self: False)  # the file appears after the check
    with pytest.raises(FileExistsError, match=r"run\.h5: exists; recordings are never"):
        Recorder(path, small_schema())
    assert path.read_bytes() == b"another run's recording"


def test_each_table_gets_a_chunk_cache_of_its_own_size(tmp_path: Path) -> None:
    """One table with big chunks must not give every small table a big chunk cache (the
    writer's memory grew by two big chunks per table over a long run)."""
    schema = Schema(
        FMT,
        [
            Table("small", np.float64, chunk_rows=512),
            Table("big", np.int16, (1 << 20,), chunk_rows=8, compression="lzf"),
        ],
    )
    with Recorder(tmp_path / "cache.h5", schema) as rec:
        cache = {
            name: ds.id.get_access_plist().get_chunk_cache()[1]
            for name, ds in zip(rec.tables, rec._datasets, strict=False)
        }
    big, small = schema.table("big"), schema.table("small")
    assert cache["big"] >= 2 * big.chunk_bytes  # a compressed chunk must fit, with the next
    assert 2 * small.chunk_bytes <= cache["small"] < big.chunk_bytes / 8


# -- review fixes: validation ---------------------------------------------------------------
def test_nothing_is_altered_silently_when_converting_python_values(tmp_path: Path) -> None:
    status = np.dtype([("n", "<i4"), ("v", "<f4", (2,)), ("tag", "S4"), ("msg", STRING)])
    schema = Schema(FMT, [Table("f32", np.float32), Table("status", status), Table("i8", np.int8)])
    with Recorder(tmp_path / "conv.h5", schema) as rec:
        with pytest.raises(ValueError, match=r"'f32'.*out of the range of float32"):
            rec.append("f32", [1.0, 1e300])  # would be inf
        with pytest.raises(TypeError, match=r"'status': field 'n'.*float64 cannot be stored"):
            rec.append_row("status", (2.5, [0, 0], b"ok", "x"))  # numpy alone makes it 2
        with pytest.raises(TypeError, match=r"'status': rows do not fit"):
            rec.append_row("status", (2**40, [0, 0], b"ok", "x"))  # numpy's OverflowError
        with pytest.raises(ValueError, match=r"'status': field 'v'.*out of the range"):
            rec.append_row("status", (1, [0, 1e300], b"ok", "x"))
        with pytest.raises(ValueError, match=r"'status': field 'tag'.*out of the range"):
            rec.append_row("status", (1, [0, 0], b"toolong", "x"))  # would be cut to b"tool"
        with pytest.raises(TypeError, match=r"'status': field 'msg'.*expected str"):
            rec.append_row("status", (1, [0, 0], b"ok", 5))
        assert rec.append("i8", []) == 0  # an empty list holds nothing to lose
        assert rec.append("status", []) == 0
        rec.append("f32", [0.1, 3.4e38])
        rec.append_row("status", (7, [0.5, 1e30], b"ok", "fine ✓"))
        rec.append("status", [(np.int8(-3), np.array([1, 2], np.int16), b"", "")])
    with open_recording(tmp_path / "conv.h5") as r:
        assert r.table("f32").tolist() == [np.float32(0.1), np.float32(3.4e38)]
        s = r.table("status")
        assert s["n"].tolist() == [7, -3]
        assert s["v"].tolist() == [[0.5, np.float32(1e30)], [1.0, 2.0]]
        assert s["tag"].tolist() == [b"ok", b""] and s["msg"].tolist() == ["fine ✓", ""]


def test_text_counts_its_utf8_bytes_against_the_queue(tmp_path: Path) -> None:
    texts = ["é" * 10, "abc", "µ°✓"]
    with Recorder(tmp_path / "u.h5", small_schema()) as rec:
        rec.append("log", texts)
        rec.flush()
        got = rec.stats().tables["log"].bytes_appended
    pointers = np.array(texts, dtype=object).nbytes
    assert got == pointers + sum(len(t.encode("utf-8")) for t in texts)


# -- review fixes: the reader ---------------------------------------------------------------
def test_swmr_retries_are_bounded_in_h5pys_own_hdf5() -> None:
    """The read-attempt bound must reach the very libhdf5 instance h5py uses (a wheel's
    bundled copy under a hashed name; another package may load a second copy)."""
    lib = h5read._hdf5_library()
    assert lib is not None
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    assert h5read._limit_read_attempts(fapl, 7)
    got = ctypes.c_uint(0)
    get = lib.H5Pget_metadata_read_attempts
    get.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)]
    assert get(fapl.id, ctypes.byref(got)) >= 0 and got.value == 7
    # the same instance as h5py's: a property set through it reads back through h5py
    set_block = lib.H5Pset_meta_block_size
    set_block.argtypes = [ctypes.c_int64, ctypes.c_uint64]
    size = fapl.get_meta_block_size() * 2 + 512
    assert set_block(fapl.id, size) >= 0 and fapl.get_meta_block_size() == size


class _NoSuchSymbol:
    """A stand-in for a library lacking the HDF5 functions."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, symbol: str) -> object:
        raise AttributeError(f"{self.name}: undefined symbol: {symbol}")


class _OtherInstance:
    """A stand-in for another copy of HDF5: its calls succeed but do not reach h5py's."""

    def __init__(self, name: str) -> None:
        self.H5Pset_metadata_read_attempts = lambda *a: 0
        self.H5Pset_sieve_buf_size = lambda *a: 0


def _cdll_fails(name: str) -> object:
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize("cdll", [_cdll_fails, _NoSuchSymbol, _OtherInstance])
def test_without_the_hdf5_c_api_opening_degrades_to_a_debug_log(
    crashed: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cdll: object,
) -> None:
    monkeypatch.setattr(h5read.ctypes, "CDLL", cdll)
    monkeypatch.setattr(h5read, "_hdf5_library", h5read._hdf5_library.__wrapped__)
    with caplog.at_level(logging.DEBUG, logger="labctl.h5read"):
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        assert not h5read._limit_read_attempts(fapl, 7)
        with open_recording(crashed) as r:  # an undamaged crashed file still opens
            assert r.rows("raw/x") == 1000 and not r.complete
    records = [x for x in caplog.records if x.name == "labctl.h5read"]
    assert records and all(x.levelno == logging.DEBUG for x in records)
    assert any("SWMR read retries" in x.getMessage() for x in records)


def _bytes_read() -> int:
    """Bytes this process has read through read syscalls (Linux /proc/self/io ``rchar``)."""
    with open("/proc/self/io", encoding="ascii") as io:
        return next(int(x.split()[1]) for x in io if x.startswith("rchar:"))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_row_range_reads_only_its_chunks(tmp_path: Path, compression: str | None) -> None:
    """Reading a few rows of a large table reads about their chunks, not the table (a 10 GB
    recording must be browsable): measured with the kernel's count of bytes read."""
    path = tmp_path / "big.h5"
    table = Table("x", np.float64, compression=compression)  # default 256 KiB chunks
    n = 64 * table.chunk_rows  # 16 MiB of noise: gzip cannot shrink it much
    x = np.random.default_rng(7).standard_normal(n)
    with Recorder(path, Schema(FMT, [table])) as rec:
        for a in range(0, n, 8 * table.chunk_rows):
            rec.append("x", x[a : a + 8 * table.chunk_rows])
    before = _bytes_read()
    with open_recording(path) as r:
        opened = _bytes_read()
        tail = r.table("x", start=-100)
        mid = r.table("x", 30 * table.chunk_rows - 5, 30 * table.chunk_rows + 5)  # 2 chunks
        done = _bytes_read()
    assert tail.tobytes() == x[-100:].tobytes()
    c = 30 * table.chunk_rows  # 10 rows across a chunk boundary
    assert mid.tobytes() == x[c - 5 : c + 5].tobytes()
    assert opened - before < table.chunk_bytes  # opening reads metadata only
    assert done - opened < 4 * table.chunk_bytes  # 3 chunks at most, and their index
    assert path.stat().st_size > 16 * table.chunk_bytes  # (the table is far larger)


def test_a_closed_recording_says_so(finished: Path, crashed: Path) -> None:
    r = open_recording(finished)
    r.close()
    r.close()
    for read in (lambda: r.table("raw/x"), lambda: r.static("x"), r.events):
        with pytest.raises(RecordingError, match=r"done\.h5: the Recording is closed"):
            read()
    live = open_recording(crashed, follow=True)
    live.close()
    with pytest.raises(RecordingError, match="the Recording is closed"):
        live.refresh()


def test_a_failed_read_of_a_live_file_is_retried_on_a_fresh_handle(
    crashed: Path, finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SWMR reader's handle knows the file's end at its opening; text the writer stored
    since in an extended heap reads as "past end of allocation". Committed rows do not
    change: the read is retried on a fresh handle. A complete file is not retried."""
    decode = h5read._decode_fields
    failures = [OSError("address of object past end of allocation")]

    def fails_once(arr: np.ndarray) -> np.ndarray:
        if failures:
            raise failures.pop()
        return decode(arr)

    monkeypatch.setattr(h5read, "_decode_fields", fails_once)
    with open_recording(crashed) as r:
        handle = r._state.file
        assert r.table("raw/x", 10, 20).tolist() == list(np.arange(10.0, 20.0))
        assert not failures and r._state.file is not handle and r.rows("raw/x") == 1000
    failures.append(OSError("address of object past end of allocation"))
    with (
        open_recording(finished) as r,
        pytest.raises(RecordingError, match=r"'raw/x' rows 0\.\.1000 unreadable.*past end"),
    ):
        r.table("raw/x")


def test_following_a_file_written_at_full_speed(tmp_path: Path) -> None:
    """Refresh and read while the writer (the crash test's child) appends to five tables and
    commits every 0.1 s: every refresh shows a consistent prefix of every table, content
    checked. (Reads used to fail now and then: text in a heap grown since the handle's
    opening, a chunk moved since the file's size was taken: this test failed 2 runs in 3.)"""
    path = tmp_path / "followed.h5"
    child = python_child(CRASH_CHILD, str(path), "11")
    lines = lines_of(child)
    try:
        next_line(child, lines)  # the file exists and is in SWMR mode
        seen = dict.fromkeys(CRASH_TABLES, 0)
        with open_recording(path, expected_format="labctl-crash", follow=True) as r:
            for _ in range(150):
                r.refresh()
                for table in CRASH_TABLES:
                    n = r.rows(table)
                    assert n >= seen[table]  # commits only grow
                    seen[table] = n
                    k = max(0, n - 20)
                    assert_rows_equal(r.table(table, start=k), crash_rows(table, k, n - k))
                assert not r.complete
        assert all(n > 0 for n in seen.values())
    finally:
        child.kill()
        child.wait(timeout=HANG_GUARD_S)


def test_packed_rows_are_queued_as_bytes_and_read_back_unchanged(tmp_path: Path) -> None:
    """The byte-copy fast path (rows already in the table's dtype) stores exactly what the
    field-by-field path stores: packed tags, strided views and many small appends alike."""
    tag = np.dtype([("timestamp_ps", np.int64), ("channel", np.uint8)])
    schema = Schema(FormatId("t", (1, 0)), [Table("tags", tag, chunk_rows=1000)])
    rng = np.random.default_rng(3)
    packed = np.empty(10_000, tag)
    packed["timestamp_ps"] = np.cumsum(rng.integers(1, 10**6, packed.size))
    packed["channel"] = rng.integers(0, 255, packed.size)
    strided = packed[::3]  # not contiguous: the checked path
    with Recorder(tmp_path / "r.h5", schema) as rec:
        for k in range(0, 6000, 7):  # many small appends, concatenated by the writer
            rec.append("tags", packed[k : k + 7])
        rec.append("tags", strided)
        rec.append("tags", [(1, 2), (3, 4)])
        buffer = packed[:5].copy()
        rec.append("tags", buffer)
        buffer["channel"] = 0  # the queue kept its own copy
    expected = np.concatenate([packed[:6006], strided, np.array([(1, 2), (3, 4)], tag), packed[:5]])
    with open_recording(tmp_path / "r.h5") as r:
        got = r.table("tags")
    assert got.dtype == tag and np.array_equal(got, expected)

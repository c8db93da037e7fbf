"""HDF5 recording engine: declarative tables, one writer thread, SWMR, crash-safe commits.

A recording is one HDF5 file. Before it starts, the :class:`Recorder` is given a
:class:`Schema`: every :class:`Table` (an appendable dataset: path, numpy dtype, fixed
per-row shape, chunking, compression, attributes), every :class:`Static` dataset (written
once at start: the bench file text, calibration arrays) and the file-level attributes.
It creates all of them, switches the file to single-writer/multiple-reader (SWMR) mode and
starts ONE writer thread. :meth:`Recorder.append` validates and copies the rows in the
caller's thread and puts them on a queue bounded in bytes; the writer thread writes them,
and every ``flush_interval_s`` *commits*: the rows written so far become visible to
:func:`labctl.h5read.open_recording` and survive a crash of the process. The file layout
and its conventions are in ``docs/recording.md``; :data:`ENGINE_VERSION` versions them.

Commit protocol and crash-consistency argument
----------------------------------------------
HDF5 cannot change attributes in SWMR mode, so the per-table committed row counts live in
a small contiguous int64 dataset ``/_recording/commit`` of two slots (rows). A slot is
``[seq, t_unix_ns, count_0 .. count_{n-1}, crc32]`` with the counts in the order of
``/_recording/tables`` and the CRC-32 (:func:`zlib.crc32`) of the little-endian bytes of
everything before it. A commit is:

1. every row handed to HDF5 so far (data chunks, chunk indexes, extents, the global heap of
   variable-length strings) is flushed to the file: each table written since the last
   commit with ``H5Dflush`` (so an error names its table), then the file with ``H5Fflush``;
2. the new slot ``seq % 2`` is written and flushed again.

A reader takes, of the two slots, the valid one (CRC matches) with the largest ``seq`` and
reads each table's first ``count`` rows only. Why that is consistent after a SIGKILL at any
instant: the counts in a valid slot were written after step 1 had put all their rows in
the file, so those rows are there; rows written after the commit lie beyond the counts and
are ignored, even if half written. A commit killed inside step 2 may leave its slot torn: its
CRC then fails and the other slot, the previous complete commit, is used. Committed rows are
never rewritten with different bytes: an uncompressed chunk is rewritten in place with the
same bytes for its committed rows, and a compressed chunk that grows is written to newly
allocated space before its index entry is switched (measured: 120 SIGKILLs of a plain
h5py writer committing gzip tables back to back, 300 of this recorder with gzip, LZF,
plain and text tables while developing it and 150 after its review: every committed row
intact; ``tests/test_h5record.py`` kills it 6 times on every run). The writer's process
dying is covered; the operating system dying or a power cut is not: that would need an
``fsync`` at every commit, which the writer does not do.

Only the commit is trusted, not the dataset extents: an extent may include rows written
after the last commit (and a crashed row), and the counts make the rows of all tables
consistent with each other at one instant.

Overrun policy (the disk cannot keep up)
----------------------------------------
Recording never blocks acquisition: :meth:`Recorder.append` only copies the rows and takes
the queue's lock for a constant time. The queue holds at most ``queue_max_bytes``. When
an append would exceed it, the rows are **refused, loudly**:

* :meth:`Recorder.append` raises :class:`RecorderOverrun` naming the table, the number of
  rows refused and the queue's fill. The caller decides to stop the run or to go on; either
  way it knows these rows are not in the file. Rows already accepted are never dropped.
* the ``on_error`` callback is called (once per table per overrun episode), the recorder's
  ``overrun`` flag and per-table ``rows_lost`` counters are set, and a warning is logged;
* the file gets an ``overrun`` row in ``/_recording/events`` naming the table, the row
  index where rows are missing and how many, so a reader sees every gap
  (:meth:`labctl.h5read.Recording.gaps`). The row is written when the episode ends (the
  table's next accepted append, or :meth:`Recorder.close`).

A physicist would rather know than lose data silently, and would rather keep the run going
with a documented gap than lose the whole run because a disk hiccupped: refusing the new
rows (never the queued ones) keeps every accepted row and every row index exact.

Writer errors (disk full, file system gone) are never lost: the writer thread stores the
first one as a :class:`RecorderError` naming the file and the table, calls ``on_error``,
and every later :meth:`Recorder.append`, :meth:`Recorder.flush` and :meth:`Recorder.close`
raises it. The file keeps its last commit.

Threads
-------
h5py releases the GIL during HDF5 calls, so the writer thread's compression and I/O do not
stall acquisition threads (measured on the 2-vCPU development machine: during a 414 ms
gzip flush a busy thread was stalled at most 9 ms, about two interpreter switch intervals;
recording 64 MiB with gzip while a second thread appended stalled a third busy thread at
most 11-34 ms, the same order as plain h5py writing from a thread, 8-24 ms; an append of
256 KiB took at most 4-8 ms, waiting for the GIL). h5py does serialise all
HDF5 calls of a process with one lock: the writer hands HDF5 at most
:data:`WRITE_PIECE_BYTES` per call so that another thread's h5py call waits little. A
process must not read its own recording while writing it: read it from another process
(SWMR) or after :meth:`Recorder.close`.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as _dt
import importlib.metadata
import logging
import math
import os
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

_log = logging.getLogger(__name__)

#: Name of the engine's conventions (root attribute ``engine``).
ENGINE_NAME = "labctl-h5record"
#: Version (major, minor) of the engine's conventions (root attribute ``engine_version``,
#: written "MAJOR.MINOR"). A reader refuses a newer major; minors only add.
ENGINE_VERSION: tuple[int, int] = (1, 0)

#: The group of the engine's own objects; schema paths may not use it.
META_GROUP = "_recording"
COMMIT_PATH = f"{META_GROUP}/commit"
TABLES_PATH = f"{META_GROUP}/tables"
STATICS_PATH = f"{META_GROUP}/statics"
CLOSED_PATH = f"{META_GROUP}/closed_unix_ns"
EVENTS_TABLE = f"{META_GROUP}/events"

#: Variable-length UTF-8 text: use as a table's dtype or as a field of a structured dtype.
STRING: np.dtype = h5py.string_dtype("utf-8")

#: The engine's event table: overruns and :meth:`Recorder.event` notes.
EVENT_DTYPE = np.dtype(
    [
        ("t_unix_ns", "<i8"),  # when it happened, UTC [ns since 1970]
        ("kind", STRING),  # "overrun", or the caller's kind
        ("table", STRING),  # the table concerned, "" if none
        ("row", "<i8"),  # overrun: first row index after the gap; else -1
        ("rows", "<i8"),  # overrun: rows lost; else 0
        ("text", STRING),  # human-readable text (or JSON, the caller's choice)
    ]
)

#: Root attributes the engine writes; ``Schema.attrs`` may not reuse them.
RESERVED_ATTRS = frozenset(
    {"format", "format_version", "engine", "engine_version", "created", "labctl_version"}
)

#: Default chunk size target. 256 KiB is at the low end of the 256 KiB - 1 MiB range where
#: chunked HDF5 I/O runs at disk bandwidth (HDF5 "Chunking in HDF5": chunks should fit the
#: 1 MiB default chunk cache), and a partly filled chunk stays cheap to rewrite at every
#: commit. An uncompressed chunk is allocated whole: every table costs at least one chunk
#: on disk, so give slow tables a smaller ``chunk_rows``.
DEFAULT_CHUNK_BYTES = 256 * 1024
#: At most this many bytes go to HDF5 in one h5py call. h5py releases the GIL during HDF5
#: calls but serialises all of a process's HDF5 calls with one lock: a bounded piece keeps
#: another thread's h5py call (a display reading another file) from waiting long.
WRITE_PIECE_BYTES = 4 * 1024 * 1024
#: A compressed chunk must fit the chunk cache, or HDF5 re-reads, decompresses and
#: recompresses it at every partial write. Each table gets its own chunk cache of two of its
#: chunks (the one being filled and the next): a cache sized for the largest table would
#: let every small table keep that many bytes of old chunks (measured: 8 small tables beside
#: one 32 MiB-chunk table grew the writer by 540 MiB for a 500 MiB file with one cache size
#: for all, by 43 MiB with a cache per table).
MAX_COMPRESSED_CHUNK_BYTES = 64 * 1024 * 1024
#: The writer takes at most this much from the queue between two commit checks, so a
#: backlog does not delay commits by more than about one batch's write time.
_BATCH_BYTES = 16 * 1024 * 1024
#: Default queue bound: 2.5 s of a 100 MB/s raw stream, or several seconds of disk stall.
DEFAULT_QUEUE_MAX_BYTES = 256 * 1024 * 1024

AttrValue = str | bool | int | float | np.generic | np.ndarray | Sequence[Any]
Compression = Literal["gzip", "lzf"] | None


# -- errors ---------------------------------------------------------------------------------
class RecorderError(RuntimeError):
    """Recording failed: which file, which table (if one), what went wrong."""

    def __init__(self, path: Path | str, problem: str, table: str | None = None) -> None:
        self.path = Path(path)
        self.table = table
        self.problem = problem
        where = f"{self.path}" if table is None else f"{self.path}: table {table!r}"
        super().__init__(f"{where}: {problem}")


class RecorderOverrun(RecorderError):
    """Rows refused because the writer is behind (queue full). Nothing already queued is lost.

    ``rows`` refused now; ``queued_bytes`` / ``queue_max_bytes`` the queue at that moment."""

    def __init__(
        self, path: Path, table: str, rows: int, queued_bytes: int, queue_max_bytes: int
    ) -> None:
        self.rows = rows
        self.queued_bytes = queued_bytes
        self.queue_max_bytes = queue_max_bytes
        super().__init__(
            path,
            f"{rows} row(s) NOT recorded: the writer is behind, its queue holds "
            f"{queued_bytes} of {queue_max_bytes} bytes (disk too slow for the data rate?); "
            "the gap is logged in /_recording/events",
            table,
        )


# -- schema ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FormatId:
    """A recording format: ``name`` (e.g. "labctl-entanglement") and ``version`` (major,
    minor). Bump the minor for additions old readers can ignore, the major otherwise."""

    name: str
    version: tuple[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"format name: got {self.name!r}, expected a non-empty string")
        v = self.version
        if (
            not isinstance(v, tuple)
            or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
        ):
            raise ValueError(
                f"format {self.name!r} version: got {v!r}, expected (major, minor) integers >= 0"
            )

    @property
    def version_text(self) -> str:
        """The version as stored in the file: "MAJOR.MINOR"."""
        return f"{self.version[0]}.{self.version[1]}"


@dataclasses.dataclass(frozen=True)
class Table:
    """An appendable dataset: ``rows x row_shape`` elements of ``dtype``.

    ``dtype``: any numpy dtype h5py stores (bool, integers, floats, complex, fixed bytes
    ``S<n>``, structured, also nested and with subarray fields), :data:`STRING` for
    variable-length UTF-8 text, or a structured dtype with top-level :data:`STRING` fields.
    ``chunk_rows``: rows per HDF5 chunk; default: about :data:`DEFAULT_CHUNK_BYTES` per chunk
    (at least one row). ``compression``: None, "gzip" (level ``gzip_level``, with the
    shuffle filter, which groups bytes of equal significance) or "lzf". Measured on noisy
    int16 ADC codes (300 codes rms) on the 2-vCPU development machine: no compression
    ~1.2 GB/s, LZF ~130 MB/s and no gain, gzip level 4 ~40 MB/s and 1.3x smaller (one
    core): compress raw streams only if the disk, not the CPU, is the limit. Text cannot
    be compressed: HDF5 would compress only its 16-byte heap references. ``units`` and
    ``description`` become dataset attributes, with ``attrs``.
    """

    path: str
    dtype: Any
    row_shape: tuple[int, ...] = ()
    chunk_rows: int | None = None
    compression: Compression = None
    gzip_level: int = 4
    units: str | None = None
    description: str | None = None
    attrs: Mapping[str, AttrValue] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"table {self.path!r}"
        object.__setattr__(self, "path", _check_path(self.path, where))
        object.__setattr__(self, "dtype", _check_dtype(self.dtype, where))
        shape = tuple(self.row_shape) if isinstance(self.row_shape, Sequence) else None
        if shape is None or not all(
            isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape
        ):
            raise ValueError(
                f"{where}: row_shape {self.row_shape!r}: expected a tuple of integers >= 1"
            )
        object.__setattr__(self, "row_shape", tuple(int(d) for d in shape))
        if self.compression not in (None, "gzip", "lzf"):
            raise ValueError(
                f"{where}: compression {self.compression!r}: expected None, 'gzip' or 'lzf'"
            )
        if self.compression is not None and has_strings(self.dtype):
            raise ValueError(
                f"{where}: compression {self.compression!r} on a table with text: HDF5 would "
                "compress only the 16-byte references to the strings, not the text; use None"
            )
        if not isinstance(self.gzip_level, int) or not 1 <= self.gzip_level <= 9:
            raise ValueError(f"{where}: gzip_level {self.gzip_level!r}: expected 1..9")
        if self.chunk_rows is None:
            object.__setattr__(
                self, "chunk_rows", max(1, DEFAULT_CHUNK_BYTES // max(1, self.row_bytes))
            )
        elif (
            not isinstance(self.chunk_rows, int)
            or isinstance(self.chunk_rows, bool)
            or self.chunk_rows < 1
        ):
            raise ValueError(f"{where}: chunk_rows {self.chunk_rows!r}: expected an integer >= 1")
        if self.compression is not None and self.chunk_bytes > MAX_COMPRESSED_CHUNK_BYTES:
            raise ValueError(
                f"{where}: compressed chunk of {self.chunk_bytes} bytes > "
                f"{MAX_COMPRESSED_CHUNK_BYTES}: lower chunk_rows or split the rows"
            )
        attrs = dict(self.attrs)
        for key, value in (("units", self.units), ("description", self.description)):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{where}: {key} {value!r}: expected a string")
                attrs[key] = value
        _check_attrs(attrs, where)
        object.__setattr__(self, "attrs", attrs)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row in the file's fixed part (16 per string reference)."""
        return int(self.dtype.itemsize) * math.prod(self.row_shape)

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one uncompressed chunk."""
        assert self.chunk_rows is not None
        return self.chunk_rows * self.row_bytes


@dataclasses.dataclass(frozen=True)
class Static:
    """A dataset written once at start: ``data`` is a string (stored as one UTF-8 string,
    e.g. the bench file text) or anything :func:`numpy.asarray` turns into a storable array.
    """

    path: str
    data: Any
    units: str | None = None
    description: str | None = None
    attrs: Mapping[str, AttrValue] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"static dataset {self.path!r}"
        object.__setattr__(self, "path", _check_path(self.path, where))
        if not isinstance(self.data, str):
            arr = np.asarray(self.data)
            if arr.dtype.kind == "U":  # text: stored as variable-length UTF-8
                arr = np.asarray(arr.astype(object), dtype=STRING)
            else:
                _check_dtype(arr.dtype, where)
            object.__setattr__(self, "data", arr)
        attrs = dict(self.attrs)
        for key, value in (("units", self.units), ("description", self.description)):
            if value is not None:
                attrs[key] = value
        _check_attrs(attrs, where)
        object.__setattr__(self, "attrs", attrs)


@dataclasses.dataclass(frozen=True)
class Schema:
    """Everything a recording holds, declared before it starts (SWMR allows no new objects
    later). ``attrs``: extra root attributes; ``groups``: attributes of groups (created if
    no table or static lies in them)."""

    format: FormatId
    tables: Sequence[Table]
    statics: Sequence[Static] = ()
    attrs: Mapping[str, AttrValue] = dataclasses.field(default_factory=dict)
    groups: Mapping[str, Mapping[str, AttrValue]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.format, FormatId):
            raise TypeError(f"schema format: got {self.format!r}, expected a FormatId")
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "statics", tuple(self.statics))
        seen: dict[str, str] = {}
        for obj in (*self.tables, *self.statics):
            if not isinstance(obj, Table | Static):
                raise TypeError(f"schema: {obj!r} is not a Table or Static")
            kind = "table" if isinstance(obj, Table) else "static dataset"
            if obj.path in seen:
                raise ValueError(f"schema: {kind} {obj.path!r} is declared twice")
            seen[obj.path] = kind
        for path in seen:
            parts = path.split("/")
            for k in range(1, len(parts)):
                parent = "/".join(parts[:k])
                if parent in seen:
                    raise ValueError(
                        f"schema: {seen[path]} {path!r} lies inside the {seen[parent]} "
                        f"{parent!r}, which is a dataset, not a group"
                    )
        groups = {}
        for gpath, gattrs in self.groups.items():
            where = f"group {gpath!r}"
            p = _check_path(gpath, where)
            if p in seen:
                raise ValueError(f"schema: {where} is also declared as a {seen[p]}")
            groups[p] = dict(gattrs)
            _check_attrs(groups[p], where)
        object.__setattr__(self, "groups", groups)
        attrs = dict(self.attrs)
        bad = sorted(RESERVED_ATTRS & set(attrs))
        if bad:
            raise ValueError(f"schema attrs: {bad} are written by the recorder itself")
        _check_attrs(attrs, "root")
        object.__setattr__(self, "attrs", attrs)

    def table(self, name: str) -> Table:
        """The table declared at ``name``."""
        for t in self.tables:
            if t.path == name:
                return t
        raise ValueError(
            f"no table {name!r} in the schema; tables: {[t.path for t in self.tables]}"
        )


def is_text(dtype: np.dtype) -> bool:
    """True if ``dtype`` is variable-length text (:data:`STRING`)."""
    info = h5py.check_string_dtype(dtype)
    return info is not None and info.length is None


def has_strings(dtype: np.dtype) -> bool:
    """True if ``dtype`` is :data:`STRING` or a structured dtype with a STRING field."""
    if dtype.names is None:
        return is_text(dtype)
    return any(has_strings(dtype.fields[n][0]) for n in dtype.names)


def _events_table() -> Table:
    """The engine's events table (its path is in the reserved group, so set after checks)."""
    table = Table("events", EVENT_DTYPE, chunk_rows=256, description="overruns and notes")
    object.__setattr__(table, "path", EVENTS_TABLE)
    return table


def _check_path(path: object, where: str) -> str:
    if not isinstance(path, str):
        raise TypeError(f"{where}: path must be a string")
    p = path.strip("/")
    parts = p.split("/")
    if not p or any(not s or s in (".", "..") for s in parts):
        raise ValueError(f"{where}: path {path!r} is not of the form 'group/name'")
    if parts[0] == META_GROUP:
        raise ValueError(f"{where}: /{META_GROUP} is reserved for the recorder itself")
    return p


def _check_dtype(dtype: Any, where: str) -> np.dtype:
    """Normalise ``dtype`` and refuse what HDF5/h5py cannot store, saying what to use."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{where}: dtype {dtype!r} is not a numpy dtype ({exc})") from exc
    if dt.names is not None:
        for name in dt.names:
            sub = dt.fields[name][0]
            if sub.names is not None or sub.subdtype is not None:
                if has_strings(sub):
                    raise TypeError(
                        f"{where}: field {name!r}: text is supported only as a top-level "
                        "field of a structured dtype"
                    )
            _check_dtype(sub, f"{where}: field {name!r}")
        return dt
    if dt.subdtype is not None:
        _check_dtype(dt.subdtype[0], where)
        return dt
    info = h5py.check_string_dtype(dt)
    if info is not None:
        if info.length is None and info.encoding != "utf-8":
            raise TypeError(f"{where}: variable-length text must be UTF-8: use STRING")
        return dt
    if dt.kind == "O":
        raise TypeError(f"{where}: object dtype: use labctl.h5record.STRING for text")
    if dt.kind == "U":
        raise TypeError(
            f"{where}: numpy unicode dtype {dt} cannot be stored in HDF5: use STRING "
            "(variable-length UTF-8) or fixed bytes 'S<n>'"
        )
    if dt.kind in "mM":
        raise TypeError(
            f"{where}: datetime dtype {dt} cannot be stored in HDF5: store int64 ns since "
            "1970 (UTC) and say so in the units attribute"
        )
    if dt.kind == "V":
        raise TypeError(f"{where}: raw void dtype {dt}: use a structured dtype or uint8 rows")
    if dt.kind not in "biufcS":
        raise TypeError(f"{where}: dtype {dt} is not storable")
    return dt


def _check_attrs(attrs: Mapping[str, Any], where: str) -> None:
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{where}: attribute name {key!r} is not a non-empty string")
        if isinstance(value, str | bool | int | float | np.generic):
            continue
        if isinstance(value, np.ndarray | list | tuple):
            arr = np.asarray(value)
            if arr.dtype.kind in "biufcS" or (arr.dtype.kind == "U" and arr.ndim == 1):
                continue
        raise TypeError(
            f"{where}: attribute {key!r} = {value!r}: expected str, bool, int, float or an "
            "array of them (store structured data as a JSON string)"
        )


def _attr(value: Any) -> Any:
    """An attribute value as h5py should store it (lists of str as UTF-8 strings)."""
    if isinstance(value, np.ndarray | list | tuple):
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            return np.asarray([str(x) for x in arr], dtype=STRING)
        return arr
    return value


def labctl_version() -> str | None:
    """The installed labctl package version, or None when running from a bare checkout."""
    try:
        return importlib.metadata.version("labctl")
    except importlib.metadata.PackageNotFoundError:
        return None


# -- commit slots ---------------------------------------------------------------------------
def encode_commit(seq: int, t_unix_ns: int, counts: Sequence[int]) -> np.ndarray:
    """One commit slot: int64 ``[seq, t_unix_ns, *counts, crc32]`` (see the module doc)."""
    body = np.array([seq, t_unix_ns, *counts], dtype="<i8")
    return np.append(body, np.int64(zlib.crc32(body.tobytes())))


def decode_commit(slots: np.ndarray, n_tables: int) -> tuple[int, int, tuple[int, ...]] | None:
    """The newest valid slot of ``slots`` (2, n_tables + 3) as (seq, t_unix_ns, counts), or
    None if neither slot is valid (CRC mismatch, or never written)."""
    best: tuple[int, int, tuple[int, ...]] | None = None
    arr = np.asarray(slots, dtype="<i8")
    if arr.ndim != 2 or arr.shape[1] != n_tables + 3:
        return None
    for row in arr:
        body = row[:-1]
        if int(body[0]) <= 0 or zlib.crc32(body.tobytes()) != int(row[-1]):
            continue
        counts = tuple(int(c) for c in body[2:])
        if any(c < 0 for c in counts):
            continue
        if best is None or int(body[0]) > best[0]:
            best = (int(body[0]), int(body[1]), counts)
    return best


# -- stats ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TableStats:
    """One table's counters (rows, and payload bytes: text counted as its UTF-8 length)."""

    rows_appended: int  # accepted by append()
    rows_written: int  # handed to HDF5
    rows_committed: int  # visible to readers, crash-safe
    bytes_appended: int
    bytes_written: int
    rows_lost: int  # refused by append() (overruns)
    overruns: int  # append() calls refused


@dataclasses.dataclass(frozen=True)
class RecorderStats:
    """A snapshot for a live display (:meth:`Recorder.stats`)."""

    path: Path
    tables: Mapping[str, TableStats]
    queue_bytes: int
    queue_max_bytes: int
    commits: int
    last_commit_unix_s: float | None
    overruns: int  # append() calls refused, all tables
    rows_lost: int
    file_bytes: int
    error: str | None
    closed: bool

    @property
    def queue_fill(self) -> float:
        """Queue fill, 0..1 (the overrun events themselves may go beyond the bound)."""
        return min(1.0, self.queue_bytes / self.queue_max_bytes)


@dataclasses.dataclass
class _TableCounters:
    rows_appended: int = 0
    rows_written: int = 0
    rows_committed: int = 0
    bytes_appended: int = 0
    bytes_written: int = 0
    rows_lost: int = 0
    overruns: int = 0
    # the open overrun episode: (first lost row index, rows lost, bytes lost, t0_ns, t1_ns)
    loss: list[int] | None = None


@dataclasses.dataclass
class _Item:
    index: int  # table index
    rows: np.ndarray
    nbytes: int
    seq: int


# -- per-table writers (writer thread only) -------------------------------------------------
class _TableWriter:
    """Appends a table's rows: at most :data:`WRITE_PIECE_BYTES` (or one row, if larger)
    per h5py call."""

    def __init__(self, ds: h5py.Dataset, spec: Table) -> None:
        self.ds = ds
        self.rows = 0
        self.step = max(1, WRITE_PIECE_BYTES // max(1, spec.row_bytes))

    def write(self, arr: np.ndarray) -> None:
        n = arr.shape[0]
        if n == 0:
            return
        self.ds.resize(self.rows + n, axis=0)
        for a in range(0, n, self.step):
            b = min(n, a + self.step)
            self.ds[self.rows + a : self.rows + b] = arr[a:b]
        self.rows += n


# -- the recorder ---------------------------------------------------------------------------
_OPEN: weakref.WeakSet[Recorder] = weakref.WeakSet()


#: How long the interpreter's exit waits for each recorder left open to drain and close. The
#: default queue (256 MiB) takes about 6 s to write at gzip's ~40 MB/s: a writer still busy
#: after a minute is stuck (a hung disk), and waiting longer would hang the exit; the file
#: then keeps its last commit.
EXIT_CLOSE_TIMEOUT_S = 60.0


@atexit.register
def _close_open_recorders() -> None:  # pragma: no cover - interpreter exit
    for rec in list(_OPEN):
        try:
            rec.close(timeout_s=EXIT_CLOSE_TIMEOUT_S)
        except Exception:
            _log.exception("closing %s at exit failed", rec.path)


class Recorder:
    """Writes one recording (layout: ``docs/recording.md``); use as a context manager.

    ``path``: the new file (refused if it exists unless ``overwrite``). ``schema``: what it
    holds. ``flush_interval_s``: how often written rows are committed (made visible to
    readers and crash-safe); a run killed at time t keeps every row appended before about
    t - ``flush_interval_s`` (if the writer kept up). ``queue_max_bytes``: the queue bound
    (see the module doc's overrun policy). ``on_error(exc)``: called with every
    :class:`RecorderOverrun` episode and the writer's error, from the thread that detected it
    (the appending thread, or the writer thread); keep it short and do not raise. It may
    call :meth:`close` (from the writer thread that only marks the recorder closed), but not
    :meth:`flush` from an appending thread (that would wait for the writer there).

    Threads: :meth:`append`, :meth:`append_row`, :meth:`event` and :meth:`stats` may be
    called from any thread, concurrently. Each table's rows keep the order of its appends.
    """

    def __init__(
        self,
        path: Path | str,
        schema: Schema,
        *,
        flush_interval_s: float = 1.0,
        queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
        on_error: Callable[[RecorderError], None] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if not isinstance(schema, Schema):
            raise TypeError(f"{self.path}: schema must be a Schema, got {type(schema).__name__}")
        if not (isinstance(flush_interval_s, int | float) and 0 < flush_interval_s < math.inf):
            raise ValueError(
                f"{self.path}: flush_interval_s {flush_interval_s!r}: expected a time > 0 [s]"
            )
        if not isinstance(queue_max_bytes, int) or queue_max_bytes < 1:
            raise ValueError(f"{self.path}: queue_max_bytes {queue_max_bytes!r}: expected >= 1")
        self.schema = schema
        self.flush_interval_s = float(flush_interval_s)
        self.queue_max_bytes = queue_max_bytes
        self._on_error = on_error
        self._specs: tuple[Table, ...] = (*schema.tables, _events_table())
        self._names = (*[t.path for t in schema.tables], EVENTS_TABLE)
        self._index = {name: k for k, name in enumerate(self._names)}
        self._counters = [_TableCounters() for _ in self._names]

        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._item_seq = 0
        self._written_seq = 0
        self._committed_seq = 0
        self._flush_wanted = 0
        self._stop = False
        self._closed = False
        self._error: RecorderError | None = None
        self._error_cause: BaseException | None = None
        self._commits = 0
        self._last_commit_unix_s: float | None = None
        self._overruns = 0

        self._file = self._create(overwrite)
        self._thread = threading.Thread(
            target=self._run, name=f"h5record {self.path.name}", daemon=True
        )
        self._thread.start()
        _OPEN.add(self)

    # -- creation ---------------------------------------------------------------------------
    def _create(self, overwrite: bool) -> h5py.File:
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path}: exists; recordings are never overwritten "
                "(choose another name, or pass overwrite=True)"
            )
        try:
            f = h5py.File(
                self.path,
                # "x" fails if the file appeared since the check above (two runs starting in
                # the same second): never truncate another writer's recording
                "w" if overwrite else "x",
                libver=("v110", "v110"),  # SWMR needs >= 1.10; readable by HDF5 >= 1.10
            )
        except FileExistsError as exc:
            raise FileExistsError(
                f"{self.path}: exists; recordings are never overwritten "
                "(choose another name, or pass overwrite=True)"
            ) from exc
        except OSError as exc:
            raise RecorderError(self.path, f"cannot create the file: {exc}") from exc
        try:
            self._populate(f)
            f.flush()
            f.swmr_mode = True
        except BaseException as exc:
            f.close()
            try:
                self.path.unlink()
            except OSError:
                pass
            if isinstance(exc, TypeError | ValueError):
                raise
            raise RecorderError(self.path, f"cannot create the recording: {exc}") from exc
        return f

    def _populate(self, f: h5py.File) -> None:
        schema = self.schema
        f.attrs["format"] = schema.format.name
        f.attrs["format_version"] = schema.format.version_text
        f.attrs["engine"] = ENGINE_NAME
        f.attrs["engine_version"] = f"{ENGINE_VERSION[0]}.{ENGINE_VERSION[1]}"
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        version = labctl_version()
        if version is not None:
            f.attrs["labctl_version"] = version
        for key, value in schema.attrs.items():
            f.attrs[key] = _attr(value)
        for st in schema.statics:
            if isinstance(st.data, str):
                ds = f.create_dataset(st.path, data=st.data, dtype=STRING)
            else:
                ds = f.create_dataset(st.path, data=st.data)
            for key, value in st.attrs.items():
                ds.attrs[key] = _attr(value)
        self._datasets: list[h5py.Dataset] = []
        for name, spec in zip(self._names, self._specs, strict=True):
            kwargs: dict[str, Any] = {}
            if spec.compression == "gzip":
                kwargs = {"compression": "gzip", "compression_opts": spec.gzip_level}
                kwargs["shuffle"] = True
            elif spec.compression == "lzf":
                kwargs = {"compression": "lzf"}
            ds = f.create_dataset(
                name,
                shape=(0, *spec.row_shape),
                maxshape=(None, *spec.row_shape),
                chunks=(spec.chunk_rows, *spec.row_shape),
                dtype=spec.dtype,
                # this table's own chunk cache: the chunk being filled and the next one
                # (see MAX_COMPRESSED_CHUNK_BYTES); HDF5's default 521 slots
                rdcc_nbytes=_chunk_cache_bytes(spec),
                **kwargs,
            )
            for key, value in spec.attrs.items():
                ds.attrs[key] = _attr(value)
            self._datasets.append(ds)
        for gpath, gattrs in schema.groups.items():
            g = f.require_group(gpath)
            for key, value in gattrs.items():
                g.attrs[key] = _attr(value)
        meta = f[META_GROUP]
        meta.attrs["flush_interval_s"] = self.flush_interval_s
        meta.attrs["queue_max_bytes"] = np.int64(self.queue_max_bytes)
        meta.attrs["doc"] = "docs/recording.md in the labctl repository"
        meta.create_dataset(TABLES_PATH.split("/", 1)[1], data=list(self._names), dtype=STRING)
        meta.create_dataset(
            STATICS_PATH.split("/", 1)[1], data=[s.path for s in schema.statics], dtype=STRING
        )
        n = len(self._names)
        commit = meta.create_dataset(COMMIT_PATH.split("/", 1)[1], shape=(2, n + 3), dtype="<i8")
        commit[1] = encode_commit(1, time.time_ns(), [0] * n)  # seq 1 lives in slot 1
        self._commit_seq = 1
        meta.create_dataset(CLOSED_PATH.split("/", 1)[1], data=np.int64(0))
        self._commit_ds = commit
        self._writers = [
            _TableWriter(ds, spec) for ds, spec in zip(self._datasets, self._specs, strict=True)
        ]

    # -- public API -------------------------------------------------------------------------
    @property
    def tables(self) -> tuple[str, ...]:
        """The schema's table names (the engine's events table excluded)."""
        return self._names[:-1]

    @property
    def overrun(self) -> bool:
        """True once any rows were refused because the queue was full."""
        with self._cond:
            return self._overruns > 0

    def append(self, table: str, rows: Any) -> int:
        """Queue ``rows`` (shape ``(n, *row_shape)``) for ``table``; returns the row index the
        first of them gets in the file. Never blocks on I/O: validates (``TypeError`` /
        ``ValueError`` naming the table), copies, enqueues. Raises :class:`RecorderOverrun`
        if the queue is full (see the module doc) and the writer's :class:`RecorderError`
        once it failed."""
        k = self._table_index(table)
        arr = self._coerce(k, rows, single=False)
        return self._enqueue(k, arr)

    def append_row(self, table: str, row: Any) -> int:
        """:meth:`append` of one row of shape ``row_shape`` (a scalar or str if ``()``)."""
        k = self._table_index(table)
        arr = self._coerce(k, row, single=True)
        return self._enqueue(k, arr)

    def event(self, kind: str, text: str, *, table: str = "") -> int:
        """Append a note to ``/_recording/events`` (e.g. kind "settings", JSON text)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"{self.path}: event kind {kind!r}: expected a non-empty string")
        if not isinstance(text, str):
            raise TypeError(f"{self.path}: event text must be a string, got {type(text)}")
        _require_str(np.array([kind, text], dtype=object), f"{self.path}: event")
        if table:
            self._table_index(table)
        row = np.zeros(1, dtype=EVENT_DTYPE)
        row[0] = (time.time_ns(), kind, table, -1, 0, text)
        return self._enqueue(len(self._names) - 1, row)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything appended before this call is committed (a control call, not
        for acquisition threads). Raises the writer's error, or :class:`RecorderError` after
        ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._raise_if_failed_locked()
            # no early return once close() was called: its writer may still be draining the
            # queue, and the loop below waits for that (after the writer ended, everything
            # appended is committed and it does not wait)
            target = self._item_seq
            self._flush_wanted = max(self._flush_wanted, target)
            self._cond.notify_all()
            while self._committed_seq < target and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RecorderError(self.path, f"flush not done within {timeout_s} s")
                self._cond.wait(left)
            self._raise_if_failed_locked()

    def stats(self) -> RecorderStats:
        """Counters for a live display (cheap; any thread)."""
        with self._cond:
            tables = {
                name: TableStats(
                    c.rows_appended,
                    c.rows_written,
                    c.rows_committed,
                    c.bytes_appended,
                    c.bytes_written,
                    c.rows_lost,
                    c.overruns,
                )
                for name, c in zip(self._names, self._counters, strict=True)
            }
            queued = self._queued_bytes
            commits, last = self._commits, self._last_commit_unix_s
            overruns = self._overruns
            error = None if self._error is None else str(self._error)
            closed = self._closed
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return RecorderStats(
            path=self.path,
            tables=tables,
            queue_bytes=queued,
            queue_max_bytes=self.queue_max_bytes,
            commits=commits,
            last_commit_unix_s=last,
            overruns=overruns,
            rows_lost=sum(t.rows_lost for t in tables.values()),
            file_bytes=size,
            error=error,
            closed=closed,
        )

    def close(self, timeout_s: float | None = None) -> None:
        """Write everything queued, log open overrun episodes, commit, mark the file complete
        (``/_recording/closed_unix_ns``), close it. Raises the writer's error if it failed
        (the file then keeps its last commit), and :class:`RecorderError` if the writer is
        still busy after ``timeout_s`` (None: wait as long as it takes; it goes on writing,
        and a later ``close()`` waits again). Idempotent; appends fail once it was called.
        Called from the writer thread (an ``on_error`` callback), it only stops the writer."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._flush_losses_locked()
                self._stop = True
                self._cond.notify_all()
        if threading.current_thread() is self._thread:
            return  # joining itself would raise; the writer stops after this callback
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RecorderError(
                self.path,
                f"close() not done within {timeout_s} s: the writer is still writing "
                f"({self.stats().queue_bytes} bytes queued); the file keeps its last commit",
            )
        _OPEN.discard(self)
        with self._cond:
            self._raise_if_failed_locked()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, format={self.schema.format.name!r})"

    # -- appending (caller's thread) --------------------------------------------------------
    def _table_index(self, table: str) -> int:
        k = self._index.get(table) if isinstance(table, str) else None
        if k is None or k == len(self._names) - 1:
            raise ValueError(
                f"{self.path}: no table {table!r} in this recording; tables: {list(self.tables)}"
            )
        return k

    def _coerce(self, k: int, rows: Any, *, single: bool) -> np.ndarray:
        spec = self._specs[k]
        where = f"{self.path}: table {spec.path!r}"
        dt = spec.dtype
        if _bytes_copyable(rows, dt, spec.row_shape, single):
            # rows already exactly as stored (e.g. a packed tag array): one byte copy, which
            # is ~10x faster than numpy's field-by-field copy of a structured array
            out = np.empty(rows.shape, dtype=dt)
            out.view(np.uint8).reshape(-1)[:] = rows.view(np.uint8).reshape(-1)
            return out
        if is_text(dt):
            arr = np.array(rows, dtype=object)
            _require_str(arr, where)
        elif dt.names is not None:
            arr = self._coerce_structured(rows, dt, where)
        else:
            arr = _coerce_plain(rows, dt, where)
        shape = spec.row_shape
        if single:
            if arr.shape != shape:
                raise ValueError(f"{where}: a row has shape {arr.shape}, expected {shape}")
            arr = arr.reshape(1, *shape)
        elif arr.ndim != 1 + len(shape) or arr.shape[1:] != shape:
            raise ValueError(
                f"{where}: rows have shape {arr.shape}, expected (n, {', '.join(map(str, shape))})"
                if shape
                else f"{where}: rows have shape {arr.shape}, expected (n,)"
            )
        out = np.empty(arr.shape, dtype=dt)
        out[...] = arr  # the copy the queue keeps (the caller may reuse its buffer)
        return out

    @staticmethod
    def _coerce_structured(rows: Any, dt: np.dtype, where: str) -> np.ndarray:
        assert dt.names is not None
        if isinstance(rows, np.ndarray):
            if rows.dtype.names is None or tuple(rows.dtype.names) != tuple(dt.names):
                raise TypeError(
                    f"{where}: rows have fields {rows.dtype.names}, expected {dt.names}"
                )
            out = np.empty(rows.shape, dtype=dt)
            for name in dt.names:
                src, dst = rows.dtype.fields[name][0], dt.fields[name][0]
                if has_strings(dst):
                    vals = np.asarray(rows[name], dtype=object)
                    _require_str(vals, f"{where}: field {name!r}")
                    out[name] = vals
                elif not np.can_cast(src, dst, "safe"):
                    raise TypeError(
                        f"{where}: field {name!r} of dtype {src} cannot be stored as {dst} "
                        "without loss (cast it explicitly)"
                    )
                else:
                    out[name] = rows[name]
            return out
        try:
            with np.errstate(all="ignore"):  # overflows are found below, by field
                arr = np.array(rows, dtype=dt)
            # the same rows with every field as Python objects: numpy's conversion above
            # truncates 1.5 to 1 in an integer field; each field is checked as a plain list
            loose = np.array(rows, dtype=_object_fields(dt))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{where}: rows do not fit the dtype {dt}: {exc}") from exc
        _check_fields(loose, dt, where)
        return arr

    def _enqueue(self, k: int, arr: np.ndarray) -> int:
        n = int(arr.shape[0])
        nbytes = _payload_bytes(arr)
        callback_exc: RecorderOverrun | None = None
        with self._cond:
            self._raise_if_failed_locked()
            if self._closed:
                raise RecorderError(self.path, "append after close()", self._names[k])
            c = self._counters[k]
            first_row = c.rows_appended
            if n == 0:
                return first_row
            if nbytes > self.queue_max_bytes:
                raise ValueError(
                    f"{self.path}: table {self._names[k]!r}: {nbytes} bytes in one append "
                    f"exceed the whole queue ({self.queue_max_bytes} bytes): split it or "
                    "raise queue_max_bytes"
                )
            if self._queued_bytes + nbytes > self.queue_max_bytes:
                now = time.time_ns()
                exc = RecorderOverrun(
                    self.path, self._names[k], n, self._queued_bytes, self.queue_max_bytes
                )
                self._overruns += 1
                c.overruns += 1
                c.rows_lost += n
                if c.loss is None:
                    c.loss = [first_row, n, nbytes, now, now]
                    callback_exc = exc
                else:
                    c.loss[1] += n
                    c.loss[2] += nbytes
                    c.loss[4] = now
            else:
                exc = None
                if c.loss is not None:
                    self._flush_loss_locked(k)
                self._put_locked(k, arr, nbytes)
                c.rows_appended += n
                c.bytes_appended += nbytes
        if exc is not None:
            if callback_exc is not None:
                _log.warning("%s", exc)
                self._call_on_error(callback_exc)
            raise exc
        return first_row

    def _put_locked(self, k: int, arr: np.ndarray, nbytes: int) -> None:
        self._item_seq += 1
        self._queue.append(_Item(k, arr, nbytes, self._item_seq))
        self._queued_bytes += nbytes
        self._cond.notify_all()

    def _flush_loss_locked(self, k: int) -> None:
        """Queue the ``overrun`` event of table ``k``'s open loss episode (outside the bound:
        the record of a gap must not itself be refused)."""
        c = self._counters[k]
        assert c.loss is not None
        row, n, nbytes, t0, t1 = c.loss
        c.loss = None
        text = (
            f"{n} row(s) ({nbytes} bytes) of {self._names[k]!r} refused between "
            f"{_iso(t0)} and {_iso(t1)}: the recording queue was full "
            f"({self.queue_max_bytes} bytes); they are missing just before row {row}"
        )
        ev = np.zeros(1, dtype=EVENT_DTYPE)
        ev[0] = (t0, "overrun", self._names[k], row, n, text)
        e = len(self._names) - 1
        self._put_locked(e, ev, _payload_bytes(ev))
        self._counters[e].rows_appended += 1
        self._counters[e].bytes_appended += _payload_bytes(ev)

    def _flush_losses_locked(self) -> None:
        for k, c in enumerate(self._counters):
            if c.loss is not None:
                self._flush_loss_locked(k)

    def _raise_if_failed_locked(self) -> None:
        err = self._error
        if err is not None:
            raise RecorderError(err.path, err.problem, err.table) from self._error_cause

    def _call_on_error(self, exc: RecorderError) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(exc)
        except Exception:
            _log.exception("%s: the on_error callback raised", self.path)

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        # what the writer is doing, for the error message: (phase, table or None)
        self._doing: tuple[str, str | None] = ("starting", None)
        self._unflushed: set[int] = set()  # tables written since the last commit
        try:
            next_commit = time.monotonic() + self.flush_interval_s
            dirty = False
            while True:
                with self._cond:
                    while (
                        not self._queue
                        and not self._stop
                        and self._flush_wanted <= self._committed_seq
                    ):
                        timeout = next_commit - time.monotonic() if dirty else None
                        if timeout is not None and timeout <= 0:
                            break
                        self._cond.wait(timeout)
                    batch: list[_Item] = []
                    size = 0
                    while self._queue and size < _BATCH_BYTES:
                        item = self._queue.popleft()
                        batch.append(item)
                        size += item.nbytes
                    stopping = self._stop and not self._queue
                    flush_wanted = self._flush_wanted
                for k, arrs in _group(batch):
                    self._doing = ("writing", self._names[k])
                    self._write_rows(k, arrs[0] if len(arrs) == 1 else _concatenate(arrs))
                if batch:
                    dirty = True
                    with self._cond:
                        for item in batch:
                            c = self._counters[item.index]
                            c.rows_written += item.rows.shape[0]
                            c.bytes_written += item.nbytes
                            self._queued_bytes -= item.nbytes
                        self._written_seq = batch[-1].seq
                now = time.monotonic()
                if dirty and (now >= next_commit or stopping or flush_wanted > self._committed_seq):
                    self._commit()
                    dirty = False
                    next_commit = now + self.flush_interval_s
                elif not dirty:
                    next_commit = now + self.flush_interval_s
                if stopping:
                    self._finish()
                    return
        except BaseException as exc:
            self._fail(exc)

    def _write_rows(self, k: int, rows: np.ndarray) -> None:
        """Hand rows of table ``k`` to its writer (writer thread; a seam for tests)."""
        self._unflushed.add(k)
        self._writers[k].write(rows)

    def _commit(self) -> None:
        """The commit protocol of the module doc (writer thread)."""
        for k in sorted(self._unflushed):  # each table's rows, so an error names its table
            self._doing = ("writing", self._names[k])
            self._datasets[k].flush()
        self._unflushed.clear()
        self._doing = ("committing (flushing the file)", None)
        self._file.flush()  # 1. every written row is in the file (text: its global heap)
        counts = [w.rows for w in self._writers]
        with self._cond:
            written_seq = self._written_seq
        self._commit_seq += 1
        t_ns = time.time_ns()
        self._commit_ds[self._commit_seq % 2] = encode_commit(self._commit_seq, t_ns, counts)
        self._file.flush()  # 2. the commit slot
        with self._cond:
            for c, n in zip(self._counters, counts, strict=True):
                c.rows_committed = n
            self._committed_seq = written_seq
            self._commits += 1
            self._last_commit_unix_s = t_ns / 1e9
            self._cond.notify_all()

    def _finish(self) -> None:
        """Mark the file complete and close it (writer thread, after the last commit)."""
        self._doing = ("closing", None)
        with self._cond:  # everything written is committed: flush() waiters may go
            self._committed_seq = max(self._committed_seq, self._written_seq)
            self._cond.notify_all()
        self._file[CLOSED_PATH][()] = np.int64(time.time_ns())
        self._file.flush()
        self._file.close()

    def _fail(self, exc: BaseException) -> None:
        phase, table = self._doing
        err = RecorderError(self.path, f"{phase} failed: {type(exc).__name__}: {exc}", table)
        with self._cond:
            self._error = err
            self._error_cause = exc
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()
        _log.error("%s (the file keeps its last commit)", err)
        self._abandon_file()
        self._call_on_error(err)

    def _abandon_file(self) -> None:
        """Close the HDF5 file after a failure without writing to it again.

        After a failed write (disk full), HDF5 2.0 cannot close the file: the close fails,
        and the half-closed handles crash the process (SIGSEGV in ``H5D__flush_all_cb``)
        when they are garbage-collected, even without SWMR. So the file's descriptor is
        first pointed at /dev/null: the close then succeeds, writing nowhere, and the file
        on disk keeps exactly its state at the failure (its last commit is intact)."""
        try:
            fd = self._file.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except Exception:
            _log.exception("%s: could not detach the failed file", self.path)
        try:
            self._file.close()
        except Exception:
            _log.exception("%s: closing the failed file", self.path)


# -- helpers --------------------------------------------------------------------------------
def _chunk_cache_bytes(spec: Table) -> int:
    """A table's chunk cache: two of its chunks, at least 64 KiB (the chunk being filled and
    the next; a compressed chunk that does not fit would be recompressed at every write)."""
    return max(64 * 1024, 2 * spec.chunk_bytes)


def _group(batch: list[_Item]) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Items grouped by table, each table's items in queue order."""
    groups: dict[int, list[np.ndarray]] = {}
    for item in batch:
        groups.setdefault(item.index, []).append(item.rows)
    return iter(groups.items())


def _bytes_copyable(rows: Any, dt: np.dtype, row_shape: tuple[int, ...], single: bool) -> bool:
    """True if ``rows`` is a C-contiguous array of exactly the table's dtype (no text fields)
    and row shape, so its bytes can be queued as they are."""
    return (
        not single
        and isinstance(rows, np.ndarray)
        and rows.dtype == dt
        and rows.shape[1:] == row_shape
        and rows.ndim == 1 + len(row_shape)
        and rows.flags.c_contiguous
        and not has_strings(dt)
        and dt.itemsize > 0
    )


def _concatenate(arrs: list[np.ndarray]) -> np.ndarray:
    """Rows of one table concatenated, through byte views when there is no text (numpy
    copies structured arrays field by field otherwise)."""
    dt = arrs[0].dtype
    if dt.names is None or has_strings(dt):
        return np.concatenate(arrs)
    out = np.empty((sum(a.shape[0] for a in arrs), *arrs[0].shape[1:]), dtype=dt)
    flat = out.view(np.uint8).reshape(-1)
    pos = 0
    for a in arrs:
        n = a.nbytes
        flat[pos : pos + n] = a.view(np.uint8).reshape(-1)
        pos += n
    return out


def _coerce_plain(rows: Any, dt: np.dtype, where: str) -> np.ndarray:
    """Rows as an array that converts to ``dt`` without loss: numpy arrays must cast safely
    (int16 -> float64 yes, float64 -> float32 no: cast explicitly); Python numbers and lists
    may be narrowed within their kind if the values are unchanged (ints in range)."""
    if isinstance(rows, np.ndarray | np.generic):
        arr = np.asarray(rows)
        if not np.can_cast(arr.dtype, dt, "safe"):
            raise TypeError(
                f"{where}: rows of dtype {arr.dtype} cannot be stored as {dt} without loss "
                "(cast them explicitly)"
            )
        return arr
    try:
        arr = np.asarray(rows)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: rows are not an array of {dt}: {exc}") from exc
    if arr.size == 0:  # [] is float64 to numpy, yet holds no value to lose
        return arr.astype(dt)
    if arr.dtype.kind not in "biufcS":
        raise TypeError(f"{where}: rows of {arr.dtype} ({type(rows).__name__}) are not {dt}")
    if np.can_cast(arr.dtype, dt, "safe"):
        return arr
    if np.can_cast(arr.dtype, dt, "same_kind") or (arr.dtype.kind == "i" and dt.kind == "u"):
        with np.errstate(all="ignore"):
            out = arr.astype(dt)
        if dt.kind in "iuS" and not np.array_equal(out.astype(arr.dtype), arr):
            raise ValueError(f"{where}: values out of the range of {dt}")
        if dt.kind in "fc" and not np.array_equal(np.isfinite(out), np.isfinite(arr)):
            # rounding to the narrower float is accepted; 1e300 becoming inf is not
            raise ValueError(f"{where}: values out of the range of {dt}")
        return out
    raise TypeError(f"{where}: rows of {arr.dtype} cannot be stored as {dt} without loss")


def _object_fields(dt: np.dtype) -> np.dtype:
    """``dt`` with every leaf field replaced by Python objects (subarray shapes kept)."""
    assert dt.names is not None
    fields = []
    for name in dt.names:
        sub = dt.fields[name][0]
        if sub.names is not None:
            fields.append((name, _object_fields(sub)))
        elif sub.subdtype is not None:
            fields.append((name, object, sub.subdtype[1]))
        else:
            fields.append((name, object))
    return np.dtype(fields)


def _check_fields(loose: np.ndarray, dt: np.dtype, where: str) -> None:
    """Check each field of ``loose`` (from :func:`_object_fields`) converts to its field of
    ``dt`` as :func:`_coerce_plain` accepts plain Python values (text: as str)."""
    assert dt.names is not None
    for name in dt.names:
        sub, col, here = dt.fields[name][0], loose[name], f"{where}: field {name!r}"
        if sub.names is not None:
            _check_fields(col, sub, here)
        elif has_strings(sub):
            _require_str(col, here)
        else:
            _coerce_plain(col.tolist(), sub.subdtype[0] if sub.subdtype else sub, here)


def _require_str(values: np.ndarray, where: str) -> None:
    """Refuse what HDF5 text cannot hold, here rather than in the writer thread."""
    for x in np.asarray(values, dtype=object).flat:
        if not isinstance(x, str):
            raise TypeError(f"{where}: expected str, got {type(x).__name__} {x!r}")
        if "\x00" in x:
            raise ValueError(f"{where}: HDF5 text cannot hold NUL characters: {x!r}")
        if not x.isascii():
            try:
                x.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{where}: {x!r} is not valid UTF-8 text: {exc}") from exc


def _payload_bytes(arr: np.ndarray) -> int:
    """Bytes a queued array holds: its buffer plus the UTF-8 length of its strings."""
    n = int(arr.nbytes)
    dt = arr.dtype
    if dt.names is None:
        if dt.kind == "O":
            n += sum(_utf8_len(s) for s in arr.flat)
        return n
    for name in dt.names:
        if dt.fields[name][0].kind == "O":
            n += sum(_utf8_len(s) for s in arr[name].flat)
    return n


def _utf8_len(text: str) -> int:
    """UTF-8 length of ``text`` (``str.isascii`` is O(1) in CPython: encode only non-ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _iso(t_ns: int) -> str:
    return _dt.datetime.fromtimestamp(t_ns / 1e9, _dt.UTC).isoformat(timespec="milliseconds")


__all__ = [
    "CLOSED_PATH",
    "COMMIT_PATH",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_QUEUE_MAX_BYTES",
    "ENGINE_NAME",
    "ENGINE_VERSION",
    "EVENTS_TABLE",
    "EVENT_DTYPE",
    "EXIT_CLOSE_TIMEOUT_S",
    "META_GROUP",
    "STATICS_PATH",
    "STRING",
    "TABLES_PATH",
    "FormatId",
    "Recorder",
    "RecorderError",
    "RecorderOverrun",
    "RecorderStats",
    "Schema",
    "Static",
    "Table",
    "TableStats",
    "decode_commit",
    "encode_commit",
    "has_strings",
    "labctl_version",
]

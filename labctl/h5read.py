"""Reading labctl recordings (:mod:`labctl.h5record`): finished, crashed or being written.

:func:`open_recording` opens a file in SWMR read mode, which also opens a file whose writer
was killed (HDF5 then refuses a plain open until ``h5clear -s``: see ``docs/recording.md``),
checks what it is (engine and format names and versions) and reads the commit record: every
table shows exactly its committed rows, consistent across tables at one instant, never a
row written after the last commit or half written by a killed process.

Following a live file: ``open_recording(path, follow=True)``, then :meth:`Recording.refresh`
whenever you want newer rows. A refresh reopens the file rather than calling h5py's
``Dataset.refresh()``: the latter reloads a dataset's own metadata but not the global heap
that holds variable-length strings, and reading text rows added since then failed here
with "address of object past end of allocation". Reopening costs about a millisecond and
leaves no stale cache anywhere; a read of a live file that fails that way is retried on a
fresh handle (:meth:`Recording._read_rows`). Do not read a recording from the process
writing it, and keep one :class:`Recording` per file per process (HDF5 shares one metadata
cache between the handles of a file in a process).

Every problem is a :class:`RecordingError` naming the file and what is wrong.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labctl.h5record import (
    CLOSED_PATH,
    COMMIT_PATH,
    ENGINE_NAME,
    ENGINE_VERSION,
    EVENTS_TABLE,
    META_GROUP,
    STATICS_PATH,
    TABLES_PATH,
    FormatId,
    decode_commit,
    is_text,
)


class RecordingError(Exception):
    """A recording cannot be read as asked: ``path`` and ``problem`` (also the message)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """A table's declaration as stored, and its committed row count."""

    name: str
    dtype: np.dtype
    row_shape: tuple[int, ...]
    rows: int
    chunk_rows: int
    compression: str | None
    attrs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Gap:
    """Rows of ``table`` refused by the recorder (queue full): ``rows_lost`` rows are missing
    just before row ``row``; the first was refused at ``t_unix_s``."""

    table: str
    row: int
    rows_lost: int
    t_unix_s: float
    text: str


@dataclasses.dataclass(frozen=True)
class _State:
    """What one opening of the file found (replaced as a whole by a refresh)."""

    file: h5py.File
    commit_seq: int
    committed_unix_s: float
    counts: dict[str, int]
    closed_unix_s: float | None


_log = logging.getLogger(__name__)
#: Reads of committed rows of a live file retried on a fresh handle (see
#: :meth:`Recording._read_rows`): the writer would have to outgrow the heap again within the
#: millisecond between a reopen and the read, three times in a row.
_LIVE_READ_RETRIES = 3
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")


class Recording:
    """An open recording (see :func:`open_recording`); close it or use ``with``.

    Attributes: ``path``, ``format`` (:class:`FormatId` as stored), ``engine_version``,
    ``attrs`` (all root attributes, read once at open: a dict of str, int, float, bool,
    lists of str or arrays), ``created`` (ISO 8601 UTC), ``labctl_version`` (or None),
    ``flush_interval_s`` of the writer, ``tables`` and ``statics`` (names).
    ``complete`` is True once the writer closed the file normally; a crashed or still
    running recording is not complete.

    Reading is by row range: :meth:`table` reads only the chunks holding the rows asked
    for, so ``table(name, start=-100)`` of a 10 GB file reads about 100 rows. Not
    thread-safe: one Recording per thread (and per file per process, see the module doc).
    """

    def __init__(self, path: Path, state: _State, follow: bool) -> None:
        self.path = path
        self.follow = follow
        f = state.file
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        self.attrs: dict[str, Any] = attrs
        self.format = FormatId(str(attrs["format"]), _parse_version(path, attrs, "format_version"))
        self.engine_version = _parse_version(path, attrs, "engine_version")
        self.created = str(attrs.get("created", ""))
        self.labctl_version: str | None = attrs.get("labctl_version")
        self.flush_interval_s = float(_attr_value(f[META_GROUP].attrs.get("flush_interval_s", 0)))
        names = tuple(state.counts)
        self.tables: tuple[str, ...] = tuple(n for n in names if n != EVENTS_TABLE)
        self.statics: tuple[str, ...] = tuple(
            _read(path, "the list of static datasets", lambda: f[STATICS_PATH].asstr()[()])
        )
        self._state = state
        self._closed = False

    # -- status -----------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True if the writer closed the file normally (all rows committed)."""
        return self._state.closed_unix_s is not None

    @property
    def closed_unix_s(self) -> float | None:
        """When the writer closed the file (s since 1970, UTC), None if it did not."""
        return self._state.closed_unix_s

    @property
    def committed_unix_s(self) -> float:
        """When the commit being shown was made (s since 1970, UTC)."""
        return self._state.committed_unix_s

    @property
    def commit_seq(self) -> int:
        """Sequence number of the commit being shown (grows by one per commit)."""
        return self._state.commit_seq

    # -- tables -----------------------------------------------------------------------------
    def rows(self, name: str) -> int:
        """Committed rows of table ``name``."""
        self._check_table(name)
        return self._state.counts[name]

    def info(self, name: str) -> TableInfo:
        """Dtype, row shape, committed rows, chunking, compression and attributes of a table."""
        ds = self._dataset(name)

        def read() -> TableInfo:
            return TableInfo(
                name=name,
                dtype=ds.dtype,
                row_shape=tuple(ds.shape[1:]),
                rows=self._state.counts[name],
                chunk_rows=int((ds.chunks or (0,))[0]),
                compression=ds.compression,
                attrs={k: _attr_value(v) for k, v in ds.attrs.items()},
            )

        return _read(self.path, f"table {name!r}", read)

    def table(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Committed rows ``[start:stop]`` of table ``name`` (Python slice rules, step 1).

        Text comes back as str objects (also in structured fields); everything else in the
        stored dtype."""
        self._check_table(name)
        a, b, _ = slice(start, stop).indices(self._state.counts[name])
        b = max(a, b)

        def read(f: h5py.File) -> np.ndarray:
            ds = f[name]
            if is_text(ds.dtype):
                return np.asarray(ds.asstr()[a:b], dtype=object)
            return _decode_fields(ds[a:b])

        return self._read_rows(f"table {name!r} rows {a}..{b}", read)

    def static(self, name: str) -> Any:
        """A static dataset: str for a text scalar (e.g. the bench file), else an array."""
        f = self._file()
        if name not in self.statics:
            raise RecordingError(
                self.path, f"no static dataset {name!r}; static datasets: {list(self.statics)}"
            )
        ds = _read(self.path, f"static dataset {name!r}", lambda: f[name])

        def read() -> Any:
            if is_text(ds.dtype):
                value = ds.asstr()[()]
                return value if isinstance(value, str) else np.asarray(value, dtype=object)
            return ds[()]

        return _read(self.path, f"static dataset {name!r}", read)

    def events(self) -> np.ndarray:
        """Committed rows of ``/_recording/events`` (overruns and the writer's notes)."""
        n = self._state.counts[EVENTS_TABLE]
        return self._read_rows("the events table", lambda f: _decode_fields(f[EVENTS_TABLE][:n]))

    def gaps(self, table: str | None = None) -> list[Gap]:
        """Where rows are missing because the recorder refused them (all tables, or one)."""
        if table is not None:
            self._check_table(table)
        out = []
        for ev in self.events():
            if ev["kind"] == "overrun" and (table is None or ev["table"] == table):
                out.append(
                    Gap(
                        str(ev["table"]),
                        int(ev["row"]),
                        int(ev["rows"]),
                        int(ev["t_unix_ns"]) / 1e9,
                        str(ev["text"]),
                    )
                )
        return out

    # -- following --------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Pick up the writer's newest commit (``follow=True`` only); True if it changed.

        Reopens the file (see the module doc). If that fails, the error says why and this
        Recording is closed."""
        if not self.follow:
            raise RecordingError(self.path, "refresh() needs open_recording(..., follow=True)")
        self._file()  # refuses a closed Recording
        old = self._state
        # Close first: HDF5 shares one metadata cache between handles on the same file in a
        # process, so a second handle opened while the first is open sees stale extents.
        old.file.close()
        self._closed = True  # until the file is open again
        new = _load(self.path, self.format.name, self.format.version)
        if set(new.counts) != set(old.counts):
            new.file.close()
            raise RecordingError(self.path, "the file's list of tables changed while following")
        self._state = new
        self._closed = False
        return (new.commit_seq, new.closed_unix_s) != (old.commit_seq, old.closed_unix_s)

    def close(self) -> None:
        """Close the file (idempotent). Reading a closed Recording raises RecordingError."""
        self._closed = True
        self._state.file.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"<Recording {str(self.path)!r} {self.format.name} {state}>"

    # -- helpers ----------------------------------------------------------------------------
    def _check_table(self, name: str) -> None:
        if name not in self.tables:
            hint = " (a static dataset: use static())" if name in self.statics else ""
            raise RecordingError(self.path, f"no table {name!r}{hint}; tables: {list(self.tables)}")

    def _read_rows(self, what: str, read: Callable[[h5py.File], Any]) -> Any:
        """``read(file)`` of committed rows; in a recording not known to be complete, retried
        on a fresh handle when HDF5 fails.

        Why: a SWMR reader fixes its end of allocation when it opens the file. Reading
        committed text of a live file then sometimes fails with "address of object past end
        of allocation" or "len not positive after adjustment for EOA" (measured: 0.2-1.5 %
        of the reads of a text table while following a file written at full speed on 2
        cores), most likely because the writer has since extended, in place, the global heap
        collection holding that text, so that its header now ends past this handle's end.
        A handle opened now reads the same rows without error in every such case. Committed
        rows never change, so they are read again through a handle opened now (the commit
        shown stays the same). A damaged file fails again and is reported."""
        for attempt in range(1 + _LIVE_READ_RETRIES):
            f = self._file()
            try:
                return read(f)
            except _H5_ERRORS as exc:
                if self.complete or attempt == _LIVE_READ_RETRIES:
                    raise RecordingError(
                        self.path, f"{what} unreadable (truncated or corrupt?): {_reason(exc)}"
                    ) from exc
                _log.debug("%s: %s failed (%s); reopening", self.path, what, _reason(exc))
                self._reopen()
        raise AssertionError("unreachable")

    def _reopen(self) -> None:
        """A fresh handle on the file, keeping the commit shown (its rows stay valid)."""
        self._state.file.close()
        self._closed = True  # until the file is open again
        self._state = dataclasses.replace(self._state, file=_open_file(self.path))
        self._closed = False

    def _file(self) -> h5py.File:
        if self._closed:
            raise RecordingError(self.path, "the Recording is closed (closed, or a refresh failed)")
        return self._state.file

    def _dataset(self, name: str) -> h5py.Dataset:
        self._check_table(name)
        f = self._file()
        return _read(self.path, f"table {name!r}", lambda: f[name])


def open_recording(
    path: Path | str,
    *,
    expected_format: FormatId | str | None = None,
    follow: bool = False,
) -> Recording:
    """Open a recording written by :class:`labctl.h5record.Recorder`, finished, crashed or
    live.

    ``expected_format``: a format name, or a :class:`FormatId` whose major version is the
    newest this caller reads (a file of a newer major is refused; older majors and any
    minor are accepted: check ``Recording.format.version`` to read older layouts).
    ``follow``: allow :meth:`Recording.refresh` to follow a file still being written.
    Raises :class:`RecordingError` for a missing file, a file that is not HDF5 (or is
    truncated or corrupt), not a labctl recording, of another format or a newer version.
    """
    p = Path(path)
    if isinstance(expected_format, FormatId):
        name: str | None = expected_format.name
        version: tuple[int, int] | None = expected_format.version
    elif expected_format is None or isinstance(expected_format, str):
        name, version = expected_format, None
    else:
        raise TypeError(f"expected_format: got {expected_format!r}, expected str or FormatId")
    state = _load(p, name, version)
    try:
        return _read(p, "the recording's attributes", lambda: Recording(p, state, follow))
    except BaseException:
        state.file.close()
        raise


# -- loading --------------------------------------------------------------------------------
def _load(path: Path, name: str | None, version: tuple[int, int] | None) -> _State:
    if not path.exists():
        raise RecordingError(path, "no such file")
    if path.is_dir():
        raise RecordingError(path, "is a directory, not a recording")
    f = _open_file(path)
    try:
        return _read(path, "the recording's structure", lambda: _check(path, f, name, version))
    except BaseException:
        f.close()
        raise


def _open_file(path: Path) -> h5py.File:
    """Open read-only: normally if the file was closed normally, else in SWMR read mode.

    A plain open comes first because it is the strict one: HDF5 checks the superblock, its
    checksum and the end of file. It refuses a file whose SWMR writer is running or was
    killed (consistency flags set, "already open for write"): that file is then opened in
    SWMR read mode, which accepts the flags but skips the end-of-file check (see
    :func:`_check_inside`) and retries a metadata block that fails its checksum, assuming
    the writer is rewriting it, with a doubling sleep: 100 times by default, which never
    ends on a corrupt file (measured: a SWMR open of a file cut to 40 bytes still hung
    after 2 min). :data:`SWMR_READ_ATTEMPTS` bounds that."""

    def not_hdf5(exc: BaseException) -> RecordingError:
        return RecordingError(
            path, f"not a readable HDF5 file (truncated or corrupt?): {_reason(exc)}"
        )

    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        sb = _superblock(path)
        if sb is None or sb[0] == 0:
            raise not_hdf5(exc) from exc
        plain_error = exc
    # The writer did not close the file (running, or killed). Its last allocation may also
    # not have reached the disk (killed between writing the superblock and extending the
    # file: the plain open then says "truncated file"): the committed rows can still all
    # be there, and _check_inside decides.
    try:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
        _limit_read_attempts(fapl, SWMR_READ_ATTEMPTS)
        flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
        return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))
    except (OSError, RuntimeError, ValueError) as exc:
        raise not_hdf5(plain_error) from exc


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _superblock(path: Path) -> tuple[int, int] | None:
    """(file consistency flags, end-of-allocation address) from the superblock the recorder
    writes (version 2 or 3 at offset 0, 8-byte addresses); None for any other file. Flags
    != 0: a writer opened the file and did not close it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(36)
    except OSError:
        return None
    if len(head) < 36 or head[:8] != _SIGNATURE or head[8] not in (2, 3) or head[9] != 8:
        return None
    base, eoa = (int.from_bytes(head[k : k + 8], "little") for k in (12, 28))
    return head[11], base + eoa


#: Attempts at reading a metadata block that fails its checksum in SWMR read mode. Sleeps
#: double from 1 ns between attempts (HDF5 ``H5C__load_entry``), so 25 attempts wait at
#: most 2**25 ns = 34 ms in all: far longer than a writer takes to rewrite a block.
SWMR_READ_ATTEMPTS = 25


@functools.cache
def _hdf5_library() -> ctypes.CDLL | None:
    """h5py's own HDF5 library, for ``H5Pset_metadata_read_attempts`` (which h5py does not
    wrap), or None (logged at debug level) if it cannot be reached and proven to be h5py's.

    Which copy matters: h5py wheels bundle libhdf5 under ``h5py.libs/`` with a hashed name,
    other builds link a system one, and another package (PyTables, netCDF4) may load its own
    copy into the same process. A function of another copy acts on that copy's identifier
    table: at best an error, at worst a silent change of an unrelated property list with
    the same identifier. So the library is reached through h5py's extension module: the
    dynamic linker's ``dlsym`` on a library's handle searches that library and then the
    libraries it was linked against, that is h5py's libhdf5 whatever else is loaded (ELF
    and Mach-O; not Windows, where this returns None). Then it is checked to be the very
    instance h5py uses: a property set through it (the sieve buffer size of a fresh file
    access property list) must read back through h5py.
    """
    try:
        lib = ctypes.CDLL(h5py.h5p.__file__)  # already loaded: the same handle, no re-init
        set_attempts = lib.H5Pset_metadata_read_attempts
        set_sieve = lib.H5Pset_sieve_buf_size
    except (OSError, AttributeError) as exc:
        _log.debug("HDF5's C API is not reachable through h5py's extension module: %s", exc)
        return None
    set_attempts.argtypes = [ctypes.c_int64, ctypes.c_uint]  # (hid_t, unsigned) -> herr_t
    set_attempts.restype = ctypes.c_int
    set_sieve.argtypes = [ctypes.c_int64, ctypes.c_size_t]  # (hid_t, size_t) -> herr_t
    set_sieve.restype = ctypes.c_int
    probe = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    size = probe.get_sieve_buf_size() + 4096 + 1  # differs from the default
    if set_sieve(probe.id, size) < 0 or probe.get_sieve_buf_size() != size:
        _log.debug("the HDF5 library found beside h5py is not the instance h5py uses")
        return None
    return lib


def _limit_read_attempts(fapl: h5py.h5p.PropFAID, attempts: int) -> bool:
    """Bound HDF5's SWMR metadata read retries on ``fapl``; False (logged at debug level) if
    that is not possible: HDF5's default then applies (100 retries, endless on a damaged
    crashed file: see :func:`_open_file`)."""
    native = getattr(fapl, "set_metadata_read_attempts", None)  # if a future h5py wraps it
    if native is not None:
        native(attempts)
        return True
    lib = _hdf5_library()
    if lib is None:
        _log.debug("cannot bound HDF5's SWMR read retries: a damaged crashed file may hang")
        return False
    if lib.H5Pset_metadata_read_attempts(fapl.id, attempts) < 0:
        _log.debug("H5Pset_metadata_read_attempts failed: HDF5's default retries apply")
        return False
    return True


def _check(path: Path, f: h5py.File, name: str | None, version: tuple[int, int] | None) -> _State:
    attrs = {
        k: _attr_value(v) for k, v in _read(path, "root attributes", lambda: list(f.attrs.items()))
    }
    engine = attrs.get("engine")
    if engine != ENGINE_NAME:
        fmt = attrs.get("format")
        if engine is None and isinstance(fmt, str):
            extra = (
                " (use labctl.isaqn_record.read_isaqn_recording)" if fmt == "labctl-isaqn" else ""
            )
            raise RecordingError(
                path,
                f"a {fmt!r} file, not a labctl recording of this engine (no root attribute "
                f"'engine' = {ENGINE_NAME!r}){extra}",
            )
        found = "no root attribute 'engine'" if engine is None else f"engine {engine!r}"
        raise RecordingError(path, f"not a labctl recording ({found})")
    ev = _parse_version(path, attrs, "engine_version")
    if ev[0] > ENGINE_VERSION[0]:
        raise RecordingError(
            path,
            f"written by a newer labctl (recording engine version {ev[0]}.{ev[1]}; this reader "
            f"knows {ENGINE_VERSION[0]}.x): update labctl",
        )
    fmt_name = attrs.get("format")
    if not isinstance(fmt_name, str) or not fmt_name:
        raise RecordingError(path, "root attribute 'format' is missing")
    fv = _parse_version(path, attrs, "format_version")
    if name is not None and fmt_name != name:
        raise RecordingError(path, f"a {fmt_name!r} recording, expected {name!r}")
    if version is not None and fv[0] > version[0]:
        raise RecordingError(
            path,
            f"format {fmt_name!r} version {fv[0]}.{fv[1]} is newer than this reader's "
            f"{version[0]}.x: update labctl",
        )
    for needed in (TABLES_PATH, STATICS_PATH, COMMIT_PATH, CLOSED_PATH):
        if _read(path, f"/{needed}", lambda n=needed: n not in f):
            raise RecordingError(path, f"/{needed} is missing: not a complete labctl recording")
    names = tuple(_read(path, f"/{TABLES_PATH}", lambda: f[TABLES_PATH].asstr()[()]))
    # SWMR read mode skips HDF5's end-of-file check. Every committed byte lies below the
    # end-of-allocation address the superblock had at that commit's flush, and that address
    # only grows: if the file reaches it, nothing committed is cut off. Otherwise look.
    eof = path.stat().st_size
    sb = _superblock(path)
    scan = sb is None or sb[1] > eof
    if scan:
        _check_inside(path, f[COMMIT_PATH], None, "the commit record")
    slots = _read(path, f"/{COMMIT_PATH}", lambda: f[COMMIT_PATH][()])
    commit = decode_commit(slots, len(names))
    if commit is None:
        raise RecordingError(
            path, f"/{COMMIT_PATH} is corrupt (no slot passes its checksum): cannot trust any row"
        )
    seq, t_ns, counts = commit
    for table, count in zip(names, counts, strict=True):
        obj = _read(path, f"table {table!r}", lambda t=table: f.get(t))
        if not isinstance(obj, h5py.Dataset):
            raise RecordingError(path, f"table {table!r} is listed in /{TABLES_PATH} but missing")
        if obj.shape[0] < count:
            raise RecordingError(
                path,
                f"table {table!r}: {count} rows committed but the dataset holds only "
                f"{obj.shape[0]} (file corrupt)",
            )
        if scan:
            _check_inside(path, obj, count, f"the committed rows of table {table!r}")
    closed_ns = int(_read(path, f"/{CLOSED_PATH}", lambda: f[CLOSED_PATH][()]))
    return _State(
        file=f,
        commit_seq=seq,
        committed_unix_s=t_ns / 1e9,
        counts=dict(zip(names, counts, strict=True)),
        closed_unix_s=closed_ns / 1e9 if closed_ns > 0 else None,
    )


def _check_inside(path: Path, ds: h5py.Dataset, rows: int | None, what: str) -> None:
    """Refuse a file cut short (a copy interrupted, a full disk): in SWMR read mode HDF5
    skips its own end-of-file check, and reading past the end returns zeros, so committed
    rows would silently read as zeros. ``rows``: only chunks holding the first ``rows``
    rows matter (None: all of the dataset).

    The file's size is taken after the chunk index is read: a live writer may meanwhile
    have moved a compressed chunk to new space at the end (its data is written before the
    index entry pointing to it), which a size taken earlier would call truncated (measured:
    about 1 refresh in 400 while following a file written at full speed)."""
    end = 0

    def visit(info: Any) -> None:
        nonlocal end
        if rows is None or info.chunk_offset[0] < rows:
            end = max(end, info.byte_offset + info.size)

    def scan() -> None:
        nonlocal end
        if ds.chunks is not None:
            if rows != 0:
                ds.id.chunk_iter(visit)
        else:
            offset = ds.id.get_offset()
            if offset is not None:
                end = offset + ds.id.get_storage_size()

    _read(path, what, scan)
    eof = path.stat().st_size
    if end > eof:
        raise RecordingError(
            path, f"truncated: {what} end at byte {end} but the file has only {eof} bytes"
        )


#: What h5py raises on unreadable data (HDF5 errors map to OSError, RuntimeError, KeyError,
#: ValueError depending on the HDF5 error class).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)


def _read(path: Path, what: str, fn: Any) -> Any:
    """``fn()``, with h5py's low-level errors turned into a RecordingError naming ``what``."""
    try:
        return fn()
    except RecordingError:
        raise
    except _H5_ERRORS as exc:
        raise RecordingError(
            path, f"{what} unreadable (truncated or corrupt?): {_reason(exc)}"
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
    text = text or type(exc).__name__
    return text.splitlines()[0]


def _parse_version(path: Path, attrs: dict[str, Any], key: str) -> tuple[int, int]:
    text = attrs.get(key)
    m = _VERSION_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise RecordingError(
            path, f"root attribute {key!r} = {text!r} is not a 'MAJOR.MINOR' version"
        )
    return int(m.group(1)), int(m.group(2))


def _attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()]
    return value


def _decode_fields(arr: np.ndarray) -> np.ndarray:
    """Structured rows with their text fields as str (h5py returns bytes there)."""
    if arr.dtype.names is None:
        return arr
    for name in arr.dtype.names:
        if is_text(arr.dtype.fields[name][0]):
            col = arr[name]
            arr[name] = np.array(
                [v.decode("utf-8") if isinstance(v, bytes) else v for v in col.flat],
                dtype=object,
            ).reshape(col.shape)
    return arr


__all__ = ["Gap", "Recording", "RecordingError", "TableInfo", "open_recording"]

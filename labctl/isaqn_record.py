"""HDF5 recording of the ISAQN main job: every scope record (raw ADC codes) and every status.

:class:`IsaqnRecorder` is both sinks of :class:`labctl.isaqn_job.IsaqnJob`: pass
``recorder.record`` as the record sink and ``recorder.status`` as a status sink.
:func:`read_isaqn_recording` opens a recording again.

Layout (format ``labctl-isaqn``, version 1)::

    /                          attrs: format = "labctl-isaqn", format_version = 1,
                                      created (ISO 8601, UTC), config_path, labctl_version
                                      (when the package metadata is installed), complete
                                      (False until close(): False = interrupted run),
                                      and every key of ``meta`` (e.g. sample_rate_hz)
    /config                    scalar UTF-8 string: the full bench file text
    /raw                       attrs: n_records (complete rows), kind_coding
        codes                  int16 (n_records, 2, record_length): [:, 0] I, [:, 1] Q ADC codes;
                               one record per chunk, resizable along axis 0
        volts_per_code         float64 (n_records, 2): (I, Q) [V/code]
        offset_v               float64 (n_records, 2): (I, Q) [V]
        index                  int64 (n_records,): the job's record index
        kind                   int8 HDF5 enum (n_records,): 0 = electronic (LO off),
                               1 = shot (signal off), 2 = data
    /status                    attrs: n_updates (complete rows)
        t_s                    float64 (n_updates,): stream time of the update [s]
        records                int64 (n_updates,): records acquired so far
        overloads              int64 (n_updates,): ADC overloads so far
        messages               UTF-8 strings (n_updates,): the status messages, "\\n"-joined
        nodes/<name>/<field>   one dataset per NodeStatus field except ``name``, one row per
                               update: float -> float64 (n_updates,), int -> int64,
                               bool -> bool, tuple[float, float] (confidence intervals) ->
                               float64 (n_updates, 2). Group attr ``name``; the group
                               ``nodes`` keeps the nodes' order. A row where the node was
                               absent holds nan / -1 / False.
        location               compound (n_locations,), one row per status with a location:
                               status_row int64 (row in /status), t_s, x_m, y_m, sigma_x_m,
                               sigma_y_m, rms_residual_s float64, ambiguous bool;
                               attr n_locations (complete rows)
        location_nodes         UTF-8 strings (n_locations,): the nodes used, comma-separated
        location_arrival_s     vlen float64 (n_locations,): their arrival times [s]

Volts are ``codes * volts_per_code + offset_v`` in float64, exactly as the scope driver
computes them (:class:`drivers.scope.Waveform`), so :meth:`IsaqnRecording.volts` returns the
job's ``Record.samples`` bit for bit.

Crash safety: each :meth:`IsaqnRecorder.record` / :meth:`IsaqnRecorder.status` call writes its
rows, then bumps the ``n_*`` counter attribute, then flushes the file. A process killed between
calls leaves a file that h5py opens with every row written so far; a row half-written by a
process killed inside a call is beyond the counter and ignored by the reader. The file is
written with the default (earliest) format bounds on purpose: with ``libver="latest"`` the
superblock carries consistency flags that a killed writer leaves set, and HDF5 then refuses to
open the file until ``h5clear`` is run. SWMR (which needs that format) is not used: readers
open the file after the run, or a crashed file as is.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from labctl.isaqn_status import NetworkStatus, NodeStatus

if TYPE_CHECKING:
    from labctl.isaqn_job import Record

FORMAT_NAME = "labctl-isaqn"
FORMAT_VERSION = 1

#: ``/raw/kind`` enum coding.
KIND_CODES: dict[str, int] = {"electronic": 0, "shot": 1, "data": 2}
KIND_CODING_TEXT = ", ".join(f"{code} = {kind}" for kind, code in KIND_CODES.items())

#: Root attributes written by the recorder; ``meta`` keys may not reuse them.
RESERVED_ATTRS = frozenset(
    {"format", "format_version", "created", "config_path", "labctl_version", "complete"}
)

LOCATION_DTYPE = np.dtype(
    [
        ("status_row", np.int64),
        ("t_s", np.float64),
        ("x_m", np.float64),
        ("y_m", np.float64),
        ("sigma_x_m", np.float64),
        ("sigma_y_m", np.float64),
        ("rms_residual_s", np.float64),
        ("ambiguous", np.bool_),
    ]
)

_STR = h5py.string_dtype("utf-8")
_SMALL_CHUNK = 256  # rows per chunk of the per-record and per-update datasets


class RecordingError(ValueError):
    """A file is not a (readable) labctl-isaqn recording: path and what is wrong."""


# -- NodeStatus fields -> datasets --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    name: str
    dtype: np.dtype
    width: int | None  # None: scalar per row; n: (rows, n)
    fill: Any


def _node_field_specs() -> tuple[_FieldSpec, ...]:
    """One spec per NodeStatus field (``name`` excepted), from the dataclass annotations."""
    hints = typing.get_type_hints(NodeStatus)
    specs = []
    for f in dataclasses.fields(NodeStatus):
        if f.name == "name":
            continue
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if hint is bool:
            specs.append(_FieldSpec(f.name, np.dtype(np.bool_), None, False))
        elif hint is int:
            specs.append(_FieldSpec(f.name, np.dtype(np.int64), None, -1))
        elif hint is float:
            specs.append(_FieldSpec(f.name, np.dtype(np.float64), None, math.nan))
        elif origin is tuple and typing.get_args(hint) and Ellipsis not in typing.get_args(hint):
            args = typing.get_args(hint)
            if any(a is not float for a in args):
                raise TypeError(f"NodeStatus.{f.name}: {hint} is not a tuple of floats")
            specs.append(_FieldSpec(f.name, np.dtype(np.float64), len(args), math.nan))
        elif hint is str:
            specs.append(_FieldSpec(f.name, _STR, None, ""))
        else:
            raise TypeError(f"NodeStatus.{f.name}: type {hint} has no HDF5 mapping")
    return tuple(specs)


def _labctl_version() -> str | None:
    try:
        return importlib.metadata.version("labctl")
    except importlib.metadata.PackageNotFoundError:
        return None


def _append_rows(ds: h5py.Dataset, n_rows: int) -> int:
    """Grow ``ds`` to ``n_rows`` rows (new rows hold the fill value); returns the old length."""
    old = ds.shape[0]
    if n_rows > old:
        ds.resize(n_rows, axis=0)
    return old


# -- writer -------------------------------------------------------------------------------
class IsaqnRecorder:
    """Writes an ISAQN run to ``path`` (overwritten), layout in the module docstring.

    ``config_text`` is the bench file's text, ``config_path`` where it was read from, ``meta``
    extra root attributes (str, int, float or bool values; e.g. ``sample_rate_hz``).
    """

    def __init__(
        self,
        path: Path,
        config_text: str,
        config_path: str,
        meta: Mapping[str, str | float | int],
    ) -> None:
        self.path = Path(path)
        for key, value in meta.items():
            if key in RESERVED_ATTRS:
                raise ValueError(f"meta key {key!r} is reserved by the recording format")
            if not isinstance(value, str | int | float | bool | np.integer | np.floating):
                raise TypeError(
                    f"meta[{key!r}] = {value!r}: expected str, int or float, "
                    f"got {type(value).__name__}"
                )
        self._field_specs = _node_field_specs()
        self._file: h5py.File | None = h5py.File(self.path, "w", track_order=True)
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        f.attrs["config_path"] = str(config_path)
        version = _labctl_version()
        if version is not None:
            f.attrs["labctl_version"] = version
        f.attrs["complete"] = False
        for key, value in meta.items():
            f.attrs[key] = value
        f.create_dataset("config", data=config_text, dtype=_STR)

        raw = f.create_group("raw")
        raw.attrs["n_records"] = np.int64(0)
        raw.attrs["kind_coding"] = KIND_CODING_TEXT
        self._raw = raw
        self._record_length: int | None = None  # set by the first record
        self._n_records = 0

        st = f.create_group("status")
        st.attrs["n_updates"] = np.int64(0)
        self._status = st
        self._n_updates = 0
        for name, dtype, fill in (
            ("t_s", np.dtype(np.float64), math.nan),
            ("records", np.dtype(np.int64), -1),
            ("overloads", np.dtype(np.int64), -1),
        ):
            st.create_dataset(
                name,
                shape=(0,),
                maxshape=(None,),
                dtype=dtype,
                chunks=(_SMALL_CHUNK,),
                fillvalue=fill,
            )
        st.create_dataset(
            "messages", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(_SMALL_CHUNK,)
        )
        self._nodes = st.create_group("nodes", track_order=True)
        loc = st.create_dataset(
            "location",
            shape=(0,),
            maxshape=(None,),
            dtype=LOCATION_DTYPE,
            chunks=(_SMALL_CHUNK,),
        )
        loc.attrs["n_locations"] = np.int64(0)
        st.create_dataset(
            "location_nodes", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(_SMALL_CHUNK,)
        )
        st.create_dataset(
            "location_arrival_s",
            shape=(0,),
            maxshape=(None,),
            dtype=h5py.vlen_dtype(np.float64),
            chunks=(_SMALL_CHUNK,),
        )
        self._n_locations = 0
        f.flush()

    # -- context manager ----------------------------------------------------------------
    def __enter__(self) -> IsaqnRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    @property
    def n_records(self) -> int:
        """Records written so far."""
        return self._n_records

    @property
    def n_updates(self) -> int:
        """Statuses written so far."""
        return self._n_updates

    def _open_file(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"{self.path}: the recorder is closed")
        return self._file

    def close(self) -> None:
        """Mark the recording complete and close the file (idempotent)."""
        if self._file is None:
            return
        try:
            self._file.attrs["complete"] = True
        finally:
            self._file.close()
            self._file = None

    # -- records ------------------------------------------------------------------------
    def _create_raw(self, record_length: int) -> None:
        raw = self._raw
        raw.create_dataset(
            "codes",
            shape=(0, 2, record_length),
            maxshape=(None, 2, record_length),
            dtype=np.int16,
            chunks=(1, 2, record_length),
        )
        for name in ("volts_per_code", "offset_v"):
            raw.create_dataset(
                name,
                shape=(0, 2),
                maxshape=(None, 2),
                dtype=np.float64,
                chunks=(_SMALL_CHUNK, 2),
                fillvalue=math.nan,
            )
        raw.create_dataset(
            "index",
            shape=(0,),
            maxshape=(None,),
            dtype=np.int64,
            chunks=(_SMALL_CHUNK,),
            fillvalue=-1,
        )
        kind = raw.create_dataset(
            "kind",
            shape=(0,),
            maxshape=(None,),
            dtype=h5py.enum_dtype(KIND_CODES, basetype=np.int8),
            chunks=(_SMALL_CHUNK,),
        )
        kind.attrs["coding"] = KIND_CODING_TEXT
        raw.attrs["record_length"] = np.int64(record_length)
        self._record_length = record_length

    def record(self, rec: Record) -> None:
        """Append one scope record (its raw codes, scale and offset, index and kind).

        Raises ValueError, before anything is written, for a record whose length differs from
        the first record's, mismatched I/Q lengths, non-int16 codes or an unknown kind."""
        self._open_file()
        codes_i = np.asarray(rec.codes_i)
        codes_q = np.asarray(rec.codes_q)
        for label, codes in (("codes_i", codes_i), ("codes_q", codes_q)):
            if codes.ndim != 1:
                raise ValueError(f"record {rec.index}: {label} has shape {codes.shape}, not 1-D")
            if not np.can_cast(codes.dtype, np.int16, casting="safe"):
                raise ValueError(f"record {rec.index}: {label} is {codes.dtype}, not int16")
        if codes_i.shape != codes_q.shape:
            raise ValueError(
                f"record {rec.index}: codes_i has {codes_i.size} samples, codes_q {codes_q.size}"
            )
        length = codes_i.size
        if self._record_length is not None and length != self._record_length:
            raise ValueError(
                f"record {rec.index}: {length} samples, but this recording's records have "
                f"{self._record_length} samples (record length is fixed by the first record)"
            )
        if rec.kind not in KIND_CODES:
            raise ValueError(
                f"record {rec.index}: kind {rec.kind!r} is not one of {sorted(KIND_CODES)}"
            )
        vpc = np.asarray(rec.volts_per_code, dtype=np.float64)
        off = np.asarray(rec.offset_v, dtype=np.float64)
        if vpc.shape != (2,) or off.shape != (2,):
            raise ValueError(
                f"record {rec.index}: volts_per_code and offset_v must be (I, Q) pairs"
            )
        if self._record_length is None:
            self._create_raw(length)
        raw = self._raw
        k = self._n_records
        for name in ("codes", "volts_per_code", "offset_v", "index", "kind"):
            _append_rows(raw[name], k + 1)
        raw["codes"][k] = np.stack([codes_i, codes_q]).astype(np.int16, copy=False)
        raw["volts_per_code"][k] = vpc
        raw["offset_v"][k] = off
        raw["index"][k] = np.int64(rec.index)
        raw["kind"][k] = np.int8(KIND_CODES[rec.kind])
        self._n_records = k + 1
        raw.attrs["n_records"] = np.int64(self._n_records)
        self._open_file().flush()

    # -- statuses -----------------------------------------------------------------------
    def _node_group(self, name: str) -> h5py.Group:
        if name in self._nodes:
            return self._nodes[name]
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"node name {name!r} cannot name an HDF5 group")
        group = self._nodes.create_group(name)
        group.attrs["name"] = name
        rows = self._n_updates  # earlier updates without this node: fill values
        for spec in self._field_specs:
            shape: tuple[int, ...] = (rows,) if spec.width is None else (rows, spec.width)
            maxshape = (None,) if spec.width is None else (None, spec.width)
            chunks = (_SMALL_CHUNK,) if spec.width is None else (_SMALL_CHUNK, spec.width)
            kwargs: dict[str, Any] = {}
            if spec.dtype != _STR:
                kwargs["fillvalue"] = spec.fill
            group.create_dataset(
                spec.name,
                shape=shape,
                maxshape=maxshape,
                dtype=spec.dtype,
                chunks=chunks,
                **kwargs,
            )
        return group

    def status(self, st: NetworkStatus) -> None:
        """Append one status row (and a location row when ``st.location`` is set)."""
        self._open_file()
        names = [node.name for node in st.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"status at t = {st.t_s} s: duplicate node names {names}")
        groups = [self._node_group(name) for name in names]
        k = self._n_updates
        g = self._status
        for name in ("t_s", "records", "overloads", "messages"):
            _append_rows(g[name], k + 1)
        g["t_s"][k] = np.float64(st.t_s)
        g["records"][k] = np.int64(st.records)
        g["overloads"][k] = np.int64(st.overloads)
        g["messages"][k] = "\n".join(st.messages)
        for group in self._nodes.values():
            for spec in self._field_specs:
                _append_rows(group[spec.name], k + 1)
        for node, group in zip(st.nodes, groups, strict=True):
            for spec in self._field_specs:
                value = getattr(node, spec.name)
                if spec.dtype == _STR:
                    group[spec.name][k] = str(value)
                else:
                    group[spec.name][k] = np.asarray(value, dtype=spec.dtype)
        loc = st.location
        if loc is not None:
            table = g["location"]
            j = self._n_locations
            for name in ("location", "location_nodes", "location_arrival_s"):
                _append_rows(g[name], j + 1)
            row = np.zeros((), dtype=LOCATION_DTYPE)
            row["status_row"] = k
            for name in ("t_s", "x_m", "y_m", "sigma_x_m", "sigma_y_m", "rms_residual_s"):
                row[name] = getattr(loc, name)
            row["ambiguous"] = bool(loc.ambiguous)
            table[j] = row
            g["location_nodes"][j] = ",".join(loc.nodes)
            g["location_arrival_s"][j] = np.asarray(loc.arrival_s, dtype=np.float64)
            self._n_locations = j + 1
            table.attrs["n_locations"] = np.int64(self._n_locations)
        self._n_updates = k + 1
        g.attrs["n_updates"] = np.int64(self._n_updates)
        self._open_file().flush()


# -- reader -------------------------------------------------------------------------------
class IsaqnRecording:
    """An open recording (see :func:`read_isaqn_recording`); close it or use ``with``.

    Raw data: ``codes`` is the lazily indexable int16 dataset (n_records, 2, record_length)
    (only its first ``n_records`` rows are complete), :meth:`volts` one record in volts.
    Per record: ``volts_per_code``, ``offset_v`` (n, 2) float64, ``index`` int64, ``kinds``.
    Status: ``t_s``, ``records``, ``overloads`` (n_updates,), ``messages``, ``nodes``
    (node -> field -> array, rows aligned with ``t_s``), ``location`` (structured array,
    :data:`LOCATION_DTYPE`) with ``location_nodes`` and ``location_arrival_s``.
    """

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = path
        self._file = file
        attrs = {k: _attr_value(v) for k, v in file.attrs.items()}
        self.format_version = int(attrs["format_version"])
        self.created = str(attrs.get("created", ""))
        self.config_path = str(attrs.get("config_path", ""))
        self.labctl_version: str | None = attrs.get("labctl_version")
        self.complete = bool(attrs.get("complete", False))
        self.meta: dict[str, Any] = {k: v for k, v in attrs.items() if k not in RESERVED_ATTRS}
        self.config_text: str = self._get("config").asstr()[()]

        raw = self._get("raw")
        n = int(raw.attrs.get("n_records", 0))
        if n > 0:
            for name in ("codes", "volts_per_code", "offset_v", "index", "kind"):
                n = min(n, self._get(f"raw/{name}").shape[0])
            self.codes: h5py.Dataset | np.ndarray = raw["codes"]
            self.record_length = int(raw["codes"].shape[2])
            self.volts_per_code = np.asarray(raw["volts_per_code"][:n], dtype=np.float64)
            self.offset_v = np.asarray(raw["offset_v"][:n], dtype=np.float64)
            self.index = np.asarray(raw["index"][:n], dtype=np.int64)
            mapping = h5py.check_enum_dtype(raw["kind"].dtype) or KIND_CODES
            names = {code: kind for kind, code in mapping.items()}
            self.kinds: tuple[str, ...] = tuple(names[int(c)] for c in raw["kind"][:n])
        else:
            self.codes = np.zeros((0, 2, 0), dtype=np.int16)
            self.record_length = 0
            self.volts_per_code = np.zeros((0, 2), dtype=np.float64)
            self.offset_v = np.zeros((0, 2), dtype=np.float64)
            self.index = np.zeros(0, dtype=np.int64)
            self.kinds = ()
        self.n_records = n

        st = self._get("status")
        m = int(st.attrs.get("n_updates", 0))
        for name in ("t_s", "records", "overloads", "messages"):
            m = min(m, self._get(f"status/{name}").shape[0])
        self.n_updates = m
        self.t_s = np.asarray(st["t_s"][:m], dtype=np.float64)
        self.records = np.asarray(st["records"][:m], dtype=np.int64)
        self.overloads = np.asarray(st["overloads"][:m], dtype=np.int64)
        self.messages: tuple[tuple[str, ...], ...] = tuple(
            tuple(text.split("\n")) if text else () for text in st["messages"].asstr()[:m]
        )
        self.nodes: dict[str, dict[str, np.ndarray]] = {}
        for group in self._get("status/nodes").values():
            fields: dict[str, np.ndarray] = {}
            for name, ds in group.items():
                if h5py.check_string_dtype(ds.dtype) is not None:
                    fields[name] = np.asarray(ds.asstr()[:m], dtype=object)
                else:
                    fields[name] = np.asarray(ds[:m])
            self.nodes[str(group.attrs.get("name", group.name.rsplit("/", 1)[-1]))] = fields

        table = self._get("status/location")
        j = int(table.attrs.get("n_locations", 0))
        for name in ("location", "location_nodes", "location_arrival_s"):
            j = min(j, self._get(f"status/{name}").shape[0])
        self.location = np.asarray(table[:j], dtype=LOCATION_DTYPE)
        self.location_nodes: tuple[tuple[str, ...], ...] = tuple(
            tuple(text.split(",")) if text else () for text in st["location_nodes"].asstr()[:j]
        )
        self.location_arrival_s: tuple[np.ndarray, ...] = tuple(
            np.asarray(a, dtype=np.float64) for a in st["location_arrival_s"][:j]
        )

    def _get(self, name: str) -> Any:
        if name not in self._file:
            raise RecordingError(f"{self.path}: /{name} is missing: not a complete recording")
        return self._file[name]

    def __enter__(self) -> IsaqnRecording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def record_codes(self, i: int) -> np.ndarray:
        """Record ``i``'s ADC codes, int16 (2, record_length): [0] I, [1] Q."""
        i = self._check_index(i)
        return np.asarray(self.codes[i], dtype=np.int16)

    def volts(self, i: int) -> np.ndarray:
        """Record ``i`` as complex128 volts I + jQ, ``codes * volts_per_code + offset_v``."""
        codes = self.record_codes(i)
        i = self._check_index(i)
        vpc, off = self.volts_per_code[i], self.offset_v[i]
        v_i = codes[0].astype(np.float64) * vpc[0] + off[0]
        v_q = codes[1].astype(np.float64) * vpc[1] + off[1]
        return v_i + 1j * v_q

    def records_of_kind(self, kind: str) -> np.ndarray:
        """Row numbers (int64) of the records of ``kind`` ("electronic", "shot", "data")."""
        if kind not in KIND_CODES:
            raise ValueError(f"kind {kind!r} is not one of {sorted(KIND_CODES)}")
        return np.array([k for k, name in enumerate(self.kinds) if name == kind], np.int64)

    def _check_index(self, i: int) -> int:
        n = self.n_records
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"{self.path}: record {i} out of range ({n} records)")
        return j


def _attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_isaqn_recording(path: Path | str) -> IsaqnRecording:
    """Open a recording written by :class:`IsaqnRecorder` (also one from a killed run).

    Raises FileNotFoundError, or :class:`RecordingError` naming the file and what is wrong
    (not HDF5, not a labctl-isaqn recording, newer format version, missing dataset)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot be opened as HDF5 ({exc})") from exc
    try:
        fmt = _attr_value(file.attrs.get("format"))
        if fmt != FORMAT_NAME:
            found = "no 'format' attribute" if fmt is None else f"format {fmt!r}"
            raise RecordingError(
                f"{path}: not a {FORMAT_NAME} recording ({found} on the root group)"
            )
        version = _attr_value(file.attrs.get("format_version"))
        if not isinstance(version, int):
            raise RecordingError(f"{path}: root attribute 'format_version' is missing")
        if version > FORMAT_VERSION:
            raise RecordingError(
                f"{path}: format version {version} is newer than this reader's "
                f"({FORMAT_VERSION}): update labctl"
            )
        return IsaqnRecording(path, file)
    except BaseException:
        file.close()
        raise


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KIND_CODES",
    "LOCATION_DTYPE",
    "IsaqnRecorder",
    "IsaqnRecording",
    "RecordingError",
    "read_isaqn_recording",
]

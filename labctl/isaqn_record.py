"""HDF5 recording of the ISAQN main job, on the recording engine (``labctl/h5record.py``).

:class:`IsaqnRecorder` is both sinks of :class:`labctl.isaqn_job.IsaqnJob`: ``record`` gets
every scope record before anything analyses it, ``status`` every :class:`NetworkStatus`.
:class:`IsaqnCapture` reads a recording back: the records as the job's :class:`Record` s
(volts bit for bit) and the statuses as :class:`NetworkStatus` objects, so replay pushes
the first through :class:`~labctl.isaqn_feed.IsaqnFeed` and compares with the second.

Format ``labctl-isaqn`` 2.0 (the engine's conventions and the common tables are in
``docs/recording.md``; rows are valid up to the commit record's counts)::

    /raw/scope/codes        int16 (n_records, 2, record_length): [:, 0] I, [:, 1] Q ADC codes
    /raw/scope/info         compound (n_records,): t_unix_ns (when recorded), index int64,
                            kind text ("electronic" LO off, "shot" signal off, "data"),
                            volts_per_code float64 (2,) [V/code], offset_v float64 (2,) [V],
                            overloads int64 (channels clipped)
    /derived/status         compound (n_updates,): t_unix_ns, t_s, records, overloads,
                            messages ("\\n"-joined text)
    /derived/nodes          compound (n_updates, n_nodes): every NodeStatus field but name
                            (confidence intervals as float64 (2,)); group attr ``nodes``
                            lists the names in order
    /derived/location       compound (n_locations,): update (row of /derived/status), t_s,
                            x_m, y_m, sigma_x_m, sigma_y_m, rms_residual_s, ambiguous, nodes
                            (comma-separated), arrival_s (JSON list, s)

Root attributes: ``sample_rate_hz``, ``record_length``, ``channel_i``, ``channel_q``,
``wavelength_nm`` (the laser's, for the strain figures), ``update_s``, ``bench``, ``seed``.
Volts are ``codes * volts_per_code + offset_v`` in float64, as the scope driver computes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labctl.config import BenchConfig
from labctl.h5read import Recording, RecordingError, open_recording
from labctl.h5record import STRING, FormatId, Table
from labctl.isaqn_feed import IsaqnFeed, Record, volts_from_codes
from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus
from labctl.record_fields import from_row, row_dtype, to_row
from labctl.run_record import Capture, RunRecorder, cell_text

FORMAT = FormatId("labctl-isaqn", (2, 0))

INFO_DTYPE = np.dtype(
    [
        ("t_unix_ns", np.int64),
        ("index", np.int64),
        ("kind", STRING),
        ("volts_per_code", np.float64, (2,)),
        ("offset_v", np.float64, (2,)),
        ("overloads", np.int64),
    ]
)
STATUS_DTYPE = np.dtype(
    [
        ("t_unix_ns", np.int64),
        ("t_s", np.float64),
        ("records", np.int64),
        ("overloads", np.int64),
        ("messages", STRING),
    ]
)
NODE_DTYPE = row_dtype(NodeStatus, exclude=("name",))
_LOCATION_EXCLUDE = ("nodes", "arrival_s")
LOCATION_DTYPE = np.dtype(
    [
        ("update", np.int64),
        *row_dtype(EventLocation, exclude=_LOCATION_EXCLUDE).descr,
        ("nodes", STRING),
        ("arrival_s", STRING),
    ]
)
_LOC_FIELDS = row_dtype(EventLocation, exclude=_LOCATION_EXCLUDE)


def isaqn_tables(config: BenchConfig) -> list[Table]:
    """The bench's tables for ``config``'s [isaqn] section."""
    iq = config.isaqn
    if iq is None:
        raise ValueError(f"{config.path}: no [isaqn] section")
    nodes = len(iq.nodes)
    return [
        Table(
            "raw/scope/codes",
            np.int16,
            row_shape=(2, iq.record_length),
            units="ADC code",
            description="scope records: [:, 0] I, [:, 1] Q; volts = codes * volts_per_code "
            "+ offset_v (raw/scope/info)",
        ),
        Table("raw/scope/info", INFO_DTYPE, chunk_rows=1024, description="one row per record"),
        Table("derived/status", STATUS_DTYPE, chunk_rows=256, description="one row per update"),
        Table(
            "derived/nodes",
            NODE_DTYPE,
            row_shape=(nodes,),
            chunk_rows=256,
            description="NodeStatus per update and node (labctl/isaqn_status.py)",
        ),
        Table("derived/location", LOCATION_DTYPE, chunk_rows=64, description="located events"),
    ]


class IsaqnRecorder(RunRecorder):
    """Writes an ISAQN run to ``path`` (refused if it exists); layout in the module doc."""

    def __init__(
        self,
        path: Path,
        config: BenchConfig,
        *,
        wavelength_nm: float,
        flush_interval_s: float = 1.0,
        on_error: Any = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        iq = config.isaqn
        if iq is None:
            raise ValueError(f"{config.path}: no [isaqn] section")
        attrs = {
            **dict(attrs or {}),
            "sample_rate_hz": float(iq.sample_rate_hz),
            "record_length": int(iq.record_length),
            "channel_i": int(iq.channel_i),
            "channel_q": int(iq.channel_q),
            "wavelength_nm": float(wavelength_nm),
            "update_s": float(iq.update_s),
        }
        super().__init__(
            path,
            config,
            FORMAT,
            isaqn_tables(config),
            attrs=attrs,
            flush_interval_s=flush_interval_s,
            on_error=on_error,
        )
        self.node_names = tuple(n.name for n in iq.nodes)
        self.updates = 0

    def record(self, rec: Record) -> None:
        """Queue one scope record (codes and scale; never the float volts)."""
        codes = np.stack([rec.codes_i, rec.codes_q]).astype(np.int16, copy=False)
        self.append("raw/scope/codes", codes[np.newaxis])
        info = (
            time.time_ns(),
            rec.index,
            rec.kind,
            rec.volts_per_code,
            rec.offset_v,
            int(rec.overloads),
        )
        self.append_row("raw/scope/info", info)

    def status(self, st: NetworkStatus) -> None:
        """Queue one update."""
        names = tuple(n.name for n in st.nodes)
        if names != self.node_names:
            raise ValueError(f"status nodes {names} differ from the bench's {self.node_names}")
        row = (time.time_ns(), st.t_s, st.records, st.overloads, "\n".join(st.messages))
        self.append_row("derived/status", row)
        nodes = np.array(
            [to_row(n, NODE_DTYPE, exclude=("name",)) for n in st.nodes], dtype=NODE_DTYPE
        )
        self.append("derived/nodes", nodes[np.newaxis])
        if st.location is not None:
            loc = st.location
            row = (
                self.updates,
                *to_row(loc, _LOC_FIELDS, exclude=_LOCATION_EXCLUDE),
                ",".join(loc.nodes),
                json.dumps(list(loc.arrival_s)),
            )
            self.append_row("derived/location", row)
        self.updates += 1


class IsaqnCapture(Capture):
    """A recorded ISAQN run, opened with :func:`open_isaqn` (SWMR: it may still be written)."""

    kind = "isaqn"

    def __init__(self, rec: Recording) -> None:
        super().__init__(rec)
        attrs = rec.attrs
        if self.config.isaqn is None:
            raise RecordingError(self.path, "the recorded bench file has no [isaqn] section")
        self.isaqn = self.config.isaqn
        self.wavelength_nm = float(attrs["wavelength_nm"])
        self.node_names = tuple(n.name for n in self.config.isaqn.nodes)

    @property
    def n_units(self) -> int:
        """Records committed."""
        return min(self.rec.rows("raw/scope/codes"), self.rec.rows("raw/scope/info"))

    def units(
        self, start: int = 0, stop: int | None = None, *, block: int = 16
    ) -> Iterator[Record]:
        """Records ``start`` .. ``stop`` (exclusive) as :class:`Record` s, read ``block`` at a
        time (memory stays bounded whatever the file size)."""
        stop = self.n_units if stop is None else min(stop, self.n_units)
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            codes = self.rec.table("raw/scope/codes", lo, hi)
            info = self.rec.table("raw/scope/info", lo, hi)
            for k in range(hi - lo):
                yield record_from_row(codes[k], info[k])

    def make_feed(self) -> IsaqnFeed:
        """The chain the live run used, as configured then."""
        return IsaqnFeed(self.isaqn, self.config.seed, self.wavelength_nm * 1e-9)

    def replay_push(
        self, feed: IsaqnFeed, unit: Record
    ) -> tuple[NetworkStatus, dict[str, Any]] | None:
        """Push one record; the update and its ``to_dict()`` if it completes one."""
        status = feed.push(unit)
        return None if status is None else (status, status.to_dict())

    def recorded_dicts(self) -> list[dict[str, Any]]:
        """The recorded updates as ``NetworkStatus.to_dict()`` gave them live."""
        return [s.to_dict() for s in self.statuses()]

    @property
    def n_statuses(self) -> int:
        return min(self.rec.rows("derived/status"), self.rec.rows("derived/nodes"))

    def statuses(self) -> list[NetworkStatus]:
        """The recorded updates, as the live run emitted them."""
        n = self.n_statuses
        st = self.rec.table("derived/status", 0, n)
        nodes = self.rec.table("derived/nodes", 0, n)
        locs = self.rec.table("derived/location")
        by_update = {int(r["update"]): r for r in locs}
        out = []
        for k in range(n):
            loc = None
            if k in by_update:
                r = by_update[k]
                loc = from_row(
                    EventLocation,
                    r,
                    exclude=_LOCATION_EXCLUDE,
                    nodes=tuple(x for x in cell_text(r["nodes"]).split(",") if x),
                    arrival_s=tuple(float(x) for x in json.loads(cell_text(r["arrival_s"]))),
                )
            node_rows = tuple(
                from_row(NodeStatus, nodes[k, j], exclude=("name",), name=name)
                for j, name in enumerate(self.node_names)
            )
            text = cell_text(st["messages"][k])
            out.append(
                NetworkStatus(
                    t_s=float(st["t_s"][k]),
                    records=int(st["records"][k]),
                    overloads=int(st["overloads"][k]),
                    nodes=node_rows,
                    location=loc,
                    messages=tuple(text.split("\n")) if text else (),
                )
            )
        return out


def record_from_row(codes: np.ndarray, info: Any) -> Record:
    """A :class:`Record` from a row of ``raw/scope/codes`` and one of ``raw/scope/info``."""
    vpc = tuple(float(x) for x in info["volts_per_code"])
    off = tuple(float(x) for x in info["offset_v"])
    samples = volts_from_codes(codes[0], vpc[0], off[0]) + 1j * volts_from_codes(
        codes[1], vpc[1], off[1]
    )
    return Record(
        samples=samples,
        codes_i=np.ascontiguousarray(codes[0]),
        codes_q=np.ascontiguousarray(codes[1]),
        volts_per_code=(vpc[0], vpc[1]),
        offset_v=(off[0], off[1]),
        index=int(info["index"]),
        kind=cell_text(info["kind"]),
        overloads=int(info["overloads"]),
    )


def open_isaqn(path: Path | str, *, follow: bool = False) -> IsaqnCapture:
    """Open an ISAQN recording; :class:`RecordingError` names the file and the problem."""
    rec = open_recording(Path(path), expected_format=FORMAT, follow=follow)
    try:
        return IsaqnCapture(rec)
    except BaseException:
        rec.close()
        raise

"""HDF5 recording of the entanglement main job, on the recording engine (``labctl/h5record.py``).

:class:`EntanglementRecorder` is attached to a running :class:`~labctl.entangle_job.EntanglementJob`
(:meth:`EntanglementRecorder.read` is its read sink, :meth:`EntanglementRecorder.status` a
status sink). :class:`EntanglementCapture` reads a recording back: each read's tag batches
as the taggers delivered them (replay pushes them through
:class:`~labctl.entangle_feed.EntanglementFeed`) and the recorded statuses to compare with.

Format ``labctl-entanglement`` 1.0 (the engine's conventions and the common tables are in
``docs/recording.md``)::

    /raw/tags/<tagger>     compound (n_tags,): timestamp_ps int64 (the tagger's own clock),
                           channel uint8 (its input), every tag of every batch in order
    /raw/reads             compound (n_reads, n_taggers): per read and tagger (group attr
                           ``taggers`` gives the order): first_tag, n_tags (rows of
                           raw/tags/<tagger>), horizon_ps, lost_events, overflow
    /derived/steps         compound (n_steps,): read (the read the step began at), step,
                           scan_step, start_ps, end_ps (merged stream clock), phases_rad
                           float64 (n_users,) (table attr ``users``)
    /raw/read_times        int64 (n_reads,): t_unix_ns of each read
    /derived/status        compound (n_updates,): t_unix_ns, read, time_s, interval_s,
                           total_key_rate_bps, clock_state, clock_offset_ps, clock_drift_ppm,
                           clock_locked_fraction, lost_events, scan_step, messages
    /derived/pairs         compound (n_updates, n_pairs): every PairStatus figure (table attr
                           ``pairs``: JSON list of [user_a, user_b, channel_a, channel_b,
                           process])
    /derived/histograms    int64 (n_updates, n_pairs, n_bins): cumulative coincidence
                           histograms of t_b - t_a (attrs bin_ps, first_bin_ps), gzip
    /derived/pumps         compound (n_updates, n_pumps): emission, wavelength_nm, power_mw
    /derived/tec           compound (n_updates,): temperature_c, setpoint_c, current_a, output
    /derived/loops         compound (n_updates, n_loops): every LoopStatus field (attr
                           ``loops``: JSON [[name, kind, [measurement units, output units]]]);
                           absent when the run had no loops
    /derived/control       compound (n_updates,): loops, interlocks: the update's JSON (as
                           ``labctl run --json`` prints them)

Interlock state changes are also ``interlock`` events in ``/_recording/events``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.tdc import TagBatch
from labctl.bench_control import LoopRow
from labctl.config import BenchConfig
from labctl.entangle_feed import EntanglementFeed, ReadResult
from labctl.entangle_status import EntanglementStatus, PairStatus, PumpStatus, TecStatus
from labctl.h5read import Recording, RecordingError, open_recording
from labctl.h5record import STRING, FormatId, Table
from labctl.interlocks import RuleStatus
from labctl.loop_runner import LoopStatus
from labctl.record_fields import from_row, row_dtype, to_row
from labctl.run_record import Capture, RunRecorder, cell_text

if TYPE_CHECKING:
    from labctl.entangle_job import EntanglementJob

FORMAT = FormatId("labctl-entanglement", (1, 0))

TAG_DTYPE = np.dtype([("timestamp_ps", np.int64), ("channel", np.uint8)])
READ_DTYPE = np.dtype(
    [
        ("first_tag", np.int64),
        ("n_tags", np.int64),
        ("horizon_ps", np.int64),
        ("lost_events", np.int64),
        ("overflow", np.bool_),
    ]
)
STATUS_DTYPE = np.dtype(
    [
        ("t_unix_ns", np.int64),
        ("read", np.int64),
        ("time_s", np.float64),
        ("interval_s", np.float64),
        ("total_key_rate_bps", np.float64),
        ("clock_state", STRING),
        ("clock_offset_ps", np.float64),
        ("clock_drift_ppm", np.float64),
        ("clock_locked_fraction", np.float64),
        ("lost_events", np.int64),
        ("scan_step", np.int64),
        ("messages", STRING),
    ]
)
_PAIR_ID = ("user_a", "user_b", "channel_a", "channel_b", "process")
PAIR_DTYPE = row_dtype(PairStatus, exclude=_PAIR_ID)
PUMP_DTYPE = row_dtype(PumpStatus, exclude=("name", "label"))
TEC_DTYPE = row_dtype(TecStatus, exclude=("name",))
LOOP_DTYPE = row_dtype(LoopStatus, exclude=("name",))
CONTROL_DTYPE = np.dtype([("loops", STRING), ("interlocks", STRING)])
TAG_CHUNK_ROWS = 32768  # 288 KiB per chunk


def _steps_dtype(n_users: int) -> np.dtype:
    return np.dtype(
        [
            ("read", np.int64),
            ("step", np.int64),
            ("scan_step", np.int64),
            ("start_ps", np.int64),
            ("end_ps", np.int64),
            ("phases_rad", np.float64, (n_users,)),
        ]
    )


def entanglement_tables(
    config: BenchConfig, loops: Sequence[tuple[str, str, tuple[str, str]]], n_bins: int
) -> list[Table]:
    """The bench's tables; ``loops``: (name, kind, units) of the loops the run holds."""
    ent = config.entanglement
    if ent is None:
        raise ValueError(f"{config.path}: no [entanglement] section")
    links = ent.links()
    pairs = json.dumps([[k.user_a, k.user_b, k.channel_a, k.channel_b, k.process] for k in links])
    users = [u.name for u in ent.users]
    tables = [
        Table(
            f"raw/tags/{name}",
            TAG_DTYPE,
            chunk_rows=TAG_CHUNK_ROWS,
            description=f"every tag {name} delivered, on its own clock",
        )
        for name in ent.taggers
    ]
    tables += [
        Table(
            "raw/reads",
            READ_DTYPE,
            row_shape=(len(ent.taggers),),
            chunk_rows=4096,
            description="one row per read: each tagger's batch",
            attrs={"taggers": json.dumps(list(ent.taggers))},
        ),
        Table(
            "raw/read_times",
            np.int64,
            chunk_rows=4096,
            units="ns since 1970 (UTC)",
            description="when each read was recorded (t_unix_ns, one per row of raw/reads)",
        ),
        Table(
            "derived/steps",
            _steps_dtype(len(users)),
            chunk_rows=256,
            description="Franson phase steps",
            attrs={"users": json.dumps(users)},
        ),
        Table("derived/status", STATUS_DTYPE, chunk_rows=256, description="one row per update"),
        Table(
            "derived/pairs",
            PAIR_DTYPE,
            row_shape=(len(links),),
            chunk_rows=256,
            description="PairStatus per update and pair (labctl/entangle_status.py)",
            attrs={"pairs": pairs},
        ),
        Table(
            "derived/histograms",
            np.int64,
            row_shape=(len(links), n_bins),
            chunk_rows=1,
            compression="gzip",
            gzip_level=1,
            units="counts",
            description="cumulative coincidence histograms of t_b - t_a per pair",
            attrs={"bin_ps": int(ent.bin_ps), "first_bin_ps": -int(ent.max_delay_ps)},
        ),
        Table("derived/tec", TEC_DTYPE, chunk_rows=256, description=f"{ent.tec} per update"),
        Table("derived/control", CONTROL_DTYPE, chunk_rows=256, description="loops, interlocks"),
    ]
    if ent.pumps:
        tables.append(
            Table(
                "derived/pumps",
                PUMP_DTYPE,
                row_shape=(len(ent.pumps),),
                chunk_rows=256,
                attrs={"pumps": json.dumps([[p.laser, p.label] for p in ent.pumps])},
            )
        )
    if loops:
        tables.append(
            Table(
                "derived/loops",
                LOOP_DTYPE,
                row_shape=(len(loops),),
                chunk_rows=256,
                description="LoopStatus per update and loop (labctl/loop_runner.py)",
                attrs={"loops": json.dumps([[n, k, list(u)] for n, k, u in loops])},
            )
        )
    return tables


class EntanglementRecorder(RunRecorder):
    """Records an entanglement run; :meth:`attach_job` wires it to the job."""

    def __init__(
        self,
        path: Path,
        config: BenchConfig,
        *,
        loops: Sequence[tuple[str, str, tuple[str, str]]] = (),
        n_bins: int,
        flush_interval_s: float = 1.0,
        on_error: Any = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        ent = config.entanglement
        if ent is None:
            raise ValueError(f"{config.path}: no [entanglement] section")
        super().__init__(
            path,
            config,
            FORMAT,
            entanglement_tables(config, loops, n_bins),
            attrs={
                **dict(attrs or {}),
                "update_s": float(ent.update_s),
                "taggers": json.dumps(list(ent.taggers)),
            },
            flush_interval_s=flush_interval_s,
            on_error=on_error,
        )
        self.taggers = tuple(ent.taggers)
        self.loop_names = tuple(n for n, _, _ in loops)
        self.has_pumps = bool(ent.pumps)
        self._tags = dict.fromkeys(self.taggers, 0)
        self._reads = 0
        self._job: EntanglementJob | None = None
        self._interlocks: dict[str, str] = {}

    @classmethod
    def for_job(cls, path: Path, job: EntanglementJob, **kwargs: Any) -> EntanglementRecorder:
        """A recorder for ``job``'s bench and loops, attached to it (settings included)."""
        control = job.control
        loops = (
            [] if control is None else [(n, c.kind, c.units) for n, c in control.configs.items()]
        )
        rec = cls(path, job.config, loops=loops, n_bins=job.monitor.counts.hist.shape[1], **kwargs)
        rec._job = job
        job.read_sink = rec.read
        rec.attach(job.bench.instruments)
        return rec

    def read(self, batches: Sequence[tuple[str, TagBatch]], result: ReadResult) -> None:
        """Queue one read's batches (and the phase step it began, if any)."""
        rows = np.zeros(len(self.taggers), READ_DTYPE)
        for k, (name, batch) in enumerate(batches):
            if name != self.taggers[k]:
                raise ValueError(f"read {self._reads}: tagger {name!r}, expected {self.taggers}")
            n = int(batch.timestamp_ps.size)
            if n:
                tags = np.empty(n, TAG_DTYPE)
                tags["timestamp_ps"] = batch.timestamp_ps
                tags["channel"] = batch.channel
                self.append(f"raw/tags/{name}", tags)
            rows[k] = (self._tags[name], n, batch.horizon_ps, batch.lost_events, batch.overflow)
            self._tags[name] += n
        self.append("raw/reads", rows[np.newaxis])
        self.append_row("raw/read_times", time.time_ns())
        step = result.step
        if step is not None:
            phases = [step.phases_rad[u] for u in step.phases_rad]
            row = (step.read, step.step, step.scan_step, step.start_ps, step.end_ps, phases)
            self.append_row("derived/steps", row)
        self._reads += 1

    def status(self, st: EntanglementStatus) -> None:
        """Queue one update (and the cumulative histograms at this moment)."""
        row = (
            time.time_ns(),
            self._reads - 1,
            st.time_s,
            st.interval_s,
            st.total_key_rate_bps,
            st.clock_state,
            st.clock_offset_ps,
            st.clock_drift_ppm,
            st.clock_locked_fraction,
            st.lost_events,
            st.scan_step,
            "\n".join(st.messages),
        )
        self.append_row("derived/status", row)
        pairs = np.array([to_row(p, PAIR_DTYPE, _PAIR_ID) for p in st.pairs], PAIR_DTYPE)
        self.append("derived/pairs", pairs[np.newaxis])
        if self._job is not None:
            self.append("derived/histograms", self._job.monitor.counts.hist[np.newaxis])
        if self.has_pumps:
            rows = [to_row(p, PUMP_DTYPE, ("name", "label")) for p in st.pumps]
            pumps = np.array(rows, PUMP_DTYPE)
            self.append("derived/pumps", pumps[np.newaxis])
        if st.tec is not None:
            self.append_row("derived/tec", to_row(st.tec, TEC_DTYPE, ("name",)))
        d = st.to_dict()
        self.append_row("derived/control", (json.dumps(d["loops"]), json.dumps(d["interlocks"])))
        by_name = {r.name: r.status for r in st.loops}
        if self.loop_names and all(n in by_name for n in self.loop_names):
            loops = np.array(
                [to_row(by_name[n], LOOP_DTYPE, ("name",)) for n in self.loop_names], LOOP_DTYPE
            )
            self.append("derived/loops", loops[np.newaxis])
        for rule, info in d["interlocks"].items():
            state = str(info.get("state"))
            if self._interlocks.get(rule, "armed") != state:
                self.event("interlock", json.dumps({"rule": rule, **info}))
            self._interlocks[rule] = state

    def close(self) -> None:
        if self._job is not None and self._job.read_sink == self.read:
            self._job.read_sink = None
        super().close()


class EntanglementCapture(Capture):
    """A recorded entanglement run, opened with :func:`open_entanglement` (SWMR)."""

    kind = "entanglement"

    def __init__(self, rec: Recording) -> None:
        super().__init__(rec)
        ent = self.config.entanglement
        if ent is None:
            raise RecordingError(self.path, "the recorded bench file has no [entanglement] section")
        self.ent = ent
        self.taggers = tuple(ent.taggers)

    @property
    def n_units(self) -> int:
        """Reads whose tags are all committed."""
        n = self.rec.rows("raw/reads")
        while n > 0:
            last = self.rec.table("raw/reads", n - 1, n)[0]
            if all(
                int(last[k]["first_tag"] + last[k]["n_tags"]) <= self.rec.rows(f"raw/tags/{t}")
                for k, t in enumerate(self.taggers)
            ):
                return n
            n -= 1
        return 0

    def units(
        self, start: int = 0, stop: int | None = None, *, block: int = 64
    ) -> Iterator[list[tuple[str, TagBatch]]]:
        """Reads ``start`` .. ``stop`` (exclusive): each a list of (tagger, batch)."""
        stop = self.n_units if stop is None else min(stop, self.n_units)
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            reads = self.rec.table("raw/reads", lo, hi)
            tags = {}
            for k, name in enumerate(self.taggers):
                first = int(reads[0, k]["first_tag"])
                end = int(reads[-1, k]["first_tag"] + reads[-1, k]["n_tags"])
                tags[name] = (first, self.rec.table(f"raw/tags/{name}", first, end))
            for j in range(hi - lo):
                batches = []
                for k, name in enumerate(self.taggers):
                    r = reads[j, k]
                    base, arr = tags[name]
                    a = int(r["first_tag"]) - base
                    part = arr[a : a + int(r["n_tags"])]
                    batches.append(
                        (
                            name,
                            TagBatch(
                                channel=np.ascontiguousarray(part["channel"]),
                                timestamp_ps=np.ascontiguousarray(part["timestamp_ps"]),
                                lost_events=int(r["lost_events"]),
                                overflow=bool(r["overflow"]),
                                horizon_ps=int(r["horizon_ps"]),
                            ),
                        )
                    )
                yield batches

    def make_feed(self) -> EntanglementFeed:
        return EntanglementFeed(self.ent, where=f"{self.path}:/bench/config")

    def replay_push(
        self, feed: EntanglementFeed, unit: list[tuple[str, TagBatch]]
    ) -> tuple[EntanglementStatus, dict[str, Any]] | None:
        """Push one read; if it completes an update, the status (with the recorded pumps
        and TEC) and its ``to_dict()`` (with the recorded loops and interlocks too: replay
        cannot recompute the instruments' parts)."""
        result = feed.push_read(unit)
        if not result.update_due:
            return None
        k = feed.updates
        control = self.control_json(k)
        status = feed.status(**self.instrument_parts(k), **self.control_parts(k, control))
        return status, {**status.to_dict(), **control}

    @property
    def n_statuses(self) -> int:
        return min(self.rec.rows("derived/status"), self.rec.rows("derived/pairs"))

    def instrument_parts(self, update: int) -> dict[str, Any]:
        """The recorded pumps and TEC of update ``update`` (replay puts them in its status)."""
        ent = self.ent
        pumps: tuple[PumpStatus, ...] = ()
        if ent.pumps and update < self.rec.rows("derived/pumps"):
            row = self.rec.table("derived/pumps", update, update + 1)[0]
            pumps = tuple(
                from_row(PumpStatus, row[j], ("name", "label"), name=p.laser, label=p.label)
                for j, p in enumerate(ent.pumps)
            )
        tec = None
        if update < self.rec.rows("derived/tec"):
            row = self.rec.table("derived/tec", update, update + 1)[0]
            tec = from_row(TecStatus, row, ("name",), name=ent.tec)
        return {"pumps": pumps, "tec": tec}

    @functools.cached_property
    def _loop_meta(self) -> list[tuple[str, str, list[str]]]:
        """(name, kind, units) of each column of ``derived/loops`` (read once)."""
        return json.loads(cell_text(self.rec.info("derived/loops").attrs["loops"]))

    def control_parts(self, update: int, control: dict[str, Any]) -> dict[str, Any]:
        """The recorded loops (typed :class:`LoopRow` s, from ``derived/loops``) and interlock
        states (:class:`RuleStatus`, from ``control``: :meth:`control_json` of the update) of
        update ``update``: replay shows them as the live run did."""
        loops: tuple[LoopRow, ...] = ()
        if "derived/loops" in self.rec.tables and update < self.rec.rows("derived/loops"):
            row = self.rec.table("derived/loops", update, update + 1)[0]
            loops = tuple(
                LoopRow(
                    name,
                    kind,
                    (units[0], units[1]),
                    from_row(LoopStatus, row[j], ("name",), name=name),
                )
                for j, (name, kind, units) in enumerate(self._loop_meta)
            )
        rules = control["interlocks"]
        interlocks = {rule: RuleStatus(**{**info, "rule": rule}) for rule, info in rules.items()}
        return {"loops": loops, "interlocks": interlocks}

    def control_json(self, update: int) -> dict[str, Any]:
        """The recorded loops and interlocks of update ``update`` (JSON, as ``--json``)."""
        if update >= self.rec.rows("derived/control"):
            return {"loops": {}, "interlocks": {}}
        row = self.rec.table("derived/control", update, update + 1)[0]
        return {
            "loops": json.loads(cell_text(row["loops"])),
            "interlocks": json.loads(cell_text(row["interlocks"])),
        }

    def recorded_dicts(self) -> list[dict[str, Any]]:
        """The recorded updates as ``EntanglementStatus.to_dict()`` gave them live."""
        n = self.n_statuses
        st = self.rec.table("derived/status", 0, n)
        pairs = self.rec.table("derived/pairs", 0, n)
        links = self.ent.links()
        out = []
        for k in range(n):
            rows = tuple(
                from_row(
                    PairStatus,
                    pairs[k, j],
                    _PAIR_ID,
                    user_a=link.user_a,
                    user_b=link.user_b,
                    channel_a=link.channel_a,
                    channel_b=link.channel_b,
                    process=link.process,
                )
                for j, link in enumerate(links)
            )
            text = cell_text(st["messages"][k])
            status = EntanglementStatus(
                time_s=float(st["time_s"][k]),
                interval_s=float(st["interval_s"][k]),
                pairs=rows,
                total_key_rate_bps=float(st["total_key_rate_bps"][k]),
                clock_state=cell_text(st["clock_state"][k]),
                clock_offset_ps=float(st["clock_offset_ps"][k]),
                clock_drift_ppm=float(st["clock_drift_ppm"][k]),
                clock_locked_fraction=float(st["clock_locked_fraction"][k]),
                lost_events=int(st["lost_events"][k]),
                scan_step=int(st["scan_step"][k]),
                messages=tuple(text.split("\n")) if text else (),
                **self.instrument_parts(k),
            )
            out.append({**status.to_dict(), **self.control_json(k)})
        return out

    def histograms(self, update: int) -> np.ndarray:
        """The cumulative histograms (n_pairs, n_bins) int64 at update ``update``."""
        return self.rec.table("derived/histograms", update, update + 1)[0]


def open_entanglement(path: Path | str, *, follow: bool = False) -> EntanglementCapture:
    """Open an entanglement recording; :class:`RecordingError` names the file and problem."""
    rec = open_recording(Path(path), expected_format=FORMAT, follow=follow)
    try:
        return EntanglementCapture(rec)
    except BaseException:
        rec.close()
        raise

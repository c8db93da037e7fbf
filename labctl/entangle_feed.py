"""The entanglement chain from tag batches to statuses, shared by the live job and replay.

:class:`EntanglementFeed` takes one *read* at a time: the :class:`~drivers.tdc.TagBatch` of
every tagger, in the bench file's tagger order, whatever their source (the taggers through
:class:`labctl.entangle_job.EntanglementJob`, or a recording through :mod:`labctl.replay_h5`).
Per read it

1. pushes the batches to the :class:`~labctl.entangle_stream.TagStream` (relabel, clock
   alignment, merge) and what is complete to the
   :class:`~labctl.entangle_monitor.EntanglementMonitor` (coincidences, scans, BBM92);
2. runs the Franson phase scan: once a step's data are complete the next step begins
   ``settle_s`` after the latest tag delivered, and the read's result names the phases the
   job must command (nothing for the first step: the job set it up before streaming);
3. says when an update interval of data is complete; :meth:`EntanglementFeed.status` then
   builds the :class:`~labctl.entangle_status.EntanglementStatus` from the chain's state and
   the instruments' parts the caller passes in (live: read from the bench; replay: as
   recorded).

Every decision depends on the tags alone (never on wall time), so a replay of the same reads
takes the same steps and gives the same statuses. The feed pickles (chunked replay on Dask).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.tdc import TagBatch
from labctl.entangle_config import EntanglementConfig
from labctl.entangle_monitor import EntanglementMonitor, scan_phases
from labctl.entangle_status import EntanglementStatus, PumpStatus, TecStatus
from labctl.entangle_stream import TagStream

if TYPE_CHECKING:
    from labctl.bench_control import LoopRow
    from labctl.interlocks import RuleStatus

Progress = Callable[[str], None]
PS_PER_S = 1_000_000_000_000
#: reference-tagger data without finding the other tagger's clock before the feed gives up
#: (a search normally succeeds on its first 0.1 s chunk; under heavy load the simulated bench
#: was once seen to need 46 s)
CLOCK_SEARCH_TIMEOUT_S = 90.0


class FeedError(ValueError):
    """Reads the chain cannot use, or a bench file it cannot run (what and where)."""


@dataclass(frozen=True)
class StepEvent:
    """A phase step: from stream time ``start_ps`` the users' phases are ``phases_rad``; the
    step's data end at ``end_ps``; ``scan_step`` is its index within the scan."""

    read: int
    step: int
    scan_step: int
    start_ps: int
    end_ps: int
    phases_rad: Mapping[str, float]


@dataclass(frozen=True)
class ReadResult:
    """What one read asks of the caller."""

    #: the phases to command now (None: no change)
    phases_rad: Mapping[str, float] | None
    #: an update interval is complete: call :meth:`EntanglementFeed.status`
    update_due: bool
    #: the step that began at this read, if one did
    step: StepEvent | None


class EntanglementFeed:
    """Stream, monitor and phase scan of one entanglement network (module docstring).

    ``where`` names the bench file in error messages."""

    def __init__(
        self,
        config: EntanglementConfig,
        *,
        where: str = "<bench>",
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.users = [u.name for u in config.users]
        self.monitor = EntanglementMonitor(config)
        self.stream = TagStream(
            [(c.tagger, c.input) for c in config.channels],
            config.reference_tagger,
            sync=_sync_pair(config, where),
            max_offset_s=config.max_clock_offset_s,
            max_drift_ppm=config.max_drift_ppm,
        )
        self.reads = 0  #: reads pushed
        self.updates = 0  #: statuses built
        self.lost_events = 0
        self.step = -1  #: steps begun so far - 1
        self._step_end_ps: int | None = None
        self._next_update_s = config.update_s
        self._searching = True
        self._first_horizon_ps: int | None = None
        self._messages: list[str] = []

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["progress"] = None  # a live callback does not travel to a Dask worker
        return state

    def _say(self, text: str) -> None:
        self._messages.append(text)
        if self.progress is not None:
            self.progress(text)

    @property
    def data_time_s(self) -> float:
        """Data time since the merged stream started [s]."""
        return self.monitor.data_time_s

    def push_read(self, batches: Sequence[tuple[str, TagBatch]]) -> ReadResult:
        """One read: ``(tagger, batch)`` for every tagger, in the bench file's order."""
        for name, batch in batches:
            self.lost_events += int(batch.lost_events)
            try:
                self.stream.push(name, batch)
            except ValueError as exc:
                raise FeedError(f"read {self.reads}: {exc}") from exc
        chunk = self.stream.pop()
        if chunk is not None:
            self.monitor.push(chunk)
        self.reads += 1
        if self._searching and self.monitor.horizon_ps is None:
            self._check_search()
        if self._searching and self.monitor.horizon_ps is not None:
            self._searching = False
            clock = self.stream.clock_status()
            if clock.state == "tracking" and self.stream.coarse is not None:
                c = self.stream.coarse
                self._say(
                    f"{self.stream.other}: clock found, offset {c.offset_ps * 1e-6:.3f} us, "
                    f"drift {c.drift_ppm:+.1f} ppm (significance {c.search.significance:.0f})"
                )
        phases, step = self._scan()
        due = False
        t = self.monitor.data_time_s
        if self.monitor.horizon_ps is not None and t + 1e-9 >= self._next_update_s:
            self._next_update_s += self.config.update_s
            due = True
        return ReadResult(phases, due, step)

    def _check_search(self) -> None:
        """Give up (:class:`FeedError`) after :data:`CLOCK_SEARCH_TIMEOUT_S` of reference data
        without the other tagger's clock: a run would otherwise wait for ever."""
        horizon = self.stream.reference_horizon_ps
        if horizon <= -(1 << 61):
            return  # nothing delivered yet
        if self._first_horizon_ps is None:
            self._first_horizon_ps = horizon
        waited_s = (horizon - self._first_horizon_ps) / PS_PER_S
        if self.stream.other is not None and waited_s > CLOCK_SEARCH_TIMEOUT_S:
            raise FeedError(
                f"{self.stream.other}: its clock was not found against "
                f"{self.stream.reference} in {waited_s:.0f} s of tags (last search "
                f"significance {self.stream.last_significance:.1f}, needs "
                f"{self.stream.min_significance:g}): check that the cross-tagger channel pair "
                "sees the same photon pairs, the cables, and max_clock_offset_s"
            )

    def _scan(self) -> tuple[Mapping[str, float] | None, StepEvent | None]:
        """Start the next phase step once the current one's data are complete."""
        mon, cfg = self.monitor, self.config
        n = cfg.scan_steps
        if mon.horizon_ps is None:
            return None, None
        if self._step_end_ps is None:
            k = 0  # the first step: the job set its phases before streaming
        else:
            if mon.horizon_ps < self._step_end_ps:
                return None, None
            mon.end_step(self._step_end_ps, last_of_scan=self.step % n == n - 1)
            k = (self.step + 1) % n
        phases = scan_phases(self.users, k, n)
        command = None if self._step_end_ps is None else phases
        self.step += 1
        start = self.stream_horizon_ps() + round(cfg.settle_s * PS_PER_S)
        mon.begin_step(start, phases)
        self._step_end_ps = start + round(cfg.step_s * PS_PER_S)
        if k == 0 and self.step > 0:
            self._messages.append(f"phase scan {mon.scans_done + 1} started")
        event = StepEvent(self.reads - 1, self.step, k, start, self._step_end_ps, phases)
        return command, event

    def stream_horizon_ps(self) -> int:
        """The latest reference time any tagger has delivered."""
        return max(self.monitor.horizon_ps or 0, self.stream.reference_horizon_ps)

    def status(
        self,
        *,
        pumps: Sequence[PumpStatus] = (),
        tec: TecStatus | None = None,
        loops: Sequence[LoopRow] = (),
        interlocks: Mapping[str, RuleStatus] | None = None,
        messages: Sequence[str] = (),
    ) -> EntanglementStatus:
        """The update: the chain's figures since the previous one, with the instruments'
        parts given (live: read now; replay: as recorded) and ``messages`` after the feed's."""
        rows, interval = self.monitor.status_rows()
        clock = self.stream.clock_status()
        keys = [r.key_rate_bps for r in rows if math.isfinite(r.key_rate_bps)]
        notes = (*self._messages, *messages)
        self._messages = []
        self.updates += 1
        return EntanglementStatus(
            time_s=self.monitor.data_time_s,
            interval_s=interval,
            pairs=rows,
            total_key_rate_bps=float(sum(keys)) if keys else math.nan,
            pumps=tuple(pumps),
            tec=tec,
            clock_state=clock.state,
            clock_offset_ps=clock.offset_ps,
            clock_drift_ppm=clock.drift_ppm,
            clock_locked_fraction=clock.locked_fraction,
            lost_events=self.lost_events,
            scan_step=max(self.step, 0) % self.config.scan_steps,
            messages=notes,
            loops=tuple(loops),
            interlocks=dict(interlocks or {}),
        )


def _sync_pair(ent: EntanglementConfig, where: str) -> tuple[int, int] | None:
    """Stream ids of the first cross-tagger link (reference side first), if any."""
    if len(ent.taggers) < 2:
        return None
    ids = {c.label: k for k, c in enumerate(ent.channels)}
    for link in ent.links():
        a, b = ent.channel(link.channel_a), ent.channel(link.channel_b)
        if a.tagger != b.tagger:
            ref, oth = (a, b) if a.tagger == ent.reference_tagger else (b, a)
            return ids[ref.label], ids[oth.label]
    raise FeedError(
        f"{where}: entanglement.channels: the two taggers share no correlated "
        "channel pair, so their clocks cannot be aligned"
    )

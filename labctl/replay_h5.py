"""Replay of labctl recordings through the live pipeline code.

A recording's raw data (ISAQN scope records, entanglement tag batches per read) are pushed in
acquisition order through the same feed object the live job used
(:class:`~labctl.isaqn_feed.IsaqnFeed`, :class:`~labctl.entangle_feed.EntanglementFeed`),
built from the bench file stored in the recording. Every update it emits is compared with the
one the live run recorded: they agree to float tolerance when the labctl version is the same
(the chain is deterministic, its decisions depend on the data alone).

* :func:`open_capture` opens any labctl recording (its format picks the reader);
* :func:`replay_chunk` pushes units ``[start, stop)`` into a feed and returns it with the
  updates: the step single-process replay, ``--follow`` and the Dask tasks
  (:mod:`labctl.replay_dask`) are built from, so they give identical results;
* :func:`replay_file` is ``labctl replay FILE.h5``: pacing (``--speed``), a data-time range
  and following a file still being written.

Time ranges: the chain carries state from the start of the run (calibration, band locks,
clock alignment, scans), so a replay always pushes the data from the start; ``start_s`` and
``end_s`` select which updates are reported, and the replay stops at ``end_s``. Pacing applies
inside the range only (what comes before it is pushed as fast as possible).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.entangle_record import FORMAT as ENT_FORMAT
from labctl.entangle_record import EntanglementCapture, open_entanglement
from labctl.h5read import RecordingError, open_recording
from labctl.isaqn_record import FORMAT as ISAQN_FORMAT
from labctl.isaqn_record import IsaqnCapture, open_isaqn
from labctl.record_fields import differences

Capture = IsaqnCapture | EntanglementCapture
Update = tuple[int, dict[str, Any]]  # (update index, status.to_dict())
#: relative tolerance of the comparison with the recorded updates
RTOL = 1e-9
OPENERS: dict[str, Callable[..., Capture]] = {
    ISAQN_FORMAT.name: open_isaqn,
    ENT_FORMAT.name: open_entanglement,
}


def open_capture(path: Path | str, *, follow: bool = False) -> Capture:
    """Open a labctl recording with its bench's reader (SWMR: it may still be written)."""
    path = Path(path)
    with open_recording(path, follow=follow) as rec:
        name = rec.format.name
    opener = OPENERS.get(name)
    if opener is None:
        raise RecordingError(
            path, f"format {name!r}: labctl replays {sorted(OPENERS)} recordings only"
        )
    return opener(path, follow=follow)


def data_time_s(feed: Any) -> float:
    """Data time the feed has analysed [s] (either bench)."""
    return float(feed.data_time_s)


def replay_chunk(
    path: Path | str,
    start: int,
    stop: int | None,
    feed: Any = None,
    *,
    capture: Capture | None = None,
) -> tuple[Any, list[Update]]:
    """Push units ``[start, stop)`` of the recording at ``path`` into ``feed`` (a new feed
    from the recorded bench file when None; then ``start`` must be 0). Returns the feed (its
    state carries to the next chunk) and the updates emitted, numbered from the run's first.
    Opens the file itself in SWMR read mode unless ``capture`` is given (a Dask task opens
    its own)."""
    own = capture is None
    cap = open_capture(path) if capture is None else capture
    try:
        if feed is None:
            if start != 0:
                raise ValueError(f"{path}: a chunk from unit {start} needs the previous feed")
            feed = cap.make_feed()
        updates: list[Update] = []
        for unit in cap.units(start, stop):
            k = feed.updates
            out = cap.replay_push(feed, unit)
            if out is not None:
                updates.append((k, out[1]))
        return feed, updates
    finally:
        if own:
            cap.close()


@dataclass
class ReplayReport:
    """What a replay did and how it compares with the live run's recorded updates."""

    path: str
    format: str
    units: int = 0  #: records / reads pushed
    data_s: float = 0.0  #: data time replayed [s]
    updates: list[Update] = field(default_factory=list)  #: in the range
    recorded_updates: int = 0
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    complete: bool = False  #: the recording was closed normally
    elapsed_s: float = 0.0
    #: set when the recording began this far into a live run (dashboard): not compared
    started_after_data_s: float | None = None

    @property
    def matches(self) -> bool:
        return self.compared > 0 and not self.mismatches

    def to_dict(self, *, all_updates: bool = False) -> dict[str, Any]:
        last = self.updates[-1][1] if self.updates else None
        out: dict[str, Any] = {
            "file": self.path,
            "format": self.format,
            "units": self.units,
            "data_s": self.data_s,
            "elapsed_s": self.elapsed_s,
            "complete": self.complete,
            "updates": len(self.updates),
            "recorded_updates": self.recorded_updates,
            "compared": self.compared,
            "matches_recorded": self.matches,
            "mismatches": self.mismatches[:50],
            "started_after_data_s": self.started_after_data_s,
            "last": last,
        }
        if all_updates:
            out["all"] = [d for _, d in self.updates]
        return out


def started_after_data_s(cap: Capture) -> float | None:
    """How far into a live run the recording began (``labctl gui``'s recording controls), or
    None for a recording of a whole run. The live updates of such a recording are cumulative
    since the run's start and a replay's since the file's, so they are not compared."""
    value = cap.rec.attrs.get("started_after_data_s")
    return None if value is None else float(value)


def compare_capture(report: ReplayReport, cap: Capture) -> None:
    """Fill ``report``'s comparison of its updates with the ones ``cap`` recorded."""
    recorded = cap.recorded_dicts()
    report.recorded_updates = len(recorded)
    report.started_after_data_s = started_after_data_s(cap)
    if report.started_after_data_s is None:
        report.compared, report.mismatches = compare(report.updates, recorded)


def compare(updates: list[Update], recorded: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(updates compared, differences "update k: field: replayed vs recorded")."""
    n = 0
    out: list[str] = []
    for k, d in updates:
        if k >= len(recorded):
            continue
        n += 1
        out += [f"update {k}: {x}" for x in differences(d, recorded[k], rtol=RTOL)]
    return n, out


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible), ``1x`` -> 1.0, ``2.5x`` -> 2.5."""
    t = text.strip().lower()
    if t in ("max", "inf", "0"):
        return None
    value = t[:-1] if t.endswith("x") else t
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"--speed {text!r}: expected max, 1x or Nx (e.g. 4x, 0.5x)") from None
    if not speed > 0:
        raise ValueError(f"--speed {text!r}: expected a speed > 0")
    return speed


def replay_file(
    path: Path | str,
    *,
    speed: float | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
    follow: bool = False,
    sink: Callable[[int, Any], None] | None = None,
    observe: Callable[[Any], None] | None = None,
    stop: Any = None,
    poll_s: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayReport:
    """Replay one recording (module doc): ``speed`` None = as fast as possible, else data
    seconds per wall second; updates whose data time lies in [``start_s``, ``end_s``] go to
    ``sink(index, status)`` (a :class:`NetworkStatus` / :class:`EntanglementStatus`) and, as
    ``to_dict()``, to the report; ``observe(feed)`` is called once with the feed before the
    first push (the dashboard taps it, e.g. :attr:`IsaqnFeed.observer`). ``follow``: wait for
    rows a running writer has yet to commit, until it closes the file (or ``stop`` is set).
    ``sleep`` and ``clock`` (monotonic seconds) pace it; tests pass a simulated pair."""
    if end_s is not None and end_s < start_s:
        raise ValueError(f"time range: end {end_s} s is before start {start_s} s")
    cap = open_capture(path, follow=follow)
    t_wall0 = time.monotonic()
    report = ReplayReport(str(path), "")
    try:
        report.format = cap.rec.format.name
        feed = cap.make_feed()
        if observe is not None:
            observe(feed)
        done = 0
        paced_from: tuple[float, float] | None = None  # (wall, data time) pacing started at
        finished = False
        while not finished:
            n = cap.n_units
            for unit in cap.units(done, n):
                k = feed.updates
                out = cap.replay_push(feed, unit)
                done += 1
                t = data_time_s(feed)
                if speed is not None and t >= start_s:
                    if paced_from is None:
                        paced_from = (clock(), t)
                    ahead = (t - paced_from[1]) / speed - (clock() - paced_from[0])
                    if ahead > 0:
                        sleep(ahead)
                in_range = t + 1e-9 >= start_s and (end_s is None or t <= end_s + 1e-9)
                if out is not None and in_range:
                    report.updates.append((k, out[1]))
                    if sink is not None:
                        sink(k, out[0])
                if (end_s is not None and t + 1e-9 >= end_s) or (
                    stop is not None and stop.is_set()
                ):
                    finished = True
                    break
            if finished or not follow:
                break
            if cap.complete and done >= cap.n_units:
                break
            sleep(poll_s)
            cap.refresh()
        report.units = done
        report.data_s = data_time_s(feed)
        report.complete = cap.complete
        compare_capture(report, cap)
    finally:
        cap.close()
    report.elapsed_s = time.monotonic() - t_wall0
    return report

"""Short recordings of the simulated benches, shared by the tests (no test module imports another).

:func:`record_isaqn` and :func:`record_entanglement` run the live jobs on the simulated
instruments (manual clock, so the data are the same whatever the machine's speed) with the
recorders the CLI uses, and keep what the live run gave as references: its statuses, the
entanglement view's frames built in the job's status sink and the monitor's final histograms.
The entanglement recording is also replayed once through ``replay_file`` with a second view
attached. tests/conftest.py makes one of each per test session (fixtures ``isaqn_recording``
and ``ent_recording``); every user shares the same parameters:

* ISAQN: 3 s of data (30 data records: enough for the spectrum average and the phase PSD of
  labctl/isaqn_view.py, and a paced replay of a few steps).
* Entanglement: 4 s of data with an update every 0.5 s (8 updates: the loops, interlocks, the
  scan steps and the drift forecast have a history; the bench file's own 1 s update would give
  only 4).

:func:`replay_with_view` / :func:`replay_with_gap` replay the ISAQN recording with an
:class:`~labctl.isaqn_view.IsaqnView` attached and keep the feed's own per-record results as
references (tests/test_isaqn_view.py, tests/test_gui_isaqn_panels.py). :func:`save_artifact`
and :func:`show_panel` are the GUI panel tests' helpers.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.sim.clock import VirtualClock
from labctl.config import CONFIG_DIR, BenchConfig, load_bench
from labctl.entangle_job import EntanglementJob, run_entanglement
from labctl.entangle_record import EntanglementRecorder
from labctl.entangle_status import EntanglementStatus
from labctl.entangle_view import EntanglementFrame, EntanglementView
from labctl.isaqn_feed import Record
from labctl.isaqn_job import IsaqnJob, run_isaqn
from labctl.isaqn_pipeline import RecordResult
from labctl.isaqn_record import IsaqnRecorder, open_isaqn
from labctl.isaqn_status import NetworkStatus
from labctl.isaqn_view import SPECTRUM_RECORDS, IsaqnFrame, IsaqnView
from labctl.replay_h5 import replay_file

ISAQN_BENCH = CONFIG_DIR / "isaqn_sim.toml"
ENT_BENCH = CONFIG_DIR / "entanglement_sim.toml"
ISAQN_DATA_S = 3.0  #: data time of the ISAQN recording
ENT_DATA_S = 4.0  #: data time of the entanglement recording
ENT_UPDATE_S = 0.5  #: its status period (the bench file says 1.0 s)


# -- ISAQN --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IsaqnRecording:
    path: Path  #: the HDF5 recording
    config: BenchConfig
    statuses: tuple[NetworkStatus, ...]  #: the live job's, in order


def record_isaqn(folder: Path, *, duration_s: float = ISAQN_DATA_S) -> IsaqnRecording:
    """Record ``duration_s`` of configs/isaqn_sim.toml into ``folder / "run.h5"``."""
    config = load_bench(ISAQN_BENCH)
    path = folder / "run.h5"
    statuses: list[NetworkStatus] = []
    recorders: list[IsaqnRecorder] = []

    def factory(job: IsaqnJob) -> Callable[[Record], None]:
        rec = IsaqnRecorder(path, config, wavelength_nm=job.wavelength_nm)
        rec.attach(job.bench.instruments)
        recorders.append(rec)
        return rec.record

    try:
        run_isaqn(
            config,
            duration_s=duration_s,
            sinks=[statuses.append, lambda st: recorders[0].status(st)],
            record_sink_factory=factory,
            clock=VirtualClock(realtime=False),
        )
    finally:
        for rec in recorders:
            rec.close()
    return IsaqnRecording(path, config, tuple(statuses))


@dataclass
class Replayed:
    """What a replay with the view attached gave: the view's frames and, as references, what
    the feed produced (per band pilot times/phases and symbols, record by record)."""

    view: IsaqnView
    frames: list[IsaqnFrame] = field(default_factory=list)
    statuses: list[NetworkStatus] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    pilot_t: list[list[np.ndarray]] = field(default_factory=list)
    pilot_phase: list[list[np.ndarray]] = field(default_factory=list)
    symbols: list[list[np.ndarray]] = field(default_factory=list)
    last_samples: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=SPECTRUM_RECORDS))
    messages: list[str] = field(default_factory=list)

    def cat(self, what: str, b: int) -> np.ndarray:
        return np.concatenate(getattr(self, what)[b])

    def frame_cat(self, what: str, b: int) -> np.ndarray:
        return np.concatenate([getattr(f.nodes[b], what) for f in self.frames])

    def take(self) -> None:
        """Append the view's next frame, if it has one."""
        frame = self.view.take_frame()
        if frame is not None:
            self.frames.append(frame)


def _observer(out: Replayed, n_bands: int) -> Callable[[Record, RecordResult | None], None]:
    """A feed observer that gives each record to the view and keeps the feed's results."""
    out.pilot_t = [[] for _ in range(n_bands)]
    out.pilot_phase = [[] for _ in range(n_bands)]
    out.symbols = [[] for _ in range(n_bands)]

    def observe(record: Record, result: RecordResult | None) -> None:
        out.view.observe(record, result)
        out.kinds.append(record.kind)
        out.last_samples.append(np.array(record.samples))
        if result is None:
            return
        for b, band in result.bands.items():
            out.pilot_t[b].append(band.pilot_t_s.copy())
            out.pilot_phase[b].append(band.pilot_phase_rad.copy())
            out.symbols[b].append(band.symbols_snu.copy())

    return observe


def replay_with_view(path: Path, *, every: int = 1, concurrent: bool = False, **kw) -> Replayed:
    """Replay ``path`` with an :class:`IsaqnView` (``**kw``) observing the feed; a frame is
    taken after every ``every``-th record on the pushing thread (as the dashboard's source does)
    or, with ``concurrent``, by another thread in a loop; a last frame after the end."""
    holder: list[Replayed] = []
    stop = threading.Event()

    def observe(feed) -> None:
        out = Replayed(IsaqnView(feed.config, **kw))
        holder.append(out)
        keep = _observer(out, len(feed.config.nodes))
        count = [0]

        def observer(record: Record, result: RecordResult | None) -> None:
            keep(record, result)
            count[0] += 1
            if not concurrent and count[0] % every == 0:
                out.take()

        feed.observer = observer

    def taker() -> None:
        while not stop.is_set() or not holder:
            if holder:
                holder[0].take()
            stop.wait(0.001)

    thread = threading.Thread(target=taker) if concurrent else None
    if thread is not None:
        thread.start()
    statuses: list[NetworkStatus] = []
    try:
        report = replay_file(path, observe=observe, sink=lambda _k, s: statuses.append(s))
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    out = holder[0]
    assert report.matches, report.mismatches[:3]
    out.take()
    out.statuses = statuses
    return out


def replay_with_gap(path: Path, skip: tuple[int, int] = (10, 13)) -> Replayed:
    """Push the recording's records into a new feed with data records ``skip`` left out: a
    gap in the stream, after which every band loses lock and is re-synchronised."""
    with open_isaqn(path) as cap:
        feed = cap.make_feed()
        out = Replayed(IsaqnView(feed.config))
        feed.progress = out.messages.append
        feed.observer = _observer(out, len(feed.config.nodes))
        units = list(cap.units(0, cap.n_units))
        first = next(k for k, u in enumerate(units) if u.kind == "data")
        for k, unit in enumerate(units):
            if first + skip[0] <= k < first + skip[1]:
                continue
            status = feed.push(unit)
            if status is not None:
                out.statuses.append(status)
            if k % 4 == 0:
                out.take()
    out.take()
    return out


# -- entanglement -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntRecording:
    path: Path  #: the HDF5 recording
    config: BenchConfig  #: the bench with the recording's update period
    statuses: tuple[EntanglementStatus, ...]  #: live, with loops and interlocks
    frames: tuple[EntanglementFrame, ...]  #: the live view's, one per status
    hist: np.ndarray  #: the monitor's histograms at the end of the run (int64, pair x bin)
    replay_statuses: tuple[EntanglementStatus, ...]
    replay_frames: tuple[EntanglementFrame, ...]  #: a second view, attached to the replay


def bench_with_update(folder: Path, update_s: float) -> Path:
    """configs/entanglement_sim.toml with its status period set to ``update_s``."""
    text = ENT_BENCH.read_text(encoding="utf-8")
    assert "update_s = 1.0" in text, f"{ENT_BENCH} no longer sets update_s = 1.0"
    bench = folder / "entanglement_fast.toml"
    bench.write_text(text.replace("update_s = 1.0", f"update_s = {update_s}"), encoding="utf-8")
    return bench


def record_entanglement(
    folder: Path, *, duration_s: float = ENT_DATA_S, update_s: float = ENT_UPDATE_S
) -> EntRecording:
    """Record ``duration_s`` of the simulated entanglement bench (status every ``update_s``)
    into ``folder / "run.h5"`` with a view in the live status sink, then replay it with
    another view attached (the replay must match the recording)."""
    config = load_bench(bench_with_update(folder, update_s))
    path = folder / "run.h5"
    view = EntanglementView(config)
    statuses: list[EntanglementStatus] = []
    frames: list[EntanglementFrame] = []
    recorders: list[EntanglementRecorder] = []
    jobs: list[EntanglementJob] = []

    def hook(job: EntanglementJob) -> None:
        jobs.append(job)
        recorders.append(EntanglementRecorder.for_job(path, job))

    def sink(status: EntanglementStatus) -> None:
        statuses.append(status)
        frames.append(view.on_status(jobs[0].feed, status))
        recorders[0].status(status)

    try:
        run_entanglement(
            config,
            duration_s=duration_s,
            sinks=[sink],
            clock=VirtualClock(realtime=False),
            job_hook=hook,
        )
    finally:
        for rec in recorders:
            rec.close()
    hist = jobs[0].monitor.counts.hist.copy()

    replay_view = EntanglementView(config)
    feeds: list[Any] = []
    r_statuses: list[EntanglementStatus] = []
    r_frames: list[EntanglementFrame] = []

    def replay_sink(_index: int, status: EntanglementStatus) -> None:
        r_statuses.append(status)
        r_frames.append(replay_view.on_status(feeds[0], status))

    report = replay_file(path, sink=replay_sink, observe=feeds.append)
    assert report.matches, report.mismatches[:5]
    return EntRecording(
        path, config, tuple(statuses), tuple(frames), hist, tuple(r_statuses), tuple(r_frames)
    )


# -- GUI panels ---------------------------------------------------------------------------------
def show_panel(
    qtbot: Any, panel: Any, size: tuple[int, int] = (900, 600), name: str | None = None
) -> Any:
    """Register ``panel`` with qtbot, resize it to ``size`` (px), show it, wait until exposed;
    with ``name``, first check the panel has a title and that stable object name."""
    if name is not None:
        assert panel.title and panel.objectName() == name, (panel.title, panel.objectName())
    qtbot.addWidget(panel)
    panel.resize(*size)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def save_artifact(widget: Any, name: str, tmp_path: Path) -> Path:
    """Render ``widget`` to ``name``.png in ``$LABCTL_ARTIFACTS`` (if set) else ``tmp_path``;
    asserts the file was written and reads back at the widget's size."""
    from PySide6.QtGui import QImage

    folder = Path(os.environ.get("LABCTL_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    assert path.stat().st_size > 0, f"{path} is empty"
    image = QImage(str(path))
    assert (image.width(), image.height()) == (widget.width(), widget.height()), path
    return path

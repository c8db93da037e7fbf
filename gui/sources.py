"""Where the dashboard's data comes from: a bench run live, or a recording replayed.

Both sources run the same pipeline code as ``labctl run`` and ``labctl replay`` (the jobs'
feeds, :mod:`labctl.isaqn_feed` and :mod:`labctl.entangle_feed`) on a worker thread of their
own, and hand the GUI thread only finished, immutable things through queued Qt signals:

* ``status_ready(index, status)``: every update (:class:`NetworkStatus` or
  :class:`EntanglementStatus`), in order, none dropped;
* ``frame_ready(frame)``: what the plots draw beyond the statuses (spectrum, phase samples,
  constellation, histograms, loop forecasts), built off the GUI thread by the bench's view
  (:class:`labctl.isaqn_view.IsaqnView`, :class:`labctl.entangle_view.EntanglementView`), at
  most ``FRAME_RATE_HZ`` a second; the phase samples of a frame are those since the previous
  one, so nothing is lost when frames are spaced;
* ``message(text)``: progress lines (calibration, locks, recording, faults);
* ``fault(text)``: the run ended on an error (the bench is left safe all the same);
* ``finished(text)``: the worker ended (why, in one line).

:class:`LiveSource` owns the bench's whole life on its thread: connect, safe start, the job,
and at the end (stop, error or duration) the job's shutdown and :meth:`Bench.close` (outputs
off, ramps down). Just before that close it emits ``closing`` through a *blocking* queued
connection, so the GUI shuts its instrument panels down (no write can reach an instrument after
its safe state) before the bench is closed. The GUI thread therefore never joins the worker.

Recording (live): on by default, as in ``labctl run``; :meth:`LiveSource.stop_recording` and
:meth:`LiveSource.start_recording` are requests carried out on the worker thread between two
records/reads (the recorder is never touched by two threads); the old file is closed off both
threads. A recording started in the middle of a run carries an attribute
``started_after_data_s`` (replay then does not compare it with the live statuses, which were
cumulative since the run's start); an ISAQN one begins with the run's calibration records, so
it replays on its own.

:class:`ReplaySource` replays a recording through :func:`labctl.replay_h5.replay_file` paced
by a :class:`ReplayClock`: a speed that can change while playing (or ``max``), pause, and seek
(forward: run at full speed to the target without drawing; backward: start again from the
file's beginning, as the chain needs its calibration, locks and clock search).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from drivers.errors import InstrumentError
from labctl.bench import Bench
from labctl.config import BenchConfig

log = logging.getLogger(__name__)

#: frames per second at most (the plots refresh at this rate too)
FRAME_RATE_HZ = 30.0


def bench_kind(config: BenchConfig) -> str:
    """``isaqn``, ``entanglement`` or ``bench`` (instruments only)."""
    if config.isaqn is not None:
        return "isaqn"
    if config.entanglement is not None:
        return "entanglement"
    return "bench"


def make_view(config: BenchConfig) -> Any:
    """The frame builder of the bench's kind (None for an instruments-only bench)."""
    kind = bench_kind(config)
    if kind == "isaqn":
        from labctl.isaqn_view import IsaqnView

        return IsaqnView(config)
    if kind == "entanglement":
        from labctl.entangle_view import EntanglementView

        return EntanglementView(config)
    return None


@dataclass(frozen=True)
class RecordingState:
    """What the recording controls show (:meth:`LiveSource.recording_state`)."""

    path: Path | None
    recording: bool
    file_bytes: int = 0
    rows_lost: int = 0
    queue_fill: float = 0.0
    last_commit_unix_s: float | None = None
    error: str | None = None


class _Source(QObject):
    status_ready = Signal(int, object)
    frame_ready = Signal(object)
    message = Signal(str)
    fault = Signal(str)
    finished = Signal(str)

    def __init__(self, config: BenchConfig) -> None:
        super().__init__()
        self.config = config
        self.kind = bench_kind(config)
        self.view = make_view(config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_frame = -math.inf
        self.updates = 0  #: statuses emitted
        self.running = False
        self._window_s: float | None = None

    def set_window_s(self, window_s: float) -> None:
        """The phase panel's time window [s]: the view's PSD spans it (thread-safe)."""
        self._window_s = float(window_s)
        if self.view is not None and hasattr(self.view, "set_window_s"):
            self.view.set_window_s(self._window_s)

    # -- lifecycle (GUI thread) ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a source runs once")
        self.running = True
        self._thread = threading.Thread(target=self._main, name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called (the run may have ended since)."""
        return self._thread is not None

    def stop(self) -> None:
        """Ask the worker to end (it finishes the current record/read); returns at once."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Join the worker (tests and the command line; never from a slot of this source's
        blocking ``closing`` signal). True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _main(self) -> None:
        why = "finished"
        try:
            why = self._run()
            self._last_frame_flush()
        except Exception as exc:  # the worker's end, whatever it is, reaches the GUI
            log.debug("source failed", exc_info=True)
            why = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            self.fault.emit(why)
        finally:
            self.running = False
            self.finished.emit(why)

    def _run(self) -> str:
        raise NotImplementedError

    # -- worker thread ------------------------------------------------------------------
    def _emit_status(self, status: Any, feed: Any) -> None:
        if self.kind == "entanglement" and self.view is not None:
            self.frame_ready.emit(self.view.on_status(feed, status))
        self.status_ready.emit(self.updates, status)
        self.updates += 1

    def _observe_record(self, record: Any, result: Any) -> None:
        """IsaqnFeed.observer: the view takes the record; a frame at most every 1/30 s."""
        self.view.observe(record, result)
        if self._drawing():
            now = time.monotonic()
            if now - self._last_frame >= 1.0 / FRAME_RATE_HZ:
                self._last_frame = now
                frame = self.view.take_frame()
                if frame is not None:
                    self.frame_ready.emit(frame)

    def _drawing(self) -> bool:
        return True

    def _last_frame_flush(self) -> None:
        """The records since the last frame, drawn at the end of the run (ISAQN views)."""
        take = getattr(self.view, "take_frame", None)
        frame = None if take is None else take()
        if frame is not None:
            self.frame_ready.emit(frame)


class LiveSource(_Source):
    """Runs ``config``'s bench and its main job on a worker thread (module doc).

    ``record_path``: the recording to start with (None: not recording); ``clock``: a simulated
    bench's clock (tests); ``duration_s``: data time after which the job ends (None: until
    :meth:`stop`)."""

    bench_ready = Signal(object)  # the connected Bench: instrument panels
    closing = Signal()  # emitted blocking just before the bench is closed
    recording_changed = Signal(object)  # RecordingState

    def __init__(
        self,
        config: BenchConfig,
        *,
        record_path: Path | None = None,
        flush_s: float = 1.0,
        duration_s: float | None = None,
        clock: Any = None,
    ) -> None:
        super().__init__(config)
        self.record_path = record_path
        self.flush_s = flush_s
        self.duration_s = duration_s
        self.clock = clock
        self.bench: Bench | None = None
        self.job: Any = None
        self._recorder: Any = None
        self._recorder_path: Path | None = None
        self._recorder_error: str | None = None
        self._requests: list[tuple[str, Path | None]] = []
        self._lock = threading.Lock()
        self._calibration: list[Any] = []  # ISAQN: the run's calibration records
        self._closers: list[threading.Thread] = []

    # -- recording requests (GUI thread) ------------------------------------------------
    def start_recording(self, path: Path) -> None:
        """Record from the next record/read on into ``path`` (refused later if it exists)."""
        with self._lock:
            self._requests.append(("start", Path(path)))

    def stop_recording(self) -> None:
        """Close the recording after the current record/read."""
        with self._lock:
            self._requests.append(("stop", None))

    def recording_state(self) -> RecordingState:
        """Thread-safe snapshot for the recording controls."""
        rec, path = self._recorder, self._recorder_path
        if rec is None:
            return RecordingState(path, False, error=self._recorder_error)
        st = rec.recorder.stats()
        return RecordingState(
            path,
            not st.closed,
            file_bytes=st.file_bytes,
            rows_lost=st.rows_lost,
            queue_fill=st.queue_fill,
            last_commit_unix_s=st.last_commit_unix_s,
            error=st.error or self._recorder_error,
        )

    # -- worker --------------------------------------------------------------------------
    def _progress(self, text: str) -> None:
        self.message.emit(text)

    def _run(self) -> str:
        bench = Bench(self.config, clock=self.clock)
        self.bench = bench
        job = None
        try:
            bench.connect(progress=self._progress)
            bench.apply_safe_start(progress=self._progress)
            self.bench_ready.emit(bench)
            if self.kind == "isaqn":
                job = self._isaqn(bench)
            elif self.kind == "entanglement":
                job = self._entanglement(bench)
            else:
                self._progress("instruments only: no main job on this bench")
                self._open(self.record_path)
                while not self._stop.wait(0.2):
                    self._apply_requests()
            return "stopped" if self._stop.is_set() else "finished"
        except InstrumentError as exc:
            raise RuntimeError(str(exc)) from exc
        finally:
            try:
                self.closing.emit()  # blocking: instrument panels shut down first
                if job is not None and hasattr(job, "shutdown"):
                    job.shutdown()
            finally:
                try:
                    bench.close()  # the safe state's writes still reach the recording
                    self._progress("bench closed: instruments left safe")
                finally:
                    self._close_recorder(wait=True)
                    for closer in self._closers:
                        closer.join()

    def _isaqn(self, bench: Bench) -> Any:
        from labctl.isaqn_job import IsaqnJob

        job = IsaqnJob(bench, self.config, progress=self._progress)
        self.job = job
        job.feed.observer = self._observe_record
        job.record_sink = self._record
        self._open(self.record_path)
        job.run(duration_s=self.duration_s, stop=self._stop, sinks=[self._status])
        return job

    def _entanglement(self, bench: Bench) -> Any:
        from labctl.entangle_job import EntanglementJob

        job = EntanglementJob(bench, self.config, progress=self._progress)
        self.job = job
        job.read_sink = self._read
        self._open(self.record_path)
        job.run(duration_s=self.duration_s, stop=self._stop, sinks=[self._status])
        return job

    def _status(self, status: Any) -> None:
        rec = self._recorder
        if rec is not None:
            rec.status(status)
        self._emit_status(status, self.job.feed)

    def _record(self, record: Any) -> None:  # ISAQN: every scope record
        if record.kind != "data":
            self._calibration.append(record)
        self._apply_requests()
        if self._recorder is not None:
            self._recorder.record(record)

    def _read(self, batches: Any, result: Any) -> None:  # entanglement: every read
        self._apply_requests()
        if self._recorder is not None:
            self._recorder.read(batches, result)

    def _apply_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for what, path in requests:
            if what == "stop":
                self._close_recorder(wait=False)
            elif self._recorder is None:
                self._open(path)

    def _open(self, path: Path | None) -> None:
        """A recorder for the running job (worker thread)."""
        if path is None:
            return
        from labctl.entangle_record import EntanglementRecorder
        from labctl.isaqn_record import IsaqnRecorder
        from labctl.run_record import GENERIC_FORMAT, RunRecorder

        job = self.job
        started = None if job is None else job.feed.data_time_s
        attrs = {} if not started else {"started_after_data_s": float(started)}
        alarm = self._recorder_alarm
        try:
            if path.exists():
                raise FileExistsError(f"{path}: exists; recordings are never overwritten")
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.kind == "isaqn":
                rec = IsaqnRecorder(
                    path,
                    self.config,
                    wavelength_nm=job.wavelength_nm,
                    flush_interval_s=self.flush_s,
                    on_error=alarm,
                    attrs=attrs,
                )
                rec.attach(job.bench.instruments)
                if started:  # the calibration first: the file replays on its own
                    for record in self._calibration:
                        rec.record(record)
            elif self.kind == "entanglement":
                rec = EntanglementRecorder.for_job(
                    path, job, flush_interval_s=self.flush_s, on_error=alarm, attrs=attrs
                )
                job.read_sink = self._read  # for_job points it at the recorder itself
            else:
                rec = RunRecorder(
                    path,
                    self.config,
                    GENERIC_FORMAT,
                    [],
                    flush_interval_s=self.flush_s,
                    on_error=alarm,
                )
                rec.attach(self.bench.instruments)
        except (OSError, ValueError, RuntimeError) as exc:
            self._recorder_error = f"recording to {path} refused: {exc}"
            self.message.emit(f"RECORDING: {self._recorder_error}")
            self.recording_changed.emit(self.recording_state())
            return
        self._recorder, self._recorder_path, self._recorder_error = rec, path, None
        self.message.emit(f"recording to {path}")
        self.recording_changed.emit(self.recording_state())

    def _recorder_alarm(self, exc: Exception) -> None:
        self._recorder_error = str(exc)
        self.message.emit(f"RECORDING: {exc}")

    def _close_recorder(self, *, wait: bool) -> None:
        """Detach the recorder here; commit and close it on a thread of its own."""
        rec, path = self._recorder, self._recorder_path
        if rec is None:
            return
        self._recorder = None
        rec.detach()

        def close() -> None:
            try:
                rec.close()
            except Exception as exc:  # said, not raised: the run goes on
                self._recorder_error = f"closing {path}: {exc}"
                self.message.emit(f"RECORDING: {self._recorder_error}")
            else:
                lost = rec.overrun_rows
                tail = f", {lost} rows NOT recorded (disk too slow)" if lost else ""
                self.message.emit(f"recorded {path}{tail}")
            self.recording_changed.emit(RecordingState(path, False, error=self._recorder_error))

        if wait:
            close()
        else:
            closer = threading.Thread(target=close, name="recorder-close", daemon=True)
            closer.start()
            self._closers.append(closer)


class ReplayClock:
    """The pacing clock of a replay: ``replay_file(speed=1.0, clock=..., sleep=...)`` sleeps
    until this clock has advanced by the data time to come; it advances at ``rate`` times the
    wall clock (0 while paused, instantly at rate ``inf`` or while the data is before the
    seek target ``fast_until_s``). Rate and pause take effect within ``SLICE_S``."""

    SLICE_S = 0.05

    def __init__(self, stop: threading.Event, data_time_s: Callable[[], float]) -> None:
        self.rate = 1.0
        self.paused = False
        self.fast_until_s = -math.inf
        self._stop = stop
        self._data_time_s = data_time_s
        self._virtual_s = 0.0
        self._wake = threading.Event()

    def time(self) -> float:
        return self._virtual_s

    def fast(self) -> bool:
        return self._data_time_s() < self.fast_until_s

    def set_rate(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError(f"replay speed {rate}: expected > 0 (or inf for max)")
        self.rate = rate
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._wake.set()

    def sleep(self, seconds: float) -> None:
        left = seconds
        while left > 0 and not self._stop.is_set():
            if self.fast() or math.isinf(self.rate):
                self._virtual_s += left
                return
            if self.paused:
                self._wake.wait(self.SLICE_S)
                self._wake.clear()
                continue
            step = min(left, self.SLICE_S * self.rate)
            t0 = time.monotonic()
            self._wake.wait(step / self.rate)
            self._wake.clear()
            done = min(step, (time.monotonic() - t0) * self.rate)
            self._virtual_s += done
            left -= done


@dataclass(frozen=True)
class ReplayInfo:
    """What the replay controls need before playing: the bench and the data's length."""

    path: Path
    config: BenchConfig
    format: str
    duration_s: float
    updates: int
    started_after_data_s: float | None


def replay_info(path: Path) -> ReplayInfo:
    """Open a recording once (SWMR read) for its bench and length; clear errors
    (:class:`labctl.h5read.RecordingError`) for what is not a labctl recording."""
    from labctl.replay_h5 import open_capture

    cap = open_capture(path, follow=True)
    try:
        recorded = cap.recorded_dicts()
        key = "t_s" if cap.kind == "isaqn" else "time_s"
        duration = float(recorded[-1][key]) if recorded else 0.0
        started = cap.rec.attrs.get("started_after_data_s")
        return ReplayInfo(
            Path(path),
            cap.config,
            cap.rec.format.name,
            duration,
            len(recorded),
            None if started is None else float(started),
        )
    finally:
        cap.close()


class ReplaySource(_Source):
    """Replays ``info.path`` through the live pipeline on a worker thread (module doc).

    ``speed``: data seconds per wall second (``math.inf``: as fast as possible)."""

    position = Signal(float)  # data time reached [s]
    restarted = Signal()  # a backward seek: the panels start afresh
    done = Signal(object)  # the ReplayReport (comparison with the live run)

    def __init__(self, info: ReplayInfo, *, speed: float = 1.0) -> None:
        super().__init__(info.config)
        self.info = info
        self._feed: Any = None
        self.clock = ReplayClock(self._stop, self._data_time_s)
        self.clock.set_rate(speed)
        self._seek_back: float | None = None
        self._seek_lock = threading.Lock()
        self._last_position = -math.inf

    def _data_time_s(self) -> float:
        from labctl.replay_h5 import data_time_s

        return -math.inf if self._feed is None else data_time_s(self._feed)

    # -- controls (GUI thread) -----------------------------------------------------------
    def set_speed(self, speed: float) -> None:
        self.clock.set_rate(speed)

    def set_paused(self, paused: bool) -> None:
        self.clock.set_paused(paused)

    def seek(self, t_s: float) -> None:
        """Go to data time ``t_s`` (forward: without drawing on the way; backward: again from
        the start of the file)."""
        if self._feed is not None and t_s >= self._data_time_s():
            self.clock.fast_until_s = t_s
            return
        with self._seek_lock:
            self._seek_back = t_s
            self._stop.set()  # this pass ends after the current unit; _run starts the next

    def stop(self) -> None:
        with self._seek_lock:
            self._seek_back = None
            self._stop.set()

    # -- worker ------------------------------------------------------------------------
    def _drawing(self) -> bool:
        if self.clock.fast():
            return False
        now = time.monotonic()
        if now - self._last_position >= 0.1:
            self._last_position = now
            self.position.emit(self._data_time_s())
        return True

    def _observe(self, feed: Any) -> None:
        self._feed = feed
        feed.progress = self.message.emit  # calibration, locks, re-syncs: as live
        if self.kind == "isaqn":
            feed.observer = self._observe_record

    def _sink(self, index: int, status: Any) -> None:
        self._emit_status(status, self._feed)
        self._drawing()

    def _run(self) -> str:
        from labctl.replay_h5 import replay_file

        while True:
            self.view = make_view(self.config)
            if self._window_s is not None:
                self.set_window_s(self._window_s)
            self.updates = 0
            report = replay_file(
                self.info.path,
                speed=1.0,
                sink=self._sink,
                observe=self._observe,
                stop=self._stop,
                sleep=self.clock.sleep,
                clock=self.clock.time,
            )
            with self._seek_lock:
                back, self._seek_back = self._seek_back, None
                if back is None:
                    break
                self._stop.clear()
            self._feed = None
            self.clock.fast_until_s = back
            self.restarted.emit()
        self.position.emit(report.data_s)
        self.done.emit(report)
        if self._stop.is_set():
            return "replay stopped"
        if self.info.started_after_data_s:
            return (
                f"replay finished: {report.data_s:.2f} s of data (recorded from "
                f"{self.info.started_after_data_s:.2f} s into a live run: not compared)"
            )
        verdict = "matches the live run" if report.matches else "DIFFERS from the live run"
        return (
            f"replay finished: {report.data_s:.2f} s of data, {report.compared} updates "
            f"compared, {verdict}"
        )


__all__ = [
    "FRAME_RATE_HZ",
    "LiveSource",
    "RecordingState",
    "ReplayClock",
    "ReplayInfo",
    "ReplaySource",
    "bench_kind",
    "make_view",
    "replay_info",
]

"""labctl.isaqn_view against independent references, on a real recording of the simulated bench.

A 3 s run of ``configs/isaqn_sim.toml`` is recorded once per session (the live job on the
simulated instruments, manual clock, the recorder the CLI uses; as tests/test_replay_h5.py)
and replayed through the live feed with the view attached (``replay_file(observe=...)``).
References: ``scipy.signal.welch`` of the very records the feed pushed (receiver spectrum and
phase PSD), the feed's own :class:`BandRecord` pilot phases and symbols (what the frames must
carry, with nothing lost or duplicated whichever thread takes the frames and when).

The helpers :func:`isaqn_recording` and :func:`replay_with_view` are shared with
tests/test_gui_isaqn_panels.py (the recording is made once per session).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from drivers.sim.clock import VirtualClock
from labctl.config import CONFIG_DIR, load_bench
from labctl.isaqn_feed import Record
from labctl.isaqn_job import IsaqnJob, run_isaqn
from labctl.isaqn_pipeline import RecordResult
from labctl.isaqn_record import IsaqnRecorder, open_isaqn
from labctl.isaqn_status import NetworkStatus
from labctl.isaqn_view import (
    PSD_MIN_SEGMENTS,
    PSD_NPERSEG_RANGE,
    SPECTRUM_NPERSEG,
    SPECTRUM_RECORDS,
    IsaqnFrame,
    IsaqnView,
    band_edges_hz,
    psd_nperseg,
)
from labctl.replay_h5 import replay_file

BENCH = CONFIG_DIR / "isaqn_sim.toml"
DATA_S = 3.0


def isaqn_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s recording of the simulated ISAQN bench, made once per session."""
    folder = tmp_path_factory.getbasetemp() / "isaqn-view-recording"
    path = folder / "run.h5"
    done = folder / "complete"
    if done.exists():
        return path
    folder.mkdir(exist_ok=True)
    config = load_bench(BENCH)
    recorders: list[IsaqnRecorder] = []

    def factory(job: IsaqnJob):
        rec = IsaqnRecorder(path, config, wavelength_nm=job.wavelength_nm)
        rec.attach(job.bench.instruments)
        recorders.append(rec)
        return rec.record

    try:
        run_isaqn(
            config,
            duration_s=DATA_S,
            sinks=[lambda st: recorders[0].status(st)],
            record_sink_factory=factory,
            clock=VirtualClock(realtime=False),
        )
    finally:
        for rec in recorders:
            rec.close()
    done.touch()
    return path


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


def _capture(out: Replayed, n_bands: int):
    out.pilot_t = [[] for _ in range(n_bands)]
    out.pilot_phase = [[] for _ in range(n_bands)]
    out.symbols = [[] for _ in range(n_bands)]

    def take(record: Record, result: RecordResult | None) -> None:
        out.kinds.append(record.kind)
        out.last_samples.append(np.array(record.samples))
        if result is None:
            return
        for b, band in result.bands.items():
            out.pilot_t[b].append(band.pilot_t_s.copy())
            out.pilot_phase[b].append(band.pilot_phase_rad.copy())
            out.symbols[b].append(band.symbols_snu.copy())

    return take


def replay_with_view(path: Path, *, every: int = 1, concurrent: bool = False, **kw) -> Replayed:
    """Replay ``path`` with an :class:`IsaqnView` observing the feed; a frame is taken after
    every ``every``-th record on the pushing thread (as the dashboard's source does) or, with
    ``concurrent``, by another thread in a loop; a last frame after the end."""
    holder: list[Replayed] = []
    stop = threading.Event()

    def observe(feed) -> None:
        view = IsaqnView(feed.config, **kw)
        out = Replayed(view)
        holder.append(out)
        take = _capture(out, len(feed.config.nodes))
        count = [0]

        def observer(record: Record, result: RecordResult | None) -> None:
            view.observe(record, result)
            take(record, result)
            count[0] += 1
            if not concurrent and count[0] % every == 0:
                frame = view.take_frame()
                if frame is not None:
                    out.frames.append(frame)

        feed.observer = observer

    def taker() -> None:
        while not stop.is_set() or not holder:
            if holder:
                frame = holder[0].view.take_frame()
                if frame is not None:
                    holder[0].frames.append(frame)
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
    last = out.view.take_frame()
    if last is not None:
        out.frames.append(last)
    out.statuses = statuses
    return out


def replay_with_gap(path: Path, skip: tuple[int, int] = (10, 13)) -> Replayed:
    """Push the recording's records into a new feed with data records ``skip`` left out: a
    gap in the stream, after which every band loses lock and is re-synchronised."""
    with open_isaqn(path) as cap:
        feed = cap.make_feed()
        view = IsaqnView(feed.config)
        out = Replayed(view)
        feed.progress = out.messages.append
        take = _capture(out, len(feed.config.nodes))

        def observer(record: Record, result: RecordResult | None) -> None:
            view.observe(record, result)
            take(record, result)

        feed.observer = observer
        units = list(cap.units(0, cap.n_units))
        first = next(k for k, u in enumerate(units) if u.kind == "data")
        for k, unit in enumerate(units):
            if first + skip[0] <= k < first + skip[1]:
                continue
            status = feed.push(unit)
            if status is not None:
                out.statuses.append(status)
            if k % 4 == 0:
                frame = view.take_frame()
                if frame is not None:
                    out.frames.append(frame)
    last = view.take_frame()
    if last is not None:
        out.frames.append(last)
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return isaqn_recording(tmp_path_factory)


@pytest.fixture(scope="module")
def replayed(recording: Path) -> Replayed:
    return replay_with_view(recording, every=3)


# -- spectrum -----------------------------------------------------------------------------------
def _welch_reference(records: list[np.ndarray], fs_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy's two-sided Welch of each record, averaged (equal lengths: equal weights)."""
    psds = []
    for x in records:
        f, p = signal.welch(
            x,
            fs=fs_hz,
            window="hann",
            nperseg=SPECTRUM_NPERSEG,
            noverlap=SPECTRUM_NPERSEG // 2,
            detrend="constant",
            return_onesided=False,
            scaling="density",
        )
        psds.append(p)
    return np.fft.fftshift(f), np.fft.fftshift(np.mean(psds, axis=0))


def test_spectrum_is_the_welch_average_of_the_last_records(replayed: Replayed) -> None:
    cfg = replayed.view.config
    frame = replayed.frames[-1]
    records = list(replayed.last_samples)
    assert all(k == "data" for k in replayed.kinds[-len(records) :])
    f_ref, p_ref = _welch_reference(records, cfg.sample_rate_hz)
    assert frame.spectrum_freq_hz.dtype == np.float64
    assert np.all(np.diff(frame.spectrum_freq_hz) > 0)
    np.testing.assert_allclose(frame.spectrum_freq_hz, f_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(frame.spectrum_psd_v2_per_hz, p_ref, rtol=1e-9, atol=0)
    per_record = (cfg.record_length - SPECTRUM_NPERSEG) // (SPECTRUM_NPERSEG // 2) + 1
    assert frame.spectrum_records == SPECTRUM_RECORDS
    assert frame.spectrum_averages == SPECTRUM_RECORDS * per_record
    # the nodes' bands carry their power: each band's mean PSD is far above the gaps'
    bands = band_edges_hz(cfg)
    f, p = frame.spectrum_freq_hz, frame.spectrum_psd_v2_per_hz
    inside = np.zeros(f.size, dtype=bool)
    for lo, hi in bands:
        sel = (f >= lo) & (f <= hi)
        inside |= sel
    outside = (np.abs(f) > 5e3) & ~inside & (f > 0)
    for lo, hi in bands:
        sel = (f >= lo) & (f <= hi)
        assert np.mean(p[sel]) > 10.0 * np.median(p[outside])


def test_spectrum_average_restarts_with_each_record_kind(recording: Path) -> None:
    out = replay_with_view(recording, every=1)
    kinds = [f.record_kind for f in out.frames]
    for kind in ("electronic", "shot", "data"):
        first = kinds.index(kind)
        assert out.frames[first].spectrum_records == 1  # a new kind starts a new average
        assert out.frames[first + 1].spectrum_records == min(2, SPECTRUM_RECORDS)
    assert max(f.spectrum_records for f in out.frames) == SPECTRUM_RECORDS


# -- phase --------------------------------------------------------------------------------------
def test_frames_carry_every_pilot_phase_the_feed_produced(replayed: Replayed) -> None:
    for b in range(len(replayed.view.config.nodes)):
        t = replayed.frame_cat("t_s", b)
        p = replayed.frame_cat("phase_rad", b)
        assert t.dtype == np.float64 and p.dtype == np.float64
        assert np.array_equal(t, replayed.cat("pilot_t", b))
        assert np.array_equal(p, replayed.cat("pilot_phase", b))
        assert all(f.nodes[b].breaks.size == 0 for f in replayed.frames)  # no re-sync


def test_frames_taken_by_another_thread_lose_no_sample(recording: Path) -> None:
    out = replay_with_view(recording, concurrent=True)
    assert len(out.frames) > 1
    for b in range(len(out.view.config.nodes)):
        assert np.array_equal(out.frame_cat("t_s", b), out.cat("pilot_t", b))
        assert np.array_equal(out.frame_cat("phase_rad", b), out.cat("pilot_phase", b))


def test_a_resynchronisation_is_marked_where_the_new_stream_starts(recording: Path) -> None:
    out = replay_with_gap(recording)
    assert any("re-synchronised" in m for m in out.messages)
    for b in range(len(out.view.config.nodes)):
        t = out.frame_cat("t_s", b)
        assert np.array_equal(t, out.cat("pilot_t", b))  # still nothing lost
        breaks, offset = [], 0
        for f in out.frames:
            breaks += [offset + int(i) for i in f.nodes[b].breaks]
            offset += f.nodes[b].t_s.size
        # reference: the record whose first pilot is not one pilot period after the last
        spacing = 1.0 / out.view.pilot_rate_hz[b]
        starts = np.cumsum([0] + [a.size for a in out.pilot_t[b]])[:-1]
        gaps = [
            int(s)
            for s, prev, cur in zip(
                starts[1:], out.pilot_t[b][:-1], out.pilot_t[b][1:], strict=True
            )
            if cur[0] - prev[-1] > 1.5 * spacing
        ]
        assert breaks == gaps and len(breaks) == 1


def test_phase_psd_is_scipy_welch_of_the_window(replayed: Replayed) -> None:
    frame = replayed.frames[-1]
    for b, node in enumerate(frame.nodes):
        rate = replayed.view.pilot_rate_hz[b]
        t, p = replayed.cat("pilot_t", b), replayed.cat("pilot_phase", b)
        # the frame's PSD may be up to psd_period_s old: the window ending where it ended
        record_s = replayed.view.config.record_length / replayed.view.config.sample_rate_hz
        assert t[-1] - replayed.view.psd_period_s - record_s <= node.psd_t_s <= t[-1]
        sel = (t <= node.psd_t_s) & (t > node.psd_t_s - frame.window_s)
        f_ref, p_ref = signal.welch(
            p[sel], fs=rate, window="hann", nperseg=psd_nperseg(int(sel.sum())), detrend="linear"
        )
        np.testing.assert_allclose(node.psd_freq_hz, f_ref, rtol=1e-12)
        np.testing.assert_allclose(node.psd_rad2_per_hz, p_ref, rtol=1e-9)
        assert node.psd_window_s == pytest.approx(sel.sum() / rate)


def test_set_window_is_checked_and_waits_for_data(replayed: Replayed) -> None:
    out = replayed
    out.view.set_window_s(1.5)
    # no new record: no frame; the next record's frame has the new window
    assert out.view.take_frame() is None
    assert out.view.window_s == 1.5
    with pytest.raises(ValueError, match="window_s"):
        out.view.set_window_s(-1.0)
    with pytest.raises(ValueError, match="window_s"):
        out.view.set_window_s(float("nan"))


def test_window_applies_from_the_next_frame(recording: Path) -> None:
    with open_isaqn(recording) as cap:
        feed = cap.make_feed()
        view = IsaqnView(feed.config, window_s=0.5, psd_period_s=0.0)
        view.attach(feed)
        windows = []
        for k, unit in enumerate(cap.units(0, cap.n_units)):
            if k == cap.n_units - 5:
                view.set_window_s(1.0)
            feed.push(unit)
            frame = view.take_frame()
            if frame is not None and frame.nodes[0].t_s.size:
                windows.append(frame.nodes[0].psd_window_s)
    assert windows[-6] == pytest.approx(0.5, abs=1e-3)
    assert windows[-1] == pytest.approx(1.0, abs=1e-3)


# -- constellation, bands -----------------------------------------------------------------------
def test_constellation_is_the_last_received_symbols(replayed: Replayed) -> None:
    frame = replayed.frames[-1]
    n = replayed.view._nodes[0].symbols.size
    for b, node in enumerate(frame.nodes):
        y = replayed.cat("symbols", b)[-n:]
        assert node.constellation_x_snu.dtype == np.float64
        assert np.array_equal(node.constellation_x_snu, y.real)
        assert np.array_equal(node.constellation_p_snu, y.imag)
        assert node.constellation_x_snu.size == n


def test_nodes_carry_the_config_bands_and_positions(replayed: Replayed) -> None:
    cfg = replayed.view.config
    frame = replayed.frames[-1]
    for node, c in zip(frame.nodes, cfg.nodes, strict=True):
        half = 0.5 * (1.0 + cfg.rolloff) * c.symbol_rate_hz
        assert node.name == c.name
        assert (node.band_lo_hz, node.band_hi_hz) == (c.carrier_hz - half, c.carrier_hz + half)
        assert (node.carrier_hz, node.x_m, node.y_m) == (c.carrier_hz, c.x_m, c.y_m)
    assert frame.node(cfg.nodes[1].name) is frame.nodes[1]
    with pytest.raises(KeyError, match="no node"):
        frame.node("nowhere")


def test_frames_are_read_only(replayed: Replayed) -> None:
    frame = replayed.frames[-1]
    with pytest.raises(ValueError):
        frame.spectrum_psd_v2_per_hz[0] = 0.0
    with pytest.raises(ValueError):
        frame.nodes[0].phase_rad[:1] = 0.0


def test_view_refuses_a_config_without_isaqn() -> None:
    with pytest.raises(ValueError, match="IsaqnConfig"):
        IsaqnView(object())


@given(st.integers(0, 2_000_000))
def test_psd_segment_is_the_longest_with_enough_averages(n: int) -> None:
    nperseg = psd_nperseg(n)
    lo, hi = PSD_NPERSEG_RANGE
    if nperseg == 0:
        assert 2 * n / lo - 1 < PSD_MIN_SEGMENTS
        return
    assert nperseg & (nperseg - 1) == 0 and lo <= nperseg <= hi
    segments = (n - nperseg) // (nperseg // 2) + 1
    assert segments >= PSD_MIN_SEGMENTS
    if nperseg < hi:  # twice as long would give fewer than the minimum
        assert (n - 2 * nperseg) // nperseg + 1 < PSD_MIN_SEGMENTS or n < 2 * nperseg
    assert math.isfinite(nperseg)

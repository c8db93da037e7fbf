"""labctl.isaqn_view against independent references, on a real recording of the simulated bench.

The session's 3 s recording of ``configs/isaqn_sim.toml`` (tests/recordings.py: the live job
on the simulated instruments, manual clock, the recorder the CLI uses) is replayed through the
live feed with the view attached (``replay_file(observe=...)``, ``recordings.replay_with_view``).
References: ``scipy.signal.welch`` of the very records the feed pushed (receiver spectrum and
phase PSD), the feed's own :class:`BandRecord` pilot phases and symbols (what the frames must
carry, with nothing lost or duplicated whichever thread takes the frames and when).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from recordings import IsaqnRecording, Replayed, replay_with_gap, replay_with_view
from scipy import signal

from labctl.isaqn_record import open_isaqn
from labctl.isaqn_view import (
    PSD_MIN_SEGMENTS,
    PSD_NPERSEG_RANGE,
    SPECTRUM_NPERSEG,
    SPECTRUM_RECORDS,
    IsaqnView,
    band_edges_hz,
    psd_nperseg,
)


@pytest.fixture(scope="module")
def replayed(isaqn_recording: IsaqnRecording) -> Replayed:
    return replay_with_view(isaqn_recording.path, every=3)


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


def test_spectrum_average_restarts_with_each_record_kind(isaqn_recording: IsaqnRecording) -> None:
    out = replay_with_view(isaqn_recording.path, every=1)
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


def test_frames_taken_by_another_thread_lose_no_sample(isaqn_recording: IsaqnRecording) -> None:
    out = replay_with_view(isaqn_recording.path, concurrent=True)
    assert len(out.frames) > 1
    for b in range(len(out.view.config.nodes)):
        assert np.array_equal(out.frame_cat("t_s", b), out.cat("pilot_t", b))
        assert np.array_equal(out.frame_cat("phase_rad", b), out.cat("pilot_phase", b))


def test_a_resynchronisation_is_marked_where_the_new_stream_starts(
    isaqn_recording: IsaqnRecording,
) -> None:
    out = replay_with_gap(isaqn_recording.path)
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


def test_window_applies_from_the_next_frame(isaqn_recording: IsaqnRecording) -> None:
    with open_isaqn(isaqn_recording.path) as cap:
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

"""The entanglement dashboard's view builder (labctl/entangle_view.py) on a real recording.

The session's short recording of the simulated entanglement bench (tests/recordings.py: manual
clock, 4 s of data, updates every 0.5 s, loops and interlocks running) is made with the
recorder the CLI uses, with a view attached to the live job's status sink; it is then replayed
through ``replay_file`` with a second view attached (``observe`` / ``sink``). The frames are
checked against independent references: the histograms the recorder wrote, the rates the
monitor computed for the status, and the drift predictor of ``models/`` run by hand over the
same phase-lock readings.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recordings import ENT_DATA_S, ENT_UPDATE_S, EntRecording

from labctl.bench_control import LoopRow
from labctl.entangle_record import open_entanglement
from labctl.entangle_view import EntanglementView, make_phase_predictor
from labctl.loop_runner import LoopStatus
from models.predictors import KalmanPredictor


# -- histograms --------------------------------------------------------------------------------
def test_replayed_histograms_equal_the_recorded_monitor_counts(ent_recording: EntRecording) -> None:
    assert (
        len(ent_recording.replay_frames)
        == len(ent_recording.statuses)
        >= ENT_DATA_S / ENT_UPDATE_S - 1
    )
    ent = ent_recording.config.entanglement
    assert ent is not None
    with open_entanglement(ent_recording.path) as cap:
        for k, frame in enumerate(ent_recording.replay_frames):
            recorded = cap.histograms(k)  # what the live monitor held at update k
            previous = cap.histograms(k - 1) if k else np.zeros_like(recorded)
            assert frame.update == k
            assert frame.time_s == ent_recording.statuses[k].time_s
            for p, h in enumerate(frame.pairs):
                assert h.counts_total.dtype == np.int64 and h.bin_centers_ps.dtype == np.float64
                assert np.array_equal(h.counts_total, recorded[p])
                assert np.array_equal(h.counts_interval, recorded[p] - previous[p])
                assert np.array_equal(h.counts_total, ent_recording.frames[k].pairs[p].counts_total)
                # the bins cover +-max_delay_ps around zero, bin_ps apart, centred
                assert np.allclose(np.diff(h.bin_centers_ps), ent.bin_ps)
                assert h.bin_centers_ps[0] - ent.bin_ps / 2 == pytest.approx(-ent.max_delay_ps)
                assert h.bin_centers_ps[-1] + ent.bin_ps / 2 == pytest.approx(ent.max_delay_ps)


def test_window_sits_on_the_status_delay_and_gives_its_rates(ent_recording: EntRecording) -> None:
    ent = ent_recording.config.entanglement
    assert ent is not None
    checked = 0
    for status, frame in zip(
        ent_recording.replay_statuses, ent_recording.replay_frames, strict=True
    ):
        for row, h in zip(status.pairs, frame.pairs, strict=True):
            assert (h.user_a, h.user_b, h.channel_a, h.channel_b) == (
                row.user_a,
                row.user_b,
                row.channel_a,
                row.channel_b,
            )
            if not math.isfinite(row.delay_ps):
                assert math.isnan(h.window_lo_ps) and h.accidental_windows_ps.shape == (0, 2)
                continue
            checked += 1
            assert h.delay_ps == row.delay_ps
            assert h.window_lo_ps <= row.delay_ps < h.window_hi_ps
            assert h.window_hi_ps - h.window_lo_ps == pytest.approx(ent.window_ps, abs=ent.bin_ps)
            assert h.side_peaks_ps == pytest.approx(
                (
                    row.delay_ps - ent.interferometer_delay_ps,
                    row.delay_ps + ent.interferometer_delay_ps,
                )
            )
            centers, counts = h.bin_centers_ps, h.counts_interval
            inside = (centers >= h.window_lo_ps) & (centers < h.window_hi_ps)
            rate = counts[inside].sum() / status.interval_s
            assert rate == pytest.approx(row.coincidences_hz, rel=1e-12)
            # accidentals: mean count of the off-peak windows, each as wide as the window
            acc = h.accidental_windows_ps
            assert acc.dtype == np.float64 and acc.shape[0] > 10
            assert np.allclose(acc[:, 1] - acc[:, 0], h.window_hi_ps - h.window_lo_ps)
            guard = ent.interferometer_delay_ps + ent.window_ps
            assert np.all(
                (acc[:, 1] < h.window_lo_ps - guard) | (acc[:, 0] > h.window_hi_ps + guard)
            )
            sums = [counts[(centers >= lo) & (centers < hi)].sum() for lo, hi in acc]
            mean_rate = float(np.mean(sums)) / status.interval_s
            assert mean_rate == pytest.approx(row.accidentals_hz, rel=1e-12)
    assert checked > 0


# -- loops and the drift forecast --------------------------------------------------------------
def _phase_rows(statuses, name: str) -> list[LoopRow]:
    return [next(r for r in s.loops if r.name == name) for s in statuses]


def test_loop_series_follow_the_statuses(ent_recording: EntRecording) -> None:
    last = ent_recording.frames[-1]
    names = [r.name for r in ent_recording.statuses[-1].loops]
    assert [s.name for s in last.loops] == names
    assert {"ring-temperature", "pump0-lock", "alice-phase"} <= set(names)
    times = np.array([s.time_s for s in ent_recording.statuses])
    for series in last.loops:
        rows = _phase_rows(ent_recording.statuses, series.name)
        assert np.array_equal(series.time_s, times)
        assert np.array_equal(series.setpoint, [r.status.setpoint for r in rows])
        assert np.array_equal(series.measurement, [r.status.measurement for r in rows])
        assert np.array_equal(series.output, [r.status.output for r in rows])
        assert series.state == rows[-1].status.state and series.units == rows[-1].units
        assert series.is_phase == (series.kind == "phase_lock")
        if not series.is_phase:
            assert series.free_phase_rad.size == series.forecast_rad.size == 0


def test_phase_forecasts_equal_the_kalman_predictor_run_by_hand(
    ent_recording: EntRecording,
) -> None:
    volts = {c.name: c.volts_per_2pi for c in ent_recording.config.loops if c.kind == "phase_lock"}
    last = ent_recording.frames[-1]
    phase = [s for s in last.loops if s.is_phase]
    assert {s.name for s in phase} == set(volts)
    assert last.predictor == "kalman" and last.horizon_ticks == 1 and last.tick_s == ENT_UPDATE_S
    for series in phase:
        rows = _phase_rows(ent_recording.statuses, series.name)
        assert all(r.status.state == "running" for r in rows)
        meas = np.array([r.status.measurement for r in rows])
        out = np.array([r.status.output for r in rows])
        # the setpoint step commanded since the loop's last tick (its feed-forward is in out)
        step = np.array(
            [r.status.effective_setpoint - r.status.measurement - r.status.error for r in rows]
        )
        step = (step + np.pi) % (2 * np.pi) - np.pi
        free = np.unwrap(meas - 2 * np.pi * out / volts[series.name] + step)
        # the scan moves the setpoint by 2 pi / 9 per step; the free phase only drifts
        assert np.max(np.abs(np.diff(free))) < 0.1
        np.testing.assert_allclose(series.free_phase_rad, free, rtol=0, atol=1e-12)
        kalman = KalmanPredictor((1,), tick_s=ENT_UPDATE_S)
        made = np.array([kalman.step(float(z), np.empty(0))[0] for z in free])
        expected = np.concatenate(([np.nan], made[:-1]))  # forecast made one update earlier
        np.testing.assert_allclose(series.forecast_rad, expected, rtol=0, atol=1e-12)
        err = free[1:] - made[:-1]
        assert series.forecast_count == err.size
        assert series.forecast_rms_rad == pytest.approx(math.sqrt(np.mean(err**2)), rel=1e-12)
        assert np.all(series.forecast_std_rad[1:] > 0)


def _loop_status(measurement: float, output: float, ticks: int) -> LoopStatus:
    nan = math.nan
    error = math.remainder(0.0 - measurement, 2 * math.pi)  # setpoint 0
    return LoopStatus(
        "p", "running", 0.0, 0.0, measurement, output, error, nan, nan, nan, False, ticks,
        0, 0, 0, 0, None, None, nan,
    )  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(st.floats(-3.0, 3.0), min_size=2, max_size=40),
    outputs=st.lists(st.floats(0.0, 2.0), min_size=40, max_size=40),
    horizon=st.integers(1, 4),
)
def test_persistence_forecast_is_the_free_phase_horizon_updates_earlier(
    ent_recording: EntRecording, steps: list[float], outputs: list[float], horizon: int
) -> None:
    """Any phase path: the unwrapped free phase differs from the raw one by whole turns and
    moves by less than pi per update; persistence forecasts it horizon updates late."""
    view = EntanglementView(ent_recording.config, predictor="persistence", horizon_ticks=horizon)
    k = view.rad_per_v["alice-phase"]
    truth = np.cumsum(steps)
    frame = None
    for i, phi in enumerate(truth):
        v = outputs[i]
        meas = math.remainder(phi + k * v, 2 * math.pi)  # the lock reads it wrapped
        row = LoopRow("alice-phase", "phase_lock", ("rad", "V"), _loop_status(meas, v, i))
        frame = view._loops(float(i), [row])
    assert frame is not None
    s = frame[0]
    raw = s.measurement - k * s.output
    turns = (s.free_phase_rad - raw) / (2 * math.pi)
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-9)
    assert np.all(np.abs(np.diff(s.free_phase_rad)) <= math.pi + 1e-9)
    np.testing.assert_array_equal(s.forecast_rad[horizon:], s.free_phase_rad[:-horizon])
    assert np.all(np.isnan(s.forecast_rad[:horizon]))


def test_a_stale_reading_enters_the_predictor_as_no_measurement(
    ent_recording: EntRecording,
) -> None:
    view = EntanglementView(ent_recording.config, predictor="persistence")
    rows = [
        LoopRow("bob-phase", "phase_lock", ("rad", "V"), _loop_status(0.5, 0.0, ticks))
        for ticks in (1, 2, 2, 3)  # the loop did not tick between the 2nd and 3rd status
    ]
    frame = None
    for i, row in enumerate(rows):
        frame = view._loops(float(i), [row])
    assert frame is not None
    assert np.isnan(frame[0].free_phase_rad[2]) and frame[0].forecast_count == 2


def test_predictors_needing_telemetry_are_refused(ent_recording: EntRecording) -> None:
    with pytest.raises(ValueError, match="telemetry"):
        EntanglementView(ent_recording.config, predictor="arx")
    with pytest.raises(ValueError, match="horizon_ticks"):
        EntanglementView(ent_recording.config, horizon_ticks=0)
    assert make_phase_predictor("kalman", 2, 0.5).horizons_ticks == (2,)
    no_ent = replace(ent_recording.config, entanglement=None)
    with pytest.raises(ValueError, match=r"\[entanglement\]"):
        EntanglementView(no_ent)

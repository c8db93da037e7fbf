"""Spectrum phase monitoring decisions and the pilot-only decision (dsp/spm.py).

Monte-Carlo on synthetic pilot streams: complex pilots A exp(j(theta + phi)) plus circular
Gaussian noise, theta a Wiener random walk plus a thermal ramp, phi a sinusoidal vibration.
Each stream is one long stream of independent decision windows (the noise is independent
from window to window), run through the streaming detector in one call.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.spm import (
    PilotTracking,
    PilotTrackingConfig,
    PilotTrackingState,
    SpmConfig,
    SpmDetector,
    SpmState,
    os_cfar_factor,
    pilot_tracking_update,
    spm_update,
)

FP = 6250.0  # pilot rate of the scaled bench: R = 50 kBd, P = 8
TRIALS = 300  # decision windows per Monte-Carlo stream
SETTINGS = settings(max_examples=25, deadline=None)


def _pilots(
    rng: np.random.Generator,
    n: int,
    snr_db: float,
    *,
    wiener_rad: float = 3e-3,
    ramp_rad_per_s: float = 2.0,
    beta_rad: float = 0.0,
    f_vib_hz: float = 37.0,
    fp: float = FP,
) -> np.ndarray:
    """Unit-amplitude pilots with drift, vibration and noise (pilot SNR = 1 / noise power)."""
    t = np.arange(n) / fp
    steps = rng.standard_normal(n, dtype=np.float32)  # float32 draws: twice as fast
    phase = 0.4 + ramp_rad_per_s * t + np.cumsum(wiener_rad * steps, dtype=np.float64)
    if beta_rad:
        phase += beta_rad * np.sin(2 * np.pi * f_vib_hz * t + 0.3)
    sigma = math.sqrt(10 ** (-snr_db / 10) / 2)
    noise = rng.standard_normal(2 * n, dtype=np.float32).view(np.complex64)
    return np.exp(1j * phase) + sigma * noise


def _run(z: np.ndarray, config: SpmConfig):
    decisions, _ = spm_update(z, SpmState(), config)
    return decisions


def _field(decisions, name: str) -> np.ndarray:
    return np.array([getattr(d, name) for d in decisions])


def _as_tuples(decisions) -> list[tuple]:
    return [dataclasses.astuple(d) for d in decisions]


# ---------------------------------------------------------------------------------------------
# Threshold


@pytest.mark.parametrize("n_cells", [2, 5, 16, 30])
@pytest.mark.parametrize("p_bin", [1e-2, 1e-5, 1e-9])
def test_os_cfar_factor_is_rohlings_closed_form_for_exponential_cells(n_cells, p_bin):
    alpha = os_cfar_factor(p_bin, 1.0, n_cells)
    r = n_cells // 2 + 1
    p = math.prod((n_cells - i) / (n_cells - i + alpha) for i in range(r))
    assert p == pytest.approx(p_bin, rel=1e-8)


def test_os_cfar_factor_matches_monte_carlo_for_averaged_cells():
    k, w, p_bin, n = 8, 6, 1e-3, 400_000
    alpha = os_cfar_factor(p_bin, k, w)
    rng = np.random.default_rng(2)
    x = rng.gamma(k, 1 / k, n)
    z = np.sort(rng.gamma(k, 1 / k, (n, w)), axis=1)[:, w // 2]
    observed = np.mean(x > alpha * z)
    assert abs(observed - p_bin) < 5 * math.sqrt(p_bin * (1 - p_bin) / n)
    # ignoring the floor's own scatter (the known-mean threshold gamma.isf over the typical
    # value of the order statistic) would multiply the false alarms
    g = scipy.stats.gamma(k, scale=1 / k)
    r = w // 2 + 1
    naive_alpha = g.isf(p_bin) / g.ppf(scipy.stats.beta(r, w - r + 1).median())
    assert naive_alpha < alpha
    assert np.mean(x > naive_alpha * z) > 3 * p_bin


def test_default_config_geometry_for_hann():
    cfg = SpmConfig(pilot_rate_hz=FP, false_alarm_probability=1e-3)
    df = FP / 2048
    assert (cfg.guard_bins, cfg.cell_spacing_bins, cfg.central_bins) == (3, 2, 3)
    assert cfg.bin_width_hz == pytest.approx(df)
    assert cfg.lowest_frequency_hz == pytest.approx(10 * df)  # k_c + d + 2 s
    assert cfg.highest_frequency_hz == pytest.approx(FP / 2)
    m = cfg.search_index.size
    assert m == (1024 - 10 + 1) + (1023 - 10 + 1)  # two-sided, Nyquist once
    assert 1 - (1 - cfg.bin_false_alarm_probability) ** m == pytest.approx(1e-3, rel=1e-9)
    thr = cfg.thresholds
    assert np.all(thr > 1)
    # fewer reference cells (next to the central band) need a higher factor
    k_abs = np.abs(np.fft.fftfreq(2048, 1 / 2048)[cfg.search_index])
    assert thr[k_abs == 10].min() > thr[k_abs > 40].max()
    assert cfg.derotation_coefficient == pytest.approx(1 - math.exp(-2 * math.pi * df / 2 / FP))


# ---------------------------------------------------------------------------------------------
# Monte-Carlo: false alarms and detection


@pytest.mark.parametrize(("snr_db", "wiener_rad"), [(10.0, 3e-3), (30.0, 1e-2)])
def test_quiet_node_false_alarms_at_most_one_percent(snr_db, wiener_rad):
    """p_fa = 1e-3; (30 dB, 1e-2 rad/pilot): the drift's 1/f^2 skirt is above the white floor
    up to ~300 Hz, which the local floor must absorb."""
    cfg = SpmConfig(pilot_rate_hz=FP, false_alarm_probability=1e-3)
    rng = np.random.default_rng(int(snr_db))
    z = _pilots(rng, TRIALS * cfg.window_pilots, snr_db, wiener_rad=wiener_rad, ramp_rad_per_s=3)
    dec = _run(z, cfg)
    assert len(dec) == TRIALS
    assert np.mean(_field(dec, "detected")) <= 0.01
    assert np.mean(_field(dec, "vibrating")) <= 0.03
    assert np.median(_field(dec, "castdown_db")) < 0.05
    # (the strong drift's skirt counts as noise: it lowers the estimate by ~0.6 dB at 30 dB)
    assert np.median(_field(dec, "pilot_snr_db")) == pytest.approx(snr_db, abs=1.0)
    # phase-only input (what the receiver's unwrapped pilot phase gives): same guarantee
    dec_phase = _run(np.exp(1j * np.unwrap(np.angle(z))), cfg)
    assert np.mean(_field(dec_phase, "detected")) <= 0.01


@pytest.mark.parametrize(("beta_rad", "snr_db"), [(0.5, 10.0), (0.5, 0.0), (30.0, 10.0)])
def test_vibrating_node_detected_with_its_frequency_and_castdown(beta_rad, snr_db):
    cfg = SpmConfig(pilot_rate_hz=FP, false_alarm_probability=1e-3)
    rng = np.random.default_rng(100 + int(beta_rad))
    n = TRIALS * cfg.window_pilots
    z = _pilots(rng, n, snr_db, beta_rad=beta_rad, f_vib_hz=37.0)
    dec = _run(z, cfg)
    assert np.mean(_field(dec, "detected")) >= 0.99
    assert np.mean(_field(dec, "line_detected")) >= 0.99
    assert np.mean(_field(dec, "vibrating")) >= 0.99
    f_est = _field(dec, "vibration_frequency_hz")
    assert np.mean(np.abs(f_est - 37.0) <= cfg.bin_width_hz) >= 0.99
    j0_db = -10 * math.log10(scipy.special.j0(beta_rad) ** 2)  # 0.55 dB, 21.3 dB
    castdown = np.median(_field(dec, "castdown_db"))
    if beta_rad < 1:
        assert castdown == pytest.approx(j0_db, abs=0.05)
        assert np.median(_field(dec, "peak_frequency_hz")) == pytest.approx(37.0, abs=3.1)
    else:
        assert castdown > 15.0
        assert np.all(_field(dec, "castdown_detected"))
        # the strongest sideband lies inside Carson's band, near |k| ~ beta
        assert np.all(_field(dec, "peak_frequency_hz") <= (beta_rad + 2) * 37.0)


def test_false_alarm_rate_tracks_the_configured_probability():
    base = SpmConfig(pilot_rate_hz=FP)
    n_windows = 600
    rng = np.random.default_rng(77)
    z = _pilots(rng, n_windows * base.window_pilots, 15.0, wiener_rad=3e-3, ramp_rad_per_s=1.0)
    scores = {}
    for p_fa in (0.05, 0.2):
        cfg = SpmConfig(pilot_rate_hz=FP, false_alarm_probability=p_fa, castdown_threshold_db=None)
        dec = _run(z, cfg)
        hits = int(np.sum(_field(dec, "detected")))
        assert scipy.stats.binomtest(hits, n_windows, p_fa).pvalue > 1e-3, (p_fa, hits)
        scores[p_fa] = _field(dec, "line_score")
    # a lower false-alarm probability raises every threshold: scores can only drop
    assert np.all(scores[0.05] <= scores[0.2])


# ---------------------------------------------------------------------------------------------
# Drift handling, lowest frequency, hysteresis, streaming


def test_derotation_keeps_a_drifting_quiet_node_quiet():
    """A thermal ramp of 75 rad/s moves the undrerotated line to 12 Hz, out of the central
    band: castdown. Derotated by its smoothed phasor, the line stays at DC."""
    cfg = SpmConfig(pilot_rate_hz=FP)
    raw = SpmConfig(pilot_rate_hz=FP, derotation_bandwidth_hz=0.0)
    rng = np.random.default_rng(8)
    z = _pilots(rng, 40 * cfg.window_pilots, 20.0, ramp_rad_per_s=2 * np.pi * 12.0)
    dec = _run(z, cfg)
    assert not np.any(_field(dec, "detected"))
    assert np.max(_field(dec, "castdown_db")) < 0.1
    dec_raw = _run(z, raw)
    assert np.all(_field(dec_raw, "castdown_db") > 3.0)
    assert np.all(_field(dec_raw, "detected"))


def test_lowest_detectable_frequency():
    cfg = SpmConfig(pilot_rate_hz=FP)
    rng = np.random.default_rng(9)
    n = 20 * cfg.window_pilots
    f_low = 1.1 * cfg.lowest_frequency_hz
    dec = _run(_pilots(rng, n, 10.0, beta_rad=0.5, f_vib_hz=f_low), cfg)
    assert np.all(_field(dec, "line_detected"))
    assert np.all(np.abs(_field(dec, "vibration_frequency_hz") - f_low) <= cfg.bin_width_hz)
    # inside the central band (here 2 Hz < 3 bins = 9.2 Hz) the detector is blind by design
    dec = _run(_pilots(rng, n, 10.0, beta_rad=0.5, f_vib_hz=2.0), cfg)
    assert not np.any(_field(dec, "detected"))


def _windowed_stream(rng, cfg: SpmConfig, pattern: list[bool], beta_rad: float, f_hz: float):
    """One window per entry of ``pattern``; vibration in the windows marked True."""
    n_w = cfg.window_pilots
    n = n_w * len(pattern)
    t = np.arange(n) / cfg.pilot_rate_hz
    on = np.repeat(np.array(pattern, dtype=float), n_w)
    phase = 1.0 + on * beta_rad * np.sin(2 * np.pi * f_hz * t)
    noise = 0.1 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return np.exp(1j * phase) + noise


def test_vibrating_flag_hysteresis():
    cfg = SpmConfig(
        pilot_rate_hz=FP,
        nperseg=256,
        n_segments=4,
        floor_half_width_bins=16,
        false_alarm_probability=1e-6,
        on_count=2,
        off_count=3,
    )
    pattern = [False, False, True, True, True, True, False, False, False, False, False]
    z = _windowed_stream(np.random.default_rng(11), cfg, pattern, 1.0, 600.0)
    dec = _run(z, cfg)
    assert list(_field(dec, "detected")) == pattern
    expected = [False, False, False, True, True, True, True, True, False, False, False]
    assert list(_field(dec, "vibrating")) == expected
    assert [d.stop_pilot for d in dec] == [(i + 1) * cfg.window_pilots for i in range(11)]


@SETTINGS
@given(
    cuts=st.lists(st.integers(0, 6000), max_size=7),
    seed=st.integers(0, 2**32 - 1),
    hop=st.sampled_from([1, 2, 4]),
)
def test_any_split_of_the_stream_gives_the_same_decisions(cuts, seed, hop):
    cfg = SpmConfig(
        pilot_rate_hz=FP,
        nperseg=256,
        n_segments=4,
        hop_segments=hop,
        floor_half_width_bins=16,
        on_count=2,
        off_count=2,
    )
    rng = np.random.default_rng(seed)
    pattern = [False, True, True, False, False]
    z = _windowed_stream(rng, cfg, pattern, 1.5, 400.0)[: cfg.window_pilots * 5 - 37]
    whole, whole_state = spm_update(z, SpmState(), cfg)
    state, parts = SpmState(), []
    for piece in np.split(z, sorted(c % (z.size + 1) for c in cuts)):
        decisions, state = spm_update(piece, state, cfg)
        parts.extend(decisions)
    np.testing.assert_equal(_as_tuples(parts), _as_tuples(whole))  # bitwise, NaN == NaN
    assert state.n_pilots == whole_state.n_pilots == z.size
    np.testing.assert_array_equal(state.tail, whole_state.tail)
    assert len(whole) == (5 * 4 - 1 - 4) // hop + 1


def test_detector_runs_every_band():
    cfg = SpmConfig(pilot_rate_hz=FP, nperseg=512, n_segments=4, floor_half_width_bins=16)
    rng = np.random.default_rng(12)
    n = 3 * cfg.window_pilots
    bands = [
        _pilots(rng, n, 15.0),
        _pilots(rng, n, 15.0, beta_rad=0.5, f_vib_hz=300.0),
        _pilots(rng, n, 15.0, beta_rad=30.0, f_vib_hz=150.0),
    ]
    det = SpmDetector(cfg, 3)
    out = {}
    for start in range(0, n, 5000):  # the stream in blocks
        for band, decisions in det.update([b[start : start + 5000] for b in bands]).items():
            out.setdefault(band, []).extend(decisions)
    assert det.vibrating == [False, True, True]
    for band, block in enumerate(bands):
        np.testing.assert_equal(_as_tuples(out[band]), _as_tuples(_run(block, cfg)))
    assert out[1][-1].vibration_frequency_hz == pytest.approx(300.0, abs=cfg.bin_width_hz)
    assert out[2][-1].vibration_frequency_hz == pytest.approx(150.0, abs=cfg.bin_width_hz)


# ---------------------------------------------------------------------------------------------
# Pilot-only decision


def _tdm_phase(rng, increments: np.ndarray, snr_db: float = 20.0) -> np.ndarray:
    """Receiver's view: atan2 of noisy pilots, unwrapped (np.unwrap), from a true phase."""
    true = np.concatenate([[0.3], 0.3 + np.cumsum(increments)])
    sigma = math.sqrt(10 ** (-snr_db / 10) / 2)
    z = np.exp(1j * true) + sigma * (
        rng.standard_normal(true.size) + 1j * rng.standard_normal(true.size)
    )
    return np.unwrap(np.angle(z))


@pytest.mark.parametrize(
    ("slope_over_pi_fp", "expect_pilot_only"),
    [(0.2, False), (0.4, False), (0.6, True), (0.75, True), (0.9, True), (1.3, True)],
)
def test_pilot_only_for_phase_slopes_above_half_the_tracking_limit(
    slope_over_pi_fp, expect_pilot_only
):
    """A ramp of slope s pi f_p (s pi per pilot); 1.3 pi per pilot aliases to -0.7 pi."""
    cfg = PilotTrackingConfig(pilot_rate_hz=FP)
    rng = np.random.default_rng(int(100 * slope_over_pi_fp))
    phase = _tdm_phase(rng, np.full(8 * cfg.window_pilots, slope_over_pi_fp * math.pi))
    dec, _ = pilot_tracking_update(phase, PilotTrackingState(), cfg)
    assert len(dec) == 8
    assert all(d.pilot_only == expect_pilot_only for d in dec)
    risks = np.array([d.risk for d in dec])
    if expect_pilot_only:
        assert np.all(risks > 0.9)
    else:
        assert np.all(risks < cfg.enter_fraction)
        assert np.all([d.slope_ratio < 0.6 for d in dec])


@pytest.mark.parametrize("beta_rad", [2.0, 3.5, 6.0])
def test_sinusoidal_vibration_risk_is_the_arccos_closed_form(beta_rad):
    """Increments of beta sin(w m) are 2 beta sin(w/2) cos(w (m - 1/2)): the fraction above
    pi/2 is (2/pi) arccos(pi / (2 d)), d = 2 beta sin(w/2) (0 when d <= pi/2)."""
    cfg = PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=4096)
    w = 2 * math.pi * 487.0 / FP
    m = np.arange(4 * cfg.window_pilots + 1)
    phase = beta_rad * np.sin(w * m)
    dec, _ = pilot_tracking_update(phase, PilotTrackingState(), cfg)
    d = 2 * beta_rad * math.sin(w / 2)
    expected = (2 / math.pi) * math.acos(min(1.0, (math.pi / 2) / d))
    for decision in dec:
        assert decision.risk == pytest.approx(expected, abs=0.01)
        assert decision.max_increment_rad == pytest.approx(d, rel=1e-3)
        assert decision.pilot_only == (d > math.pi / 2)


def test_pilot_only_hysteresis():
    cfg = PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=500, exit_windows=3)
    fast, slow = 0.7 * math.pi, 0.1 * math.pi
    plan = [slow, fast, fast, slow, slow, slow, slow, fast, slow, fast, slow, slow, slow]
    inc = np.repeat(plan, cfg.window_pilots)
    dec, state = pilot_tracking_update(
        _tdm_phase(np.random.default_rng(3), inc), PilotTrackingState(), cfg
    )
    got = [d.pilot_only for d in dec]
    expected = [False, True, True, True, True, False, False, True, True, True, True, True, False]
    assert got == expected
    assert state.pilot_only is False
    assert [d.start_pilot for d in dec][:2] == [1, 501]  # increment i ends at pilot i


def test_noise_only_risk_is_the_gaussian_tail():
    """Phase noise N(0, s^2) per pilot: increments N(0, 2 s^2), risk 2 Q(pi / (2 s sqrt 2))."""
    cfg = PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=1000)
    s = 0.6
    n = 100 * cfg.window_pilots
    phase = s * np.random.default_rng(4).standard_normal(n + 1)
    dec, _ = pilot_tracking_update(phase, PilotTrackingState(), cfg)
    expected = 2 * scipy.stats.norm.sf(math.pi / 2 / (s * math.sqrt(2)))
    mean_risk = np.mean([d.risk for d in dec])
    # adjacent increments share a sample (correlation -1/2): allow 2x the iid variance
    assert abs(mean_risk - expected) < 5 * math.sqrt(2 * expected * (1 - expected) / n)
    assert all(d.pilot_only for d in dec)  # 6 % risky increments: cannot track


@SETTINGS
@given(cuts=st.lists(st.integers(0, 3000), max_size=8), seed=st.integers(0, 2**32 - 1))
def test_tracking_on_any_split_gives_the_same_decisions(cuts, seed):
    cfg = PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=200, exit_windows=2)
    rng = np.random.default_rng(seed)
    plan = rng.choice([0.1 * math.pi, 0.8 * math.pi], size=12)
    phase = _tdm_phase(rng, np.repeat(plan, 200))[:-13]
    whole, whole_state = pilot_tracking_update(phase, PilotTrackingState(), cfg)
    state, parts = PilotTrackingState(), []
    for piece in np.split(phase, sorted(c % (phase.size + 1) for c in cuts)):
        decisions, state = pilot_tracking_update(piece, state, cfg)
        parts.extend(decisions)
    assert _as_tuples(parts) == _as_tuples(whole)
    assert state.pilot_only == whole_state.pilot_only
    np.testing.assert_array_equal(state.pending, whole_state.pending)


def test_pilot_tracking_runs_every_band():
    cfg = PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=256)
    rng = np.random.default_rng(5)
    phases = {0: _tdm_phase(rng, np.full(1024, 0.05)), 1: _tdm_phase(rng, np.full(1024, 2.0))}
    tracking = PilotTracking(cfg, 2)
    out = tracking.update(phases)
    assert tracking.pilot_only == [False, True]
    assert len(out[0]) == len(out[1]) == 4


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_names_the_argument():
    cases = [
        (lambda: SpmConfig(pilot_rate_hz=0.0), "pilot_rate_hz"),
        (lambda: SpmConfig(pilot_rate_hz=FP, nperseg=8), "nperseg"),
        (lambda: SpmConfig(pilot_rate_hz=FP, n_segments=0), "n_segments"),
        (lambda: SpmConfig(pilot_rate_hz=FP, hop_segments=9), "hop_segments"),
        (lambda: SpmConfig(pilot_rate_hz=FP, false_alarm_probability=1.0), "false_alarm"),
        (lambda: SpmConfig(pilot_rate_hz=FP, floor_half_width_bins=4), "floor_half_width"),
        (lambda: SpmConfig(pilot_rate_hz=FP, derotation_bandwidth_hz=-1.0), "derotation"),
        (lambda: SpmConfig(pilot_rate_hz=FP, max_frequency_hz=10.0), "nperseg"),
        (lambda: SpmConfig(pilot_rate_hz=FP, castdown_threshold_db=0.0), "castdown"),
        (lambda: SpmConfig(pilot_rate_hz=FP, window="no-such-window"), "window"),
        (lambda: os_cfar_factor(0.0, 1.0, 4), "p_bin"),
        (lambda: os_cfar_factor(0.1, 1.0, 4, rank=5), "rank"),
        (lambda: PilotTrackingConfig(pilot_rate_hz=FP, exit_fraction=0.5), "exit_fraction"),
        (lambda: PilotTrackingConfig(pilot_rate_hz=FP, increment_threshold_rad=4), "increment"),
        (lambda: PilotTrackingConfig(pilot_rate_hz=FP, window_pilots=0), "window_pilots"),
        (lambda: SpmDetector(SpmConfig(pilot_rate_hz=FP), 0), "n_bands"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    cfg = SpmConfig(pilot_rate_hz=FP, nperseg=256, n_segments=2, floor_half_width_bins=16)
    with pytest.raises(ValueError, match="pilots"):
        spm_update(np.ones((2, 4), complex), SpmState(), cfg)
    with pytest.raises(ValueError, match="pilots"):
        spm_update(np.array([1.0, np.nan]), SpmState(), cfg)
    with pytest.raises(ValueError, match="pilots"):
        SpmDetector(cfg, 2).update({5: np.ones(4, complex)})
    tcfg = PilotTrackingConfig(pilot_rate_hz=FP)
    with pytest.raises(ValueError, match="phase_rad"):
        pilot_tracking_update(np.ones(4, complex), PilotTrackingState(), tcfg)

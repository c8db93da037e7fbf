"""Clock offset and drift between free-running taggers (dsp/clocksync.py)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.clocksync import (
    ClockModel,
    TrackerConfig,
    TrackerState,
    coarse_clock,
    coarse_offset,
    estimate_clock,
    fit_clock,
    merge_tags,
    track_process,
)
from dsp.coincidence import CoincidenceConfig, coincidence_histogram, window_counts

PS = 1_000_000_000_000  # 1 s in ps
DELAY_PS = 1_500.0
JITTER_PS = 50.0


def two_taggers(
    rng,
    *,
    duration_s,
    offset_ps,
    drift_ppm,
    drift_rate_ppm_s=0.0,
    pair_hz=20e3,
    noise_hz=150e3,
):
    """Tags of two free-running taggers sharing photon pairs.

    A's clock is the reference; a pair at A time t reaches B's detector DELAY_PS + jitter
    later, and B's clock reads offset + t' + integral of the drift, drift(t) = drift_ppm +
    drift_rate_ppm_s * t (so t_b - t_a of a pair is offset + d t + rate t^2 / 2 + delay).
    Returns (t_a, t_b, pair times on A's clock).
    """
    dur = duration_s * PS
    n_pairs = rng.poisson(pair_hz * duration_s)
    pairs = np.sort(rng.uniform(0, dur, n_pairs))
    ta = np.sort(np.concatenate([pairs, rng.uniform(0, dur, rng.poisson(noise_hz * duration_s))]))
    arrive = np.concatenate(
        [
            pairs + DELAY_PS + rng.normal(0.0, JITTER_PS, n_pairs),
            rng.uniform(0, dur, rng.poisson(noise_hz * duration_s)),
        ]
    )
    s = arrive / PS
    clock_b = (
        offset_ps + arrive + (drift_ppm * 1e-6 * s + 0.5 * drift_rate_ppm_s * 1e-6 * s * s) * PS
    )
    return np.floor(ta).astype(np.int64), np.sort(np.floor(clock_b).astype(np.int64)), pairs


def true_offset_ps(t_a_ps, *, offset_ps, drift_ppm, drift_rate_ppm_s=0.0):
    """t_b - t_a of a pair emitted at A time t_a (mean over the jitter)."""
    s = (np.asarray(t_a_ps, float) + DELAY_PS) / PS
    return offset_ps + DELAY_PS + (drift_ppm * s + 0.5 * drift_rate_ppm_s * s * s) * 1e-6 * PS


# ---------------------------------------------------------------------------------------------
# Model and merge


def test_clock_model_maps_both_ways_and_keeps_order():
    model = ClockModel(offset_ps=3.5e9, drift_ppm=4.2, ref_ps=10**12)
    d = 4.2e-6
    t_a = np.sort(np.random.default_rng(0).integers(-(10**13), 10**13, 2_000))
    # B's clock of an A time: t_b = ref + (1 + d)(t_a + offset - ref) maps back onto t_a
    t_b = np.rint(model.ref_ps + (1 + d) * (t_a + model.offset_ps - model.ref_ps)).astype(np.int64)
    assert np.max(np.abs(model.to_a_ps(t_b) - t_a)) <= 1
    assert np.max(np.abs(model.to_b_ps(t_a) - t_b)) <= 1
    assert np.all(np.diff(model.to_a_ps(np.arange(0, 10**9, 997))) >= 0)
    # the offset grows by d / (1 + d) per unit of B time
    assert model.offset_at_ps(model.ref_ps + 10**12) - model.offset_ps == pytest.approx(
        1e12 * d / (1 + d), rel=1e-9
    )
    again = ClockModel.from_slope(model.offset_ps, model.slope, model.ref_ps)
    assert again.drift_ppm == pytest.approx(4.2, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.integers(-50, 50), max_size=40),
    b=st.lists(st.integers(-50, 50), max_size=40),
)
def test_merge_tags_is_a_stable_sort(a, b):
    ta, tb = np.sort(np.array(a, np.int64)), np.sort(np.array(b, np.int64))
    t, c = merge_tags(ta, np.zeros(ta.size, np.uint8), tb, np.ones(tb.size, np.uint8))
    ref = sorted(itertools.chain(((x, 0) for x in ta), ((x, 1) for x in tb)))
    assert list(zip(t.tolist(), c.tolist(), strict=True)) == ref


def test_bad_input_raises_value_error_naming_the_argument():
    with pytest.raises(ValueError, match=r"t2_ps: not sorted at index 1"):
        merge_tags([1, 2], [0, 0], [5, 3], [1, 1])
    with pytest.raises(ValueError, match=r"channel1: expected 2 channels"):
        merge_tags([1, 2], [0], [3], [1])
    with pytest.raises(ValueError, match=r"t_a_ps: expected int64 picoseconds"):
        coarse_offset(np.array([1.5, 2.5]), np.array([1, 2]), max_offset_ps=10, bin_ps=1)
    with pytest.raises(ValueError, match=r"bin_ps: expected > 0"):
        coarse_offset([1, 2], [1, 2], max_offset_ps=10, bin_ps=0)
    with pytest.raises(ValueError, match=r"bin_ps: .* exceed"):
        coarse_offset([0, 10**12], [0, 10**12], max_offset_ps=10**12, bin_ps=1)
    with pytest.raises(ValueError, match=r"frame_ps: .* at least 4 x max_window_ps"):
        TrackerConfig(frame_ps=1_000, max_window_ps=1_000, min_window_ps=10)
    with pytest.raises(ValueError, match=r"max_window_ps: 5 is below min_window_ps"):
        TrackerConfig(max_window_ps=5, min_window_ps=10)
    cfg = TrackerConfig()
    state = TrackerState.initial(ClockModel(0.0), cfg)
    _, state = track_process([10, 20], [5, 6], state, cfg)
    with pytest.raises(ValueError, match=r"t_a_ps: batch starts at 15 ps, before A's last"):
        track_process([15], [], state, cfg)
    with pytest.raises(ValueError, match=r"t_b_ps: not sorted at index 1"):
        track_process([], [9, 8], state, cfg)
    with pytest.raises(ValueError, match=r"channel_b: expected 1 channels"):
        track_process([], [9], state, cfg, channel_b=[1, 2])


# ---------------------------------------------------------------------------------------------
# Coarse search and batch estimate


@pytest.mark.parametrize("offset_ps", [37_654_321.0, -81_234_567.0])
def test_coarse_offset_within_a_bin(offset_ps):
    rng = np.random.default_rng(1)
    ta, tb, _ = two_taggers(rng, duration_s=0.1, offset_ps=offset_ps, drift_ppm=0.0)
    res = coarse_offset(ta, tb, max_offset_ps=200_000_000, bin_ps=100_000)
    assert abs(res.offset_ps - (offset_ps + DELAY_PS)) <= res.bin_ps
    assert res.significance > 10


@pytest.mark.parametrize(("offset_ps", "drift_ppm"), [(12_345_678.0, 3.0), (-4_321_000.0, -1.7)])
def test_estimate_recovers_drift_within_one_percent(offset_ps, drift_ppm):
    rng = np.random.default_rng(7)
    ta, tb, pairs = two_taggers(rng, duration_s=1.0, offset_ps=offset_ps, drift_ppm=drift_ppm)
    est = estimate_clock(ta, tb, max_offset_ps=100_000_000, max_drift_ppm=10.0)
    assert est.model.drift_ppm == pytest.approx(drift_ppm, rel=0.01)
    assert est.tracker_drift_ppm == pytest.approx(drift_ppm, rel=0.01)
    # offset at the model's reference (B time) against the generating truth, to a few ps
    t_ref_a = est.model.ref_ps - offset_ps  # A time of the reference, to ~ppm x 1 s
    truth = true_offset_ps(t_ref_a, offset_ps=offset_ps, drift_ppm=drift_ppm)
    assert abs(est.model.offset_ps - truth) < 20.0
    assert est.residual_rms_ps == pytest.approx(JITTER_PS, rel=0.2)
    assert est.n_pairs > 0.8 * pairs.size
    # the fitted model re-matches as many pairs with a narrow window
    again, n, _ = fit_clock(ta, tb, est.model, half_window_ps=300.0)
    assert n >= est.n_pairs * 0.99 and again.drift_ppm == pytest.approx(drift_ppm, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Tracking


def _coincidences(ta, tb_in_a, window_ps=600):
    """Counts in +-window/2 around the pair delay, after merging A and mapped B."""
    t, ch = merge_tags(ta, np.zeros(ta.size, np.uint8), tb_in_a, np.ones(tb_in_a.size, np.uint8))
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=20, half_range_ps=5_000)
    counts = coincidence_histogram(t, ch, cfg)
    return window_counts(counts, (0, 1), 0.0, window_ps).counts


def test_tracked_coincidences_survive_a_drift_of_a_few_ppm():
    """3 ppm over 1 s moves B by 3 us; after acquisition the tracker keeps every pair."""
    rng = np.random.default_rng(3)
    offset, drift = 2_468_000.0, 3.0
    ta, tb, pairs = two_taggers(rng, duration_s=1.0, offset_ps=offset, drift_ppm=drift)
    coarse = coarse_offset(ta, tb, max_offset_ps=10_000_000, bin_ps=1_000_000, duration_ps=PS // 20)
    cfg = TrackerConfig()
    state = TrackerState.initial(ClockModel(coarse.offset_ps, 0.0, int(tb[0])), cfg)
    res, state = track_process(ta, tb, state, cfg, final=True)
    assert state.drift_ppm == pytest.approx(drift, rel=0.01)
    assert all(f.locked for f in res.frames)
    assert np.all(np.diff(res.t_b_in_a_ps) >= 0) and res.t_b_in_a_ps.size == tb.size
    # the optical delay is part of the fitted offset, so pairs sit at 0 on A's clock
    second_half = ta >= PS // 2
    kept = _coincidences(ta[second_half], res.t_b_in_a_ps[res.t_b_in_a_ps >= PS // 2])
    assert kept >= 0.97 * np.count_nonzero(pairs >= PS // 2)
    # without the drift (offset only) the same window keeps almost nothing
    naive = ClockModel(coarse.offset_ps, 0.0, int(tb[0])).to_a_ps(tb)
    lost = _coincidences(ta[second_half], naive[naive >= PS // 2])
    assert lost < 0.05 * kept
    # settled frames (last 40 %): sub-10 ps offset error and a peak as wide as the jitter
    late = [f for f in res.frames if f.start_b_ps > tb[0] + 6 * PS // 10]
    assert max(abs(f.error_ps) for f in late) < 10.0
    assert np.median([f.width_ps for f in late]) == pytest.approx(JITTER_PS, rel=0.25)


def test_tracker_follows_a_changing_drift():
    """Drift ramping from 2 to 2.2 ppm in 2 s (temperature): lock kept, pairs kept, and the
    quadratic offset model reports the drift at the end, not a lagging average."""
    rng = np.random.default_rng(4)
    ta, tb, pairs = two_taggers(
        rng, duration_s=2.0, offset_ps=-1_000_000.0, drift_ppm=2.0, drift_rate_ppm_s=0.1
    )
    est = estimate_clock(ta[ta < PS // 5], tb[tb < PS // 5], max_offset_ps=10_000_000)
    cfg = TrackerConfig(memory_ps=PS // 4, model_order=2)
    state = TrackerState.initial(est.model, cfg, start_b_ps=int(tb[0]))
    res, state = track_process(ta, tb, state, cfg, final=True)
    assert all(f.locked for f in res.frames)
    t_end_s = (tb[-1] + 1_000_000) / PS  # B time of the last tag on A's clock
    assert state.drift_ppm == pytest.approx(2.0 + 0.1 * t_end_s, rel=0.01)
    after = ta >= 4 * PS // 10  # after acquisition
    kept = _coincidences(ta[after], res.t_b_in_a_ps[res.t_b_in_a_ps >= 4 * PS // 10])
    assert kept >= 0.97 * np.count_nonzero(pairs >= 4 * PS // 10)
    # a constant-drift model lags behind the ramp (its slope is the drift ~2 tau ago)
    cfg1 = TrackerConfig(memory_ps=PS // 4, model_order=1)
    _, state1 = track_process(
        ta, tb, TrackerState.initial(est.model, cfg1, start_b_ps=int(tb[0])), cfg1, final=True
    )
    assert abs(state1.drift_ppm - (2.0 + 0.1 * t_end_s)) > 3 * abs(
        state.drift_ppm - (2.0 + 0.1 * t_end_s)
    )


def _track_in_batches(ta, tb, cuts_a, cuts_b, cfg, model):
    ba = sorted({0, ta.size, *[c % (ta.size + 1) for c in cuts_a]})
    bb = sorted({0, tb.size, *[c % (tb.size + 1) for c in cuts_b]})
    pa = list(itertools.pairwise(ba))
    pb = list(itertools.pairwise(bb))
    n = max(len(pa), len(pb))
    pa += [(ta.size, ta.size)] * (n - len(pa))
    pb += [(tb.size, tb.size)] * (n - len(pb))
    state = TrackerState.initial(model, cfg)
    frames, mapped = [], []
    for (sa, ea), (sb, eb) in zip(pa, pb, strict=True):
        res, state = track_process(ta[sa:ea], tb[sb:eb], state, cfg)
        frames += res.frames
        mapped.append(res.t_b_in_a_ps)
    res, state = track_process([], [], state, cfg, final=True)
    return frames + list(res.frames), np.concatenate([*mapped, res.t_b_in_a_ps]), state


@pytest.fixture(scope="module")
def short_pair():
    rng = np.random.default_rng(9)
    ta, tb, _ = two_taggers(
        rng, duration_s=0.3, offset_ps=5_000_000.0, drift_ppm=-2.5, pair_hz=10e3, noise_hz=50e3
    )
    return ta, tb


@settings(max_examples=8, deadline=None)
@given(
    cuts_a=st.lists(st.integers(0, 30_000), max_size=5),
    cuts_b=st.lists(st.integers(0, 30_000), max_size=5),
)
def test_tracking_is_identical_for_any_cut_of_the_two_streams(short_pair, cuts_a, cuts_b):
    ta, tb = short_pair
    cfg = TrackerConfig(frame_ps=PS // 40)
    model = ClockModel(5_000_000.0 + DELAY_PS + 3_000.0, 0.0, int(tb[0]))  # 3 ns off
    whole_frames, whole_mapped, whole_state = _track_in_batches(ta, tb, [], [], cfg, model)
    frames, mapped, state = _track_in_batches(ta, tb, cuts_a, cuts_b, cfg, model)
    assert len(frames) == len(whole_frames) > 5
    np.testing.assert_array_equal(  # NaN-aware: unlocked frames report NaN errors
        np.array([dataclasses.astuple(f) for f in frames], float),
        np.array([dataclasses.astuple(f) for f in whole_frames], float),
    )
    np.testing.assert_array_equal(mapped, whole_mapped)
    assert state.drift_ppm == whole_state.drift_ppm
    assert whole_frames[-1].locked and whole_state.drift_ppm == pytest.approx(-2.5, rel=0.01)


def test_sync_channels_restrict_the_tracker_to_one_correlated_b_channel():
    """B's channel 2 carries the same pairs as channel 1 but 700 ps later (another fibre): fed
    together the residuals hold two peaks; with ``sync_channels_b=[1]`` the tracker locks on
    channel 1 alone and still maps channel 2's tags (its pairs land 700 ps after A's)."""
    rng = np.random.default_rng(11)
    offset, drift = 1_234_000.0, 2.0
    ta, tb1, pairs = two_taggers(rng, duration_s=1.0, offset_ps=offset, drift_ppm=drift)
    s = (pairs + DELAY_PS + 700.0) / PS
    tb2_true = pairs + DELAY_PS + 700.0 + rng.normal(0.0, JITTER_PS, pairs.size)
    tb2 = np.sort(np.floor(offset + tb2_true + drift * 1e-6 * s * PS).astype(np.int64))
    tb = np.concatenate([tb1, tb2])
    ch = np.concatenate([np.ones(tb1.size, np.uint8), np.full(tb2.size, 2, np.uint8)])
    order = np.argsort(tb, kind="stable")
    tb, ch = tb[order], ch[order]
    coarse = coarse_offset(
        ta, tb1, max_offset_ps=10_000_000, bin_ps=1_000_000, duration_ps=PS // 20
    )
    cfg = TrackerConfig(min_window_ps=300)
    state = TrackerState.initial(ClockModel(coarse.offset_ps, 0.0, int(tb[0])), cfg)
    res, state = track_process(ta, tb, state, cfg, channel_b=ch, sync_channels_b=[1], final=True)
    assert state.drift_ppm == pytest.approx(drift, rel=0.01)
    assert res.t_b_in_a_ps.size == tb.size
    late = [f for f in res.frames if f.start_b_ps > tb[0] + 6 * PS // 10]
    assert late and max(abs(f.error_ps) for f in late) < 15.0
    assert np.median([f.width_ps for f in late]) == pytest.approx(JITTER_PS, rel=0.25)
    mapped2 = res.t_b_in_a_ps[res.channel_b == 2]
    mapped2 = mapped2[mapped2 > 6 * PS // 10]
    late_a = ta[ta > 6 * PS // 10]
    k = np.clip(np.searchsorted(late_a, mapped2 - 700), 1, late_a.size - 1)
    nearest = np.minimum(
        np.abs(late_a[k] - (mapped2 - 700)), np.abs(late_a[k - 1] - (mapped2 - 700))
    )
    assert np.count_nonzero(nearest < 4 * JITTER_PS) >= 0.9 * np.count_nonzero(pairs > 6 * PS // 10)
    with pytest.raises(ValueError, match="sync_channels_b"):
        track_process(ta, tb, state, cfg, channel_b=ch, sync_channels_b=[300])


def test_coarse_clock_finds_offset_and_drift_where_the_plain_search_drowns():
    """8 ppm, 5 kHz of pairs in 400 kHz of singles per tagger: over 0.1 s the plain search's
    peak is smeared over 0.8 us and barely above the noise; the drift grid recovers offset
    (to a bin) and drift (to half a grid step) with a clear peak."""
    rng = np.random.default_rng(5)
    offset, drift = 23_456_789_000.0, 8.0
    ta, tb, _ = two_taggers(
        rng, duration_s=0.3, offset_ps=offset, drift_ppm=drift, pair_hz=5e3, noise_hz=400e3
    )
    dur, start = PS // 10, int(tb[0]) + PS // 10  # A must cover the whole +-R search
    found = coarse_clock(
        ta, tb, max_offset_ps=50_000_000_000, max_drift_ppm=10.0, duration_ps=dur, start_b_ps=start
    )
    truth = true_offset_ps(found.search.start_b_ps - offset, offset_ps=offset, drift_ppm=drift)
    assert abs(found.offset_ps - truth) <= found.search.bin_ps
    assert abs(found.drift_ppm - drift) <= found.drift_step_ppm / 2 + 1e-9
    assert found.search.significance > 8.0
    plain = coarse_offset(
        ta,
        tb,
        max_offset_ps=50_000_000_000,
        bin_ps=int(2 * 10e-6 * dur),
        duration_ps=dur,
        start_b_ps=start,
    )
    assert plain.significance < found.search.significance / 2
    model = found.model()
    assert model.offset_at_ps(found.search.start_b_ps) == pytest.approx(found.offset_ps)

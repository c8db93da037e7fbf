"""Streaming coincidence histograms, accidentals, CAR and delay finding (dsp/coincidence.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.coincidence import (
    CoincidenceConfig,
    CoincidenceState,
    accidentals_offpeak,
    accidentals_singles,
    car,
    coincidence_histogram,
    coincidence_process,
    find_delay,
    live_segments,
    merge_intervals,
    peak_delay,
    window_counts,
)
from dsp.coincidence import _overlap_integral as overlap_integral

SETTINGS = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------------------------------------
# Independent references


def brute_histogram(t, ch, cfg, dead=()):
    """Every ordered pair of distinct live tags, binned with plain Python integers."""
    live = [
        (int(x), int(c)) for x, c in zip(t, ch, strict=True) if not any(s <= x < e for s, e in dead)
    ]
    out = np.zeros((cfg.n_pairs, cfg.n_bins), np.int64)
    for (ti, ci), (tj, cj) in itertools.permutations(live, 2):
        if (ci, cj) not in cfg.pairs:
            continue
        p = cfg.pairs.index((ci, cj))
        k = (tj - ti - cfg.lo_ps[p]) // cfg.bin_ps
        if 0 <= k < cfg.n_bins:
            out[p, k] += 1
    return out


def brute_singles(t, ch, dead=()):
    out = np.zeros(256, np.int64)
    for x, c in zip(t, ch, strict=True):
        if not any(s <= x < e for s, e in dead):
            out[int(c)] += 1
    return out


def pair_stream(rng, *, duration_ps, pair_hz, noise_a_hz, noise_b_hz, delay_ps, jitter_ps):
    """Channel 0/1 tags: Poisson pairs (b = a + delay + N(0, jitter)) plus Poisson noise."""
    T = duration_ps * 1e-12
    n_pairs = rng.poisson(pair_hz * T)
    a_pairs = rng.uniform(0, duration_ps, n_pairs)
    b_pairs = a_pairs + delay_ps + rng.normal(0.0, jitter_ps, n_pairs)
    ta = np.concatenate([a_pairs, rng.uniform(0, duration_ps, rng.poisson(noise_a_hz * T))])
    tb = np.concatenate([b_pairs, rng.uniform(0, duration_ps, rng.poisson(noise_b_hz * T))])
    t = np.concatenate([np.floor(ta), np.floor(tb)]).astype(np.int64)
    ch = np.concatenate([np.zeros(ta.size, np.uint8), np.ones(tb.size, np.uint8)])
    order = np.argsort(t, kind="stable")
    return t[order], ch[order], n_pairs


# ---------------------------------------------------------------------------------------------
# Exactness against brute force, streaming invariance


small_streams = st.lists(
    st.tuples(st.integers(-2_000, 20_000), st.integers(0, 3)), min_size=0, max_size=120
)


def _config(delays):
    pairs = [(0, 1), (1, 0), (0, 2), (2, 3), (1, 1), (3, 0)]
    return CoincidenceConfig.create(pairs, bin_ps=70, half_range_ps=1_500, delays_ps=delays)


@SETTINGS
@given(
    tags=small_streams,
    delays=st.lists(st.integers(-3_000, 3_000), min_size=6, max_size=6),
)
def test_histograms_equal_brute_force(tags, delays):
    """Every configured pair, auto pair, shifted ranges and equal timestamps: exact counts."""
    tags.sort(key=lambda x: x[0])
    t = np.array([x[0] for x in tags], np.int64)
    ch = np.array([x[1] for x in tags], np.uint8)
    cfg = _config(delays)
    got = coincidence_histogram(t, ch, cfg)
    np.testing.assert_array_equal(got.hist, brute_histogram(t, ch, cfg))
    np.testing.assert_array_equal(got.singles, brute_singles(t, ch))


def _feed(t, ch, cfg, cuts, dead=()):
    """Feed a stream cut at ``cuts``; each dead interval comes with the batch holding its start
    (the latest batch allowed), or with the last batch if it starts after every tag."""
    state = CoincidenceState.initial(cfg)
    bounds = sorted({0, t.size, *[c % (t.size + 1) for c in cuts]})
    pending = [tuple(d) for d in dead]
    counts = state.counts
    for k, (s, e) in enumerate(itertools.pairwise(bounds)):
        last = k == len(bounds) - 2
        mine = [d for d in pending if last or (e > 0 and d[0] <= t[e - 1])]
        pending = [d for d in pending if d not in mine]
        counts, state = coincidence_process(
            t[s:e], ch[s:e], state, cfg, dead_ps=np.array(mine, np.int64).reshape(-1, 2)
        )
    return counts


@SETTINGS
@given(
    tags=small_streams,
    cuts=st.lists(st.integers(0, 200), max_size=8),
    dead=st.lists(st.tuples(st.integers(-2_000, 20_000), st.integers(1, 3_000)), max_size=3),
)
def test_any_split_gives_identical_histograms(tags, cuts, dead):
    """Batches cut anywhere (also between equal timestamps), dead intervals delivered just in
    time: identical to one batch, to the threaded one-shot and to brute force."""
    tags.sort(key=lambda x: x[0])
    t = np.array([x[0] for x in tags], np.int64)
    ch = np.array([x[1] for x in tags], np.uint8)
    dead_iv = merge_intervals(np.array([(s, s + w) for s, w in dead], np.int64).reshape(-1, 2))
    cfg = _config([0, 200, -500, 1_000, 0, -2_000])
    split = _feed(t, ch, cfg, cuts, dead_iv)
    whole = _feed(t, ch, cfg, [], dead_iv)
    np.testing.assert_array_equal(split.hist, whole.hist)
    np.testing.assert_array_equal(split.singles, whole.singles)
    assert split.live_time_ps == whole.live_time_ps
    assert (split.start_ps, split.stop_ps) == (whole.start_ps, whole.stop_ps)
    oneshot = coincidence_histogram(t, ch, cfg, dead_ps=dead_iv)
    np.testing.assert_array_equal(oneshot.hist, whole.hist)
    dead_list = [tuple(int(v) for v in d) for d in dead_iv]
    np.testing.assert_array_equal(whole.hist, brute_histogram(t, ch, cfg, dead_list))
    np.testing.assert_array_equal(whole.singles, brute_singles(t, ch, dead_list))


def test_threads_equal_single_pass_on_a_dense_stream():
    rng = np.random.default_rng(5)
    t = np.sort(rng.integers(0, 3_000_000, 60_000)).astype(np.int64)
    ch = rng.integers(0, 4, t.size).astype(np.uint8)
    cfg = CoincidenceConfig.all_pairs([0, 1, 2, 3], bin_ps=25, half_range_ps=400)
    one = coincidence_histogram(t, ch, cfg)
    for threads in (2, 3, 7):
        many = coincidence_histogram(t, ch, cfg, threads=threads)
        np.testing.assert_array_equal(many.hist, one.hist)
        np.testing.assert_array_equal(many.singles, one.singles)
    assert one.hist.sum() > 10_000  # the stream is dense enough to pair across chunk edges


def test_matrix_is_every_ordered_pair():
    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 40_000, 150)).astype(np.int64)
    ch = rng.integers(0, 3, t.size).astype(np.uint8)
    chans = [0, 1, 2]
    cfg = CoincidenceConfig.all_pairs(chans, bin_ps=100, half_range_ps=2_000)
    counts = coincidence_histogram(t, ch, cfg)
    mat = counts.matrix()
    assert mat.shape == (3, 3, cfg.n_bins)
    ref = brute_histogram(t, ch, cfg)
    for i, a in enumerate(chans):
        for j, b in enumerate(chans):
            expect = ref[cfg.pair_index(a, b)] if a != b else np.zeros(cfg.n_bins)
            np.testing.assert_array_equal(mat[i, j], expect)
    # t_b - t_a in [lo, hi) mirrors t_a - t_b in (-hi, -lo]: totals agree
    assert mat[0, 1].sum() == mat[1, 0].sum() > 0


def test_per_channel_latencies_centre_the_pairs():
    cfg = CoincidenceConfig.all_pairs([1, 4], bin_ps=10, half_range_ps=100, delays_ps={4: 5_000})
    assert cfg.lo_ps[cfg.pair_index(1, 4)] == 4_900
    assert cfg.lo_ps[cfg.pair_index(4, 1)] == -5_100
    t = np.array([0, 5_003], np.int64)
    counts = coincidence_histogram(t, np.array([1, 4], np.uint8), cfg)
    assert counts.histogram(1, 4)[10] == 1  # bin [5000, 5010)
    assert counts.histogram(4, 1)[9] == 1  # -5003 in [-5010, -5000)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_value_error_naming_the_argument():
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=10, half_range_ps=100)
    state = CoincidenceState.initial(cfg)
    with pytest.raises(ValueError, match=r"timestamp_ps: not sorted at index 2"):
        coincidence_process(np.array([1, 5, 3]), np.array([0, 1, 0]), state, cfg)
    with pytest.raises(ValueError, match=r"timestamp_ps: not sorted at index 2"):
        coincidence_histogram(np.array([1, 5, 3], np.int64), np.array([0, 1, 0]), cfg, threads=2)
    _, state = coincidence_process(np.array([10, 20]), np.array([0, 1]), state, cfg)
    with pytest.raises(ValueError, match=r"timestamp_ps: batch starts at 15 ps, before"):
        coincidence_process(np.array([15]), np.array([0]), state, cfg)
    with pytest.raises(ValueError, match=r"timestamp_ps: expected int64"):
        coincidence_process(np.array([30.0]), np.array([0]), state, cfg)
    with pytest.raises(ValueError, match=r"channel: 256 is not a tagger input"):
        coincidence_process(np.array([30]), np.array([256]), state, cfg)
    with pytest.raises(ValueError, match=r"channel: expected a 1-D array"):
        coincidence_process(np.array([30, 31]), np.array([0]), state, cfg)
    with pytest.raises(ValueError, match=r"timestamp_ps: tags must lie within"):
        coincidence_process(np.array([2**62]), np.array([0]), state, cfg)
    with pytest.raises(ValueError, match=r"dead_ps: interval starting at 20 ps"):
        coincidence_process(np.array([30]), np.array([0]), state, cfg, dead_ps=[[20, 40]])
    with pytest.raises(ValueError, match=r"dead_ps: interval 0 has start 50 > stop 40"):
        coincidence_process(np.array([30]), np.array([0]), state, cfg, dead_ps=[[50, 40]])
    with pytest.raises(ValueError, match=r"pair: \(1, 0\) is not a configured channel pair"):
        state.counts.histogram(1, 0)
    with pytest.raises(ValueError, match=r"pairs: channel 300 is not a tagger input"):
        CoincidenceConfig.create([(0, 300)])
    with pytest.raises(ValueError, match=r"bin_ps: expected >= 1"):
        CoincidenceConfig.create([(0, 1)], bin_ps=0)
    with pytest.raises(ValueError, match=r"delays_ps: expected 1 delays"):
        CoincidenceConfig.create([(0, 1)], delays_ps=[1, 2])
    with pytest.raises(ValueError, match=r"center_ps/width_ps: window"):
        window_counts(state.counts, (0, 1), 10_000, 20)


def test_negative_timestamps_and_empty_batches():
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=10, half_range_ps=100)
    state = CoincidenceState.initial(cfg)
    counts, state = coincidence_process(np.zeros(0, np.int64), np.zeros(0, np.uint8), state, cfg)
    assert counts.hist.sum() == 0 and counts.live_time_ps == 0
    t = np.array([-(2**61), -(2**61) + 5, 7], np.int64)
    counts, state = coincidence_process(t, np.array([0, 1, 1], np.uint8), state, cfg)
    assert counts.histogram(0, 1)[10] == 1  # +5 ps, bin [0, 10)
    assert counts.duration_ps == 7 + 2**61


# ---------------------------------------------------------------------------------------------
# Dead intervals and normalisation


def test_dead_intervals_and_live_time():
    dead = merge_intervals([[50, 60], [10, 20], [15, 30], [30, 31], [70, 70]])
    np.testing.assert_array_equal(dead, [[10, 31], [50, 60]])
    seg = live_segments(0, 100, dead)
    np.testing.assert_array_equal(seg, [[0, 10], [31, 50], [60, 100]])
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=5, half_range_ps=50)
    t = np.array([0, 12, 29, 31, 55, 99], np.int64)
    counts = coincidence_histogram(t, np.array([0, 1, 0, 1, 1, 0]), cfg, dead_ps=dead)
    assert counts.live_time_ps == 99 - 21 - 10
    np.testing.assert_array_equal(counts.singles[:2], [2, 1])  # tags at 12, 29, 55 are dead


@pytest.mark.parametrize(
    ("segments", "tau"),
    [
        ([(0, 1_000)], (-300, 200)),
        ([(0, 100), (130, 400), (405, 900)], (-50, 90)),
        ([(0, 10), (20, 25), (27, 60)], (5, 40)),
        ([(-500, -100), (0, 50)], (-700, 700)),
    ],
)
def test_live_overlap_integral_equals_numeric_integration(segments, tau):
    """integral over tau of the time where t and t + tau are both live, vs a direct sum."""
    seg = np.array(segments, np.int64)
    lo = min(s for s, _ in segments)
    hi = max(e for _, e in segments)
    live = np.zeros(hi - lo, bool)
    for s, e in segments:
        live[s - lo : e - lo] = True

    cells = np.arange(live.size)

    def overlap(d: int) -> int:  # |L intersect (L - d)|: unit cells x with x and x + d live
        ok = (cells + d >= 0) & (cells + d < live.size)
        return int(np.count_nonzero(live[cells[ok]] & live[cells[ok] + d]))

    taus = np.arange(tau[0], tau[1] + 1)
    values = np.array([overlap(int(d)) for d in taus], float)
    # piecewise linear in tau with integer breakpoints: the trapezoid rule is exact
    expect = float(np.sum((values[1:] + values[:-1]) / 2))
    assert overlap_integral(seg, float(tau[0]), float(tau[1])) == pytest.approx(expect, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Accuracy on synthetic streams


DURATION_PS = 200_000_000_000  # 0.2 s
PAIR_HZ, NOISE_HZ = 50e3, 1.0e6
DELAY_PS, JITTER_PS = 23_456, 50.0


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(11)
    return pair_stream(
        rng,
        duration_ps=DURATION_PS,
        pair_hz=PAIR_HZ,
        noise_a_hz=NOISE_HZ,
        noise_b_hz=NOISE_HZ,
        delay_ps=DELAY_PS,
        jitter_ps=JITTER_PS,
    )


def _truth_car(width_ps, live_s):
    """CAR from the generating rates: (pairs in window + accidentals) / accidentals."""
    r = PAIR_HZ + NOISE_HZ
    acc = r * r * width_ps * 1e-12 * live_s
    frac = math.erf(width_ps / 2 / (JITTER_PS * math.sqrt(2)))
    return (PAIR_HZ * live_s * frac + acc) / acc, acc


def test_delay_found_within_one_bin(stream):
    t, ch, _ = stream
    est = find_delay(t, ch, 0, 1, max_delay_ps=100_000, bin_ps=10)
    assert abs(est.delay_ps - DELAY_PS) <= 10
    assert est.significance > 50
    # and with the pair's channels swapped the delay flips sign
    est = find_delay(t, ch, 1, 0, max_delay_ps=100_000, bin_ps=20)
    assert abs(est.delay_ps + DELAY_PS) <= 20


@pytest.mark.parametrize("method", ["offpeak", "singles"])
def test_car_within_five_percent_of_truth(stream, method):
    t, ch, _ = stream
    cfg = CoincidenceConfig.create(
        [(0, 1)], bin_ps=20, half_range_ps=50_000, delays_ps=[DELAY_PS - DELAY_PS % 20]
    )
    counts = coincidence_histogram(t, ch, cfg)
    center = peak_delay(counts, (0, 1)).delay_ps
    width = 1_000
    res = car(counts, (0, 1), center, width, method=method)
    truth, acc_truth = _truth_car(res.window.width_ps, counts.live_time_ps * 1e-12)
    assert res.car == pytest.approx(truth, rel=0.05)
    assert res.accidentals.value == pytest.approx(acc_truth, rel=0.05)
    assert res.car_net == pytest.approx(res.car - 1.0)
    assert 0 < res.car_err < 0.05 * res.car


def test_dead_intervals_excluded_from_counts_and_normalisation(stream):
    """20 % of the run dead: counts drop, rates and CAR stay those of the source."""
    t, ch, _ = stream
    starts = np.arange(10, 200, 10) * 1_000_000_000  # every 10 ms ...
    dead = np.stack([starts, starts + 2_000_000_000], axis=1)  # ... 2 ms lost
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=20, half_range_ps=50_000, delays_ps=[23_440])
    full = coincidence_histogram(t, ch, cfg)
    cut = coincidence_histogram(t, ch, cfg, dead_ps=dead)
    assert cut.dead_time_ps == dead[:, 1].sum() - dead[:, 0].sum()
    assert cut.singles[0] < 0.85 * full.singles[0]
    for c in (0, 1):
        assert cut.singles_rate_hz(c) == pytest.approx(full.singles_rate_hz(c), rel=0.01)
        assert cut.singles_rate_hz(c) == pytest.approx(PAIR_HZ + NOISE_HZ, rel=0.01)
    res = car(cut, (0, 1), DELAY_PS, 1_000, method="singles")
    truth, _ = _truth_car(res.window.width_ps, cut.live_time_ps * 1e-12)
    assert res.car == pytest.approx(truth, rel=0.05)
    off = accidentals_offpeak(cut, (0, 1), DELAY_PS, 1_000)
    sing = accidentals_singles(cut, (0, 1), DELAY_PS, 1_000)
    assert off.value == pytest.approx(sing.value, rel=0.05)
    assert off.n_windows > 50


def test_window_counts_sum_exactly_the_bins(stream):
    t, ch, _ = stream
    cfg = CoincidenceConfig.create([(0, 1)], bin_ps=20, half_range_ps=50_000, delays_ps=[23_440])
    counts = coincidence_histogram(t, ch, cfg)
    edges = cfg.bin_edges_ps(0, 1)
    w = window_counts(counts, (0, 1), 23_440, 1_000)  # on bin edges: exactly this window
    assert (w.lo_ps, w.hi_ps, w.n_bins) == (22_940, 23_940, 50)
    assert w.lo_ps in edges and w.hi_ps in edges
    # off the grid: the bins whose centres (22950, ..., 23930) lie in [22950, 23950)
    assert window_counts(counts, (0, 1), 23_450, 1_000) == w
    assert w.counts == counts.histogram(0, 1)[w.first_bin : w.first_bin + w.n_bins].sum()
    assert w.counts > 0.99 * PAIR_HZ * DURATION_PS * 1e-12

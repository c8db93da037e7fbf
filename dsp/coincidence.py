"""Streaming coincidence counting on time tags (physics.md section 2, detection and analysis).

Input
-----
A stream of time tags: ``timestamp_ps`` (int64 picoseconds, sorted, non-decreasing) and
``channel`` (uint8 tagger input, or any integer array with values 0..255), cut into batches of
any size. Wraparound of the tagger's hardware counter is undone by the driver
(``drivers.tdc.TagBatch`` is unwrapped and monotonic for the whole stream), so this module
only sees int64 ps and *requires* them sorted within and across batches (a decrease raises
``ValueError`` naming the index). Timestamps may start anywhere (also negative) but must stay
within +-2**62 ps (+-53 days), which keeps every difference ``t_j - t_i`` below int64
overflow. Data from two free-running taggers must first be put on one time axis
(:mod:`dsp.clocksync`).

Histograms
----------
For every configured ordered channel pair (a, b) with delay d_ab, bin width w and n bins, the
histogram counts the pairs of tags (i on a, j on b, i != j) whose delay
``tau = t_j - t_i`` falls in bin k::

    lo_ab = d_ab - H                       (H = half range)
    k = floor((tau - lo_ab) / w),   0 <= k < n

so bin k covers ``[lo_ab + k w, lo_ab + (k + 1) w)``. All pairs, on all channels, are counted
in one pass over the merged stream: for each tag j the tags i before it with
``t_j - t_i <= W`` (the look-back W = max over pairs of max(hi_ab - 1, -lo_ab)) are visited
once, and the pair adds +tau to (c_i, c_j) and -tau to (c_j, c_i) if those are configured.
So an N x N matrix of histograms (every ordered pair, :meth:`CoincidenceConfig.all_pairs`)
costs one pass, and equal timestamps are counted in both orders. At the reference build's
rates (~1e5 tags/s/channel, W = 10 ns) a tag has ~1e-3 other tags in its look-back, so the
pass is mostly one comparison per tag (with the tag before it, kept in a register); the cost
grows with the density (``labctl bench coincidence`` reports it: ~125 M tags/s per core at
0.8 tags per 20 ns window against ~320 at 0.08 on the development VM). Singles are counted
in a second, branch-free pass over the channels (four interleaved 256-bin counters, so runs
of one channel do not serialise on one counter).

Streaming
---------
:func:`coincidence_process` takes a batch plus a :class:`CoincidenceState` and returns the
cumulative :class:`CoincidenceCounts` plus the next state. The state carries the tags of the
last W ps (``t >= t_last - W``), because a later tag can only pair with those, so every pair
is counted exactly once, by the batch of its later tag: any cut of the stream gives
bit-identical histograms and singles. :func:`coincidence_histogram` is the one-shot form; with
``threads > 1`` it cuts the stream into index chunks, gives each chunk the tags of the W ps
before it as carry (read-only views, no copy) and runs the kernels on a thread pool (the
Numba kernels release the GIL); the summed result equals the single pass exactly.

Dead intervals
--------------
Intervals ``[start_ps, stop_ps)`` in which the tagger lost data (e.g. a buffer overflow,
``TagBatch.lost_events``) are excluded from counts and normalisation: tags inside them are
dropped (no singles, no coincidences, as start or stop), and the live time is the
observation span ``[start, stop)`` minus their union. A dead interval must be given with (or
before) the batch that holds its first tag, i.e. it must start after the last tag already
processed; otherwise ``ValueError``. The observation starts at the first tag (or an explicit
``start_ps``) and ends at the last tag or the latest ``horizon_ps`` given.

Normalisation and accidentals
-----------------------------
With live segments S_m = [u_m, v_m) (the observation span minus dead intervals), live time
T = sum |S_m| and singles rates r_c = N_c / T, uncorrelated tags on a and b give, per unit of
delay, ``r_a r_b O(tau)`` pairs with ``O(tau) = sum_{m,n} |S_m  intersect  (S_n - tau)|``
(both tags must be live), so the accidentals expected in a window [tau_1, tau_2) are::

    A_singles = r_a r_b integral_{tau_1}^{tau_2} O(tau) d tau   (~ r_a r_b T (tau_2 - tau_1))

computed exactly with ramp antiderivatives (|[a,b) intersect [c,d)| = h(b-c) - h(b-d) -
h(a-c) + h(a-d), h(x) = max(x, 0)). The other estimate, ``A_offpeak``, is the mean count of
windows of the same width tiled across the histogram away from the peak (guard band
excluded), with Poisson error sqrt(sum)/n_windows. CAR = C / A (coincidences in the peak
window, accidentals not subtracted, over the accidentals of that window, as physics.md
defines it); ``car_net`` = (C - A) / A is also reported.

Delay finding
-------------
:func:`peak_delay` smooths a histogram with a box of ``smooth_ps``, takes the maximum and
refines it with the background-subtracted centroid of the raw bins within the box around
it; for Gaussian jitter sigma and N pairs the centroid scatters by sigma / sqrt(N), far below a
bin. :func:`find_delay` histograms two channels over +-max_delay_ps and applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numba as nb
import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ABS_TIMESTAMP_PS",
    "AccidentalsEstimate",
    "CarResult",
    "CoincidenceConfig",
    "CoincidenceCounts",
    "CoincidenceState",
    "DelayEstimate",
    "WindowCounts",
    "accidentals_offpeak",
    "accidentals_singles",
    "car",
    "coincidence_histogram",
    "coincidence_process",
    "find_delay",
    "live_segments",
    "merge_intervals",
    "peak_delay",
    "window_counts",
]

#: timestamps must satisfy |t| < 2**62 ps (53 days): differences then never overflow int64
MAX_ABS_TIMESTAMP_PS = 1 << 62
#: largest number of bins of one histogram (memory guard)
MAX_BINS = 10_000_000

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


# ---------------------------------------------------------------------------------------------
# Kernels


@nb.njit(cache=True, nogil=True, inline="always")
def _bin_one(tau, p, lo_ps, span_ps, bin_ps, hist):
    """Add delay ``tau`` to histogram ``p`` if it is inside its range."""
    x = tau - lo_ps[p]
    if x >= 0 and x < span_ps:
        hist[p, x // bin_ps] += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _add_pair(ci, cj, dt, fwd, rev, lo_ps, span_ps, bin_ps, hist):
    """Tag i (compact channel ci) before tag j (cj), dt = t_j - t_i >= 0."""
    p = fwd[ci, cj]
    if p >= 0:
        _bin_one(dt, p, lo_ps, span_ps, bin_ps, hist)
    p = rev[ci, cj]
    if p >= 0:
        _bin_one(-dt, p, lo_ps, span_ps, bin_ps, hist)


@nb.njit(cache=True, nogil=True)
def _histogram_kernel(
    carry_t,
    carry_ch,
    t,
    ch,
    lookback_ps,
    chan_index,
    fwd,
    rev,
    lo_ps,
    bin_ps,
    n_bins,
    hist,
):
    """Accumulate into ``hist`` the pairs whose later tag is in (t, ch).

    ``carry_*`` are the earlier tags within the look-back (sorted). Returns -1, or the first
    index j of ``t`` with t[j] < t[j - 1] (or t[0] < carry_t[-1]); then ``hist`` is partial.
    """
    n = t.size
    nc = carry_t.size
    span_ps = n_bins * bin_ps
    if n == 0:
        return -1
    prev = carry_t[nc - 1] if nc > 0 else t[0]
    for j in range(n):
        tj = t[j]
        if tj < prev:
            return j
        before = prev  # the tag just before j (any channel)
        prev = tj
        cj = chan_index[ch[j]]
        if cj < 0:
            continue
        tmin = tj - lookback_ps
        if before < tmin:
            continue  # the common case: no other tag in the look-back
        i = j - 1
        while i >= 0:
            ti = t[i]
            if ti < tmin:
                break
            ci = chan_index[ch[i]]
            if ci >= 0:
                _add_pair(ci, cj, tj - ti, fwd, rev, lo_ps, span_ps, bin_ps, hist)
            i -= 1
        if i < 0:
            k = nc - 1
            while k >= 0:
                ti = carry_t[k]
                if ti < tmin:
                    break
                ci = chan_index[carry_ch[k]]
                if ci >= 0:
                    _add_pair(ci, cj, tj - ti, fwd, rev, lo_ps, span_ps, bin_ps, hist)
                k -= 1
    return -1


@nb.njit(cache=True, nogil=True)
def _count_channels(ch, singles):
    """singles[c] += number of tags on input c (four interleaved sub-histograms, so that
    consecutive tags on one input do not serialise on one counter)."""
    n = ch.size
    sub = np.zeros((4, 256), np.int64)
    k = 0
    while k + 4 <= n:
        sub[0, ch[k]] += 1
        sub[1, ch[k + 1]] += 1
        sub[2, ch[k + 2]] += 1
        sub[3, ch[k + 3]] += 1
        k += 4
    while k < n:
        sub[0, ch[k]] += 1
        k += 1
    for c in range(256):
        singles[c] += sub[0, c] + sub[1, c] + sub[2, c] + sub[3, c]


# ---------------------------------------------------------------------------------------------
# Configuration


def _as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {v}")
    return v


def _check_channel(c: object, name: str) -> int:
    if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= int(c) <= 255:
        raise ValueError(f"{name}: channel {c!r} is not a tagger input 0..255 (uint8)")
    return int(c)


@dataclass(frozen=True, eq=False)
class CoincidenceConfig:
    """Which ordered channel pairs to histogram, and the delay bins of each.

    Pair p = (a, b) histograms ``t_b - t_a`` over ``[lo_ps[p], lo_ps[p] + n_bins * bin_ps)``
    in ``n_bins`` bins of ``bin_ps``. Build it with :meth:`create` or :meth:`all_pairs`.
    """

    pairs: tuple[tuple[int, int], ...]
    bin_ps: int
    n_bins: int
    lo_ps: tuple[int, ...]
    channels: tuple[int, ...] = field(init=False)
    lookback_ps: int = field(init=False)
    _chan_index: I64 = field(init=False, repr=False)
    _fwd: I64 = field(init=False, repr=False)
    _rev: I64 = field(init=False, repr=False)
    _lo: I64 = field(init=False, repr=False)
    _pair_index: dict[tuple[int, int], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("pairs: expected at least one (a, b) channel pair")
        bin_ps = _as_int(self.bin_ps, "bin_ps", minimum=1)
        n_bins = _as_int(self.n_bins, "n_bins", minimum=1)
        if n_bins > MAX_BINS:
            raise ValueError(f"n_bins: {n_bins} bins is more than {MAX_BINS}; use wider bins")
        if len(self.lo_ps) != len(self.pairs):
            raise ValueError("lo_ps: expected one lower edge per pair")
        index: dict[tuple[int, int], int] = {}
        for k, pair in enumerate(self.pairs):
            if len(pair) != 2:
                raise ValueError(f"pairs: expected (a, b) tuples, got {pair!r}")
            a = _check_channel(pair[0], "pairs")
            b = _check_channel(pair[1], "pairs")
            if (a, b) in index:
                raise ValueError(f"pairs: ({a}, {b}) is listed twice")
            index[(a, b)] = k
        channels = tuple(sorted({c for p in index for c in p}))
        chan_index = np.full(256, -1, np.int64)
        chan_index[list(channels)] = np.arange(len(channels))
        nc = len(channels)
        fwd = np.full((nc, nc), -1, np.int64)
        rev = np.full((nc, nc), -1, np.int64)
        for (a, b), k in index.items():
            fwd[chan_index[a], chan_index[b]] = k  # i on a, j on b: tau = +dt
            rev[chan_index[b], chan_index[a]] = k  # i on b, j on a: tau = -dt
        lo = np.array([_as_int(v, "lo_ps") for v in self.lo_ps], dtype=np.int64)
        span = n_bins * bin_ps
        hi = lo + span
        if np.any(np.abs(lo) >= 1 << 61) or np.any(np.abs(hi) >= 1 << 61):
            raise ValueError("lo_ps: histogram ranges must stay within +-2**61 ps")
        lookback = int(max(0, np.max(np.maximum(hi - 1, -lo))))
        s = object.__setattr__
        s(self, "pairs", tuple(index))
        s(self, "bin_ps", bin_ps)
        s(self, "n_bins", n_bins)
        s(self, "lo_ps", tuple(int(v) for v in lo))
        s(self, "channels", channels)
        s(self, "lookback_ps", lookback)
        s(self, "_chan_index", chan_index)
        s(self, "_fwd", fwd)
        s(self, "_rev", rev)
        s(self, "_lo", lo)
        s(self, "_pair_index", index)

    @classmethod
    def create(
        cls,
        pairs: Iterable[tuple[int, int]],
        *,
        bin_ps: int = 10,
        half_range_ps: int = 10_000,
        delays_ps: Sequence[int] | None = None,
    ) -> CoincidenceConfig:
        """Histograms of ``t_b - t_a`` for each (a, b) in ``pairs``.

        Each covers ``delay - half_range_ps`` to ``delay - half_range_ps + n_bins * bin_ps``,
        ``n_bins = ceil(2 * half_range_ps / bin_ps)``, with ``delays_ps[p]`` (default 0) the
        expected delay of pair p (cable and detector latency difference).
        """
        pair_list = [tuple(p) for p in pairs]
        if not pair_list:
            raise ValueError("pairs: expected at least one (a, b) channel pair")
        bin_ps = _as_int(bin_ps, "bin_ps", minimum=1)
        half = _as_int(half_range_ps, "half_range_ps", minimum=1)
        if delays_ps is None:
            delays = [0] * len(pair_list)
        else:
            delays = [_as_int(d, "delays_ps") for d in delays_ps]
            if len(delays) != len(pair_list):
                raise ValueError(
                    f"delays_ps: expected {len(pair_list)} delays (one per pair), got {len(delays)}"
                )
        n_bins = -(-2 * half // bin_ps)
        return cls(
            pairs=tuple(pair_list),  # type: ignore[arg-type]  # validated in __post_init__
            bin_ps=bin_ps,
            n_bins=n_bins,
            lo_ps=tuple(d - half for d in delays),
        )

    @classmethod
    def all_pairs(
        cls,
        channels: Iterable[int],
        *,
        bin_ps: int = 10,
        half_range_ps: int = 10_000,
        delays_ps: Mapping[int, int] | None = None,
        include_auto: bool = False,
    ) -> CoincidenceConfig:
        """Every ordered pair (a, b), a != b, of ``channels``: the N x N matrix in one pass.

        ``delays_ps[c]`` is the latency of channel c (default 0); pair (a, b) is centred on
        ``delays_ps[b] - delays_ps[a]``. ``include_auto`` adds the (a, a) autocorrelations.
        """
        chans = [_check_channel(c, "channels") for c in channels]
        if len(set(chans)) != len(chans):
            raise ValueError(f"channels: duplicates in {chans}")
        lat = dict(delays_ps or {})
        for c in lat:
            _check_channel(c, "delays_ps")
        pairs = [(a, b) for a in chans for b in chans if include_auto or a != b]
        return cls.create(
            pairs,
            bin_ps=bin_ps,
            half_range_ps=half_range_ps,
            delays_ps=[lat.get(b, 0) - lat.get(a, 0) for a, b in pairs],
        )

    @property
    def n_pairs(self) -> int:
        """Number of histograms."""
        return len(self.pairs)

    def pair_index(self, a: int, b: int) -> int:
        """Row of pair (a, b) in the histogram array; ValueError for an unknown pair."""
        try:
            return self._pair_index[(int(a), int(b))]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"pair: ({a}, {b}) is not a configured channel pair; configured: {list(self.pairs)}"
            ) from None

    def bin_edges_ps(self, a: int, b: int) -> I64:
        """The n_bins + 1 bin edges (ps) of pair (a, b)."""
        lo = self.lo_ps[self.pair_index(a, b)]
        return lo + self.bin_ps * np.arange(self.n_bins + 1, dtype=np.int64)

    def bin_centers_ps(self, a: int, b: int) -> npt.NDArray[np.float64]:
        """The bin centres (ps) of pair (a, b)."""
        return self.bin_edges_ps(a, b)[:-1] + 0.5 * self.bin_ps


# ---------------------------------------------------------------------------------------------
# Dead intervals


def merge_intervals(intervals_ps: npt.ArrayLike, *, name: str = "dead_ps") -> I64:
    """Union of ``[start_ps, stop_ps)`` intervals as a sorted, disjoint (k, 2) int64 array.

    Empty intervals (start == stop) are dropped; start > stop raises ValueError.
    """
    arr = np.asarray(intervals_ps)
    if arr.size == 0:
        return np.zeros((0, 2), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected a (k, 2) array of [start_ps, stop_ps), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer picoseconds, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.nonzero(arr[:, 0] > arr[:, 1])[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{name}: interval {k} has start {arr[k, 0]} > stop {arr[k, 1]}")
    arr = arr[arr[:, 0] < arr[:, 1]]
    if arr.size == 0:
        return np.zeros((0, 2), np.int64)
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    starts, stops = arr[:, 0], np.maximum.accumulate(arr[:, 1])
    new = np.ones(len(arr), bool)
    new[1:] = starts[1:] > stops[:-1]
    first = np.nonzero(new)[0]
    last = np.append(first[1:] - 1, len(arr) - 1)
    return np.stack([starts[first], stops[last]], axis=1).astype(np.int64)


def live_segments(start_ps: int, stop_ps: int, dead_ps: npt.ArrayLike) -> I64:
    """``[start_ps, stop_ps)`` minus the dead intervals, as sorted (k, 2) live segments."""
    dead = merge_intervals(dead_ps)
    if stop_ps <= start_ps:
        return np.zeros((0, 2), np.int64)
    cuts = dead[(dead[:, 1] > start_ps) & (dead[:, 0] < stop_ps)]
    lo = np.concatenate([[start_ps], np.minimum(cuts[:, 1], stop_ps)])
    hi = np.concatenate([np.maximum(cuts[:, 0], start_ps), [stop_ps]])
    keep = hi > lo
    return np.stack([lo[keep], hi[keep]], axis=1).astype(np.int64)


def _dead_mask(t: I64, dead: I64) -> npt.NDArray[np.bool_]:
    """True for tags inside one of the (merged) dead intervals."""
    idx = np.searchsorted(dead[:, 0], t, side="right") - 1
    return (idx >= 0) & (t < dead[np.maximum(idx, 0), 1])


# ---------------------------------------------------------------------------------------------
# Results and state


@dataclass(frozen=True)
class WindowCounts:
    """Counts of the bins of one pair whose centres lie in a window (ps)."""

    counts: int
    lo_ps: int  #: window actually summed: [lo_ps, hi_ps), on bin edges
    hi_ps: int
    first_bin: int
    n_bins: int

    @property
    def width_ps(self) -> int:
        return self.hi_ps - self.lo_ps


@dataclass(frozen=True)
class AccidentalsEstimate:
    """Expected accidental coincidences in a window, with its 1-sigma uncertainty."""

    value: float
    err: float
    method: str
    n_windows: int = 0  #: off-peak windows averaged (0 for the singles estimate)


@dataclass(frozen=True)
class CarResult:
    """Coincidence-to-accidental ratio in one window: car = C / A, car_net = (C - A) / A."""

    coincidences: int
    accidentals: AccidentalsEstimate
    car: float
    car_err: float
    car_net: float
    window: WindowCounts


@dataclass(frozen=True)
class DelayEstimate:
    """Delay of the coincidence peak of one pair (``t_b - t_a``, ps)."""

    delay_ps: float
    peak_bin: int
    peak_counts: float  #: background-subtracted counts under the centroid box
    background_per_bin: float
    significance: float  #: peak_counts / sqrt(counts in the box)


@dataclass(frozen=True, eq=False)
class CoincidenceCounts:
    """Histograms and singles accumulated over ``[start_ps, stop_ps)`` (cumulative)."""

    config: CoincidenceConfig
    hist: I64  #: (n_pairs, n_bins) int64 (read-only by convention)
    singles: I64  #: (256,) live tags per input
    start_ps: int | None
    stop_ps: int | None
    dead_ps: I64  #: merged dead intervals seen so far, (k, 2)

    def histogram(self, a: int, b: int) -> I64:
        """Histogram of ``t_b - t_a`` (counts per bin)."""
        return self.hist[self.config.pair_index(a, b)]

    def matrix(self, channels: Sequence[int] | None = None) -> I64:
        """(N, N, n_bins) array: element [i, j] is the histogram of (channels[i], channels[j]);
        zero where that ordered pair is not configured (e.g. the diagonal)."""
        chans = list(self.config.channels if channels is None else channels)
        out = np.zeros((len(chans), len(chans), self.config.n_bins), np.int64)
        for i, a in enumerate(chans):
            for j, b in enumerate(chans):
                k = self.config._pair_index.get((int(a), int(b)))
                if k is not None:
                    out[i, j] = self.hist[k]
        return out

    @property
    def duration_ps(self) -> int:
        """Observation span stop - start (ps), dead time included."""
        if self.start_ps is None or self.stop_ps is None:
            return 0
        return max(0, self.stop_ps - self.start_ps)

    def segments_ps(self) -> I64:
        """Live segments of the observation span."""
        if self.start_ps is None or self.stop_ps is None:
            return np.zeros((0, 2), np.int64)
        return live_segments(self.start_ps, self.stop_ps, self.dead_ps)

    @property
    def live_time_ps(self) -> int:
        """Observation span minus the dead intervals (ps)."""
        seg = self.segments_ps()
        return int(np.sum(seg[:, 1] - seg[:, 0])) if seg.size else 0

    @property
    def dead_time_ps(self) -> int:
        return self.duration_ps - self.live_time_ps

    def singles_rate_hz(self, channel: int) -> float:
        """Live singles rate of one input (Hz)."""
        c = _check_channel(channel, "channel")
        live = self.live_time_ps
        return float(self.singles[c]) / (live * 1e-12) if live > 0 else 0.0


@dataclass(frozen=True, eq=False)
class CoincidenceState:
    """What :func:`coincidence_process` carries from one batch to the next."""

    counts: CoincidenceCounts
    carry_t: I64  #: live tags with t >= last_ps - lookback (sorted)
    carry_ch: U8
    last_ps: int | None  #: last tag processed (dead ones included)

    @classmethod
    def initial(cls, config: CoincidenceConfig, *, start_ps: int | None = None) -> CoincidenceState:
        """Empty state; the observation starts at ``start_ps`` or else at the first tag."""
        if start_ps is not None:
            start_ps = _as_int(start_ps, "start_ps")
        counts = CoincidenceCounts(
            config=config,
            hist=np.zeros((config.n_pairs, config.n_bins), np.int64),
            singles=np.zeros(256, np.int64),
            start_ps=start_ps,
            stop_ps=start_ps,
            dead_ps=np.zeros((0, 2), np.int64),
        )
        return cls(counts, np.zeros(0, np.int64), np.zeros(0, np.uint8), None)


# ---------------------------------------------------------------------------------------------
# Processing


def _as_tags(timestamp_ps: npt.ArrayLike, channel: npt.ArrayLike) -> tuple[I64, U8]:
    t = np.asarray(timestamp_ps)
    c = np.asarray(channel)
    if t.ndim != 1:
        raise ValueError(f"timestamp_ps: expected a 1-D array, got shape {t.shape}")
    if c.ndim != 1 or c.shape != t.shape:
        raise ValueError(
            f"channel: expected a 1-D array of the length of timestamp_ps ({t.size}), "
            f"got shape {c.shape}"
        )
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"timestamp_ps: expected int64 picoseconds, got dtype {t.dtype}")
    if t.dtype != np.int64:
        t = t.astype(np.int64)
    if c.dtype != np.uint8:
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"channel: expected integer inputs 0..255, got dtype {c.dtype}")
        if c.size and (c.min() < 0 or c.max() > 255):
            bad = int(c[(c < 0) | (c > 255)][0])
            raise ValueError(f"channel: {bad} is not a tagger input 0..255 (uint8)")
        c = c.astype(np.uint8)
    t = np.ascontiguousarray(t)
    c = np.ascontiguousarray(c)
    if t.size and (t[0] <= -MAX_ABS_TIMESTAMP_PS or t[-1] >= MAX_ABS_TIMESTAMP_PS):
        raise ValueError(
            f"timestamp_ps: tags must lie within +-2**62 ps; got {int(t[0])} .. {int(t[-1])}"
        )
    return t, c


def _layout(config: CoincidenceConfig) -> tuple[object, ...]:
    return (config.pairs, config.bin_ps, config.n_bins, config.lo_ps)


def _unsorted_error(t: I64, j: int, prev: int) -> ValueError:
    return ValueError(
        f"timestamp_ps: not sorted at index {j} ({int(t[j])} ps after {prev} ps); time tags "
        "must be non-decreasing int64 ps within and across batches"
    )


def _run_kernel(
    config: CoincidenceConfig, carry_t: I64, carry_ch: U8, t: I64, ch: U8
) -> tuple[int, I64, I64]:
    hist = np.zeros((config.n_pairs, config.n_bins), np.int64)
    singles = np.zeros(256, np.int64)
    bad = _histogram_kernel(
        carry_t,
        carry_ch,
        t,
        ch,
        config.lookback_ps,
        config._chan_index,
        config._fwd,
        config._rev,
        config._lo,
        config.bin_ps,
        config.n_bins,
        hist,
    )
    if bad < 0:
        _count_channels(ch, singles)
    return int(bad), hist, singles


def coincidence_process(
    timestamp_ps: npt.ArrayLike,
    channel: npt.ArrayLike,
    state: CoincidenceState,
    config: CoincidenceConfig,
    *,
    dead_ps: npt.ArrayLike | None = None,
    horizon_ps: int | None = None,
) -> tuple[CoincidenceCounts, CoincidenceState]:
    """Add one batch of tags; return the cumulative counts and the next state.

    ``timestamp_ps`` (int64 ps, sorted, not before the previous batch) and ``channel``
    (0..255) are one batch of the stream. ``dead_ps`` are new dead intervals (k, 2)
    ``[start_ps, stop_ps)``; each must start after the last tag already processed.
    ``horizon_ps`` (e.g. ``TagBatch.horizon_ps``) extends the observation span to it.
    Any cut of a stream into batches gives identical counts.
    """
    t, ch = _as_tags(timestamp_ps, channel)
    counts = state.counts
    if counts.config is not config and _layout(counts.config) != _layout(config):
        raise ValueError("config: the state was made for a different CoincidenceConfig")
    last = state.last_ps
    if t.size and last is not None and t[0] < last:
        raise ValueError(
            f"timestamp_ps: batch starts at {int(t[0])} ps, before the last processed tag "
            f"({last} ps); batches must be in time order"
        )
    dead = counts.dead_ps
    if dead_ps is not None:
        new_dead = merge_intervals(dead_ps)
        if new_dead.size and last is not None and new_dead[0, 0] <= last:
            raise ValueError(
                f"dead_ps: interval starting at {int(new_dead[0, 0])} ps is not after the last "
                f"processed tag ({last} ps); give dead intervals with or before the batch that "
                "holds their first tag"
            )
        if new_dead.size:
            dead = merge_intervals(np.concatenate([dead, new_dead]))
    if horizon_ps is not None:
        horizon_ps = _as_int(horizon_ps, "horizon_ps")
        if t.size and horizon_ps < t[-1]:
            raise ValueError(
                f"horizon_ps: {horizon_ps} ps is before the batch's last tag ({int(t[-1])} ps)"
            )

    live_t, live_ch = t, ch
    if t.size and dead.size:
        lo = np.searchsorted(dead[:, 1], t[0], side="right")
        if lo < len(dead) and dead[lo, 0] <= t[-1]:
            diffs = np.nonzero(t[1:] < t[:-1])[0]  # the kernel only sees the live tags
            if diffs.size:
                j = int(diffs[0]) + 1
                raise _unsorted_error(t, j, int(t[j - 1]))
            keep = ~_dead_mask(t, dead)
            live_t, live_ch = t[keep], ch[keep]

    bad, d_hist, d_singles = _run_kernel(config, state.carry_t, state.carry_ch, live_t, live_ch)
    if bad >= 0:
        # report against the raw batch (dead tags were removed before the kernel)
        diffs = np.nonzero(np.diff(t) < 0)[0]
        j = int(diffs[0]) + 1 if diffs.size else 0
        prev = int(t[j - 1]) if j > 0 else int(state.carry_t[-1])
        raise _unsorted_error(t, j, prev)

    start = counts.start_ps
    stop = counts.stop_ps
    new_last = last
    if t.size:
        if start is None:
            start = int(t[0])
        new_last = int(t[-1])
        stop = new_last if stop is None else max(stop, new_last)
    if horizon_ps is not None:
        if start is None:
            start = horizon_ps
        stop = horizon_ps if stop is None else max(stop, horizon_ps)

    if new_last is not None and t.size:
        cut = new_last - config.lookback_ps
        s = int(np.searchsorted(live_t, cut, side="left"))
        if s > 0 or state.carry_t.size == 0:
            carry_t, carry_ch = live_t[s:].copy(), live_ch[s:].copy()
        else:
            k = int(np.searchsorted(state.carry_t, cut, side="left"))
            carry_t = np.concatenate([state.carry_t[k:], live_t])
            carry_ch = np.concatenate([state.carry_ch[k:], live_ch])
    else:
        carry_t, carry_ch = state.carry_t, state.carry_ch

    new_counts = CoincidenceCounts(
        config=config,
        hist=counts.hist + d_hist,
        singles=counts.singles + d_singles,
        start_ps=start,
        stop_ps=stop,
        dead_ps=dead,
    )
    return new_counts, CoincidenceState(new_counts, carry_t, carry_ch, new_last)


def coincidence_histogram(
    timestamp_ps: npt.ArrayLike,
    channel: npt.ArrayLike,
    config: CoincidenceConfig,
    *,
    threads: int = 1,
    dead_ps: npt.ArrayLike | None = None,
    start_ps: int | None = None,
) -> CoincidenceCounts:
    """Histograms of a whole (sorted) tag stream in one call, optionally on several threads.

    Same result as :func:`coincidence_process` on an initial state. With ``threads > 1`` the
    stream is cut into ``threads`` index chunks; chunk k re-reads the tags of the look-back
    before it as carry (a view), so every pair is counted once, by the chunk of its later tag.
    """
    threads = _as_int(threads, "threads", minimum=1)
    t, ch = _as_tags(timestamp_ps, channel)
    dead = merge_intervals(dead_ps) if dead_ps is not None else np.zeros((0, 2), np.int64)
    if dead.size and t.size:
        diffs = np.nonzero(t[1:] < t[:-1])[0]  # the kernels only see the live tags
        if diffs.size:
            j = int(diffs[0]) + 1
            raise _unsorted_error(t, j, int(t[j - 1]))
        keep = ~_dead_mask(t, dead)
        raw_t = t
        t, ch = t[keep], ch[keep]
    else:
        raw_t = t
    n = t.size
    threads = max(1, min(threads, n // 4096 if n >= 8192 else 1))
    bounds = [k * n // threads for k in range(threads + 1)]
    empty_t, empty_c = np.zeros(0, np.int64), np.zeros(0, np.uint8)

    def run(k: int) -> tuple[int, I64, I64]:
        s, e = bounds[k], bounds[k + 1]
        if k == 0 or s == 0:
            ct, cc = empty_t, empty_c
        else:
            o = int(np.searchsorted(t[:s], t[s] - config.lookback_ps, side="left"))
            o = min(o, s - 1)
            ct, cc = t[o:s], ch[o:s]
        bad, h, sg = _run_kernel(config, ct, cc, t[s:e], ch[s:e])
        return (s + bad if bad >= 0 else -1), h, sg

    if threads == 1:
        results = [run(0)]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(run, range(threads)))
    bad_idx = [r[0] for r in results if r[0] >= 0]
    if bad_idx:
        diffs = np.nonzero(np.diff(raw_t) < 0)[0]
        j = int(diffs[0]) + 1 if diffs.size else int(min(bad_idx))
        raise _unsorted_error(raw_t, j, int(raw_t[j - 1]))
    hist = results[0][1]
    singles = results[0][2]
    for r in results[1:]:
        hist += r[1]
        singles += r[2]
    start = None if start_ps is None else _as_int(start_ps, "start_ps")
    if raw_t.size:
        start = int(raw_t[0]) if start is None else start
        stop: int | None = int(raw_t[-1])
    else:
        stop = start
    return CoincidenceCounts(config, hist, singles, start, stop, dead)


# ---------------------------------------------------------------------------------------------
# Analysis


def window_counts(
    counts: CoincidenceCounts, pair: tuple[int, int], center_ps: float, width_ps: float
) -> WindowCounts:
    """Sum of the bins of ``pair`` whose centres lie in ``[center - width/2, center + width/2)``.

    The window actually summed (on bin edges) is returned with the count; choose
    ``center_ps`` and ``width_ps`` on bin edges for an exact window.
    """
    if not width_ps > 0:
        raise ValueError(f"width_ps: expected > 0, got {width_ps}")
    cfg = counts.config
    p = cfg.pair_index(*pair)
    centers = cfg.lo_ps[p] + cfg.bin_ps * (np.arange(cfg.n_bins) + 0.5)
    inside = np.nonzero(
        (centers >= center_ps - width_ps / 2) & (centers < center_ps + width_ps / 2)
    )[0]
    if inside.size == 0:
        raise ValueError(
            f"center_ps/width_ps: window {center_ps - width_ps / 2:g}..{center_ps + width_ps / 2:g}"
            f" ps holds no bin centre of pair {pair} (range {cfg.lo_ps[p]}.."
            f"{cfg.lo_ps[p] + cfg.n_bins * cfg.bin_ps} ps, bins of {cfg.bin_ps} ps)"
        )
    k0, k1 = int(inside[0]), int(inside[-1]) + 1
    return WindowCounts(
        counts=int(counts.hist[p, k0:k1].sum()),
        lo_ps=cfg.lo_ps[p] + k0 * cfg.bin_ps,
        hi_ps=cfg.lo_ps[p] + k1 * cfg.bin_ps,
        first_bin=k0,
        n_bins=k1 - k0,
    )


def accidentals_offpeak(
    counts: CoincidenceCounts,
    pair: tuple[int, int],
    center_ps: float,
    width_ps: float,
    *,
    guard_ps: float | None = None,
) -> AccidentalsEstimate:
    """Accidentals as the mean count of same-width windows away from the peak.

    Windows of the peak window's bins are tiled across the histogram at whole multiples of
    its width; those overlapping ``[lo - guard, hi + guard)`` of the peak window are skipped
    (default guard: 2 x width). Uncertainty sqrt(sum) / n_windows (Poisson).
    """
    win = window_counts(counts, pair, center_ps, width_ps)
    cfg = counts.config
    p = cfg.pair_index(*pair)
    guard = 2.0 * win.width_ps if guard_ps is None else float(guard_ps)
    if guard < 0:
        raise ValueError(f"guard_ps: expected >= 0, got {guard_ps}")
    m = win.n_bins
    starts = np.arange(win.first_bin % m, cfg.n_bins - m + 1, m)
    lo = cfg.lo_ps[p] + starts * cfg.bin_ps
    hi = lo + m * cfg.bin_ps
    off = (hi <= win.lo_ps - guard) | (lo >= win.hi_ps + guard)
    starts = starts[off]
    if starts.size == 0:
        raise ValueError(
            f"width_ps/guard_ps: no off-peak window of {win.width_ps} ps fits in the histogram "
            f"of pair {pair} outside the guard band; widen the histogram range"
        )
    sums = np.array([counts.hist[p, s : s + m].sum() for s in starts], dtype=np.float64)
    total = float(sums.sum())
    n = int(starts.size)
    return AccidentalsEstimate(total / n, math.sqrt(max(total, 1.0)) / n, "offpeak", n)


def _ramp_integral(x: npt.NDArray[np.float64], tau1: float, tau2: float) -> npt.NDArray[np.float64]:
    """integral_{tau1}^{tau2} max(x + tau, 0) d tau, elementwise (tau1 <= tau2)."""
    u1 = x + tau1
    u2 = x + tau2
    full = (tau2 - tau1) * (x + 0.5 * (tau1 + tau2))
    part = 0.5 * np.maximum(u2, 0.0) ** 2
    return np.where(u1 >= 0, full, np.where(u2 <= 0, 0.0, part))


def _overlap_integral(seg: I64, tau1: float, tau2: float) -> float:
    """integral_{tau1}^{tau2} sum_{m,n} |S_m intersect (S_n - tau)| d tau for live segments S."""
    if seg.size == 0:
        return 0.0
    reach = max(abs(tau1), abs(tau2))
    a, b = seg[:, 0], seg[:, 1]
    # segment n interacts with m only if it starts before b_m + reach and ends after a_m - reach
    n_lo = np.searchsorted(b, a - reach, side="right")
    n_hi = np.searchsorted(a, b + reach, side="left")
    cnt = np.maximum(n_hi - n_lo, 0)
    m_idx = np.repeat(np.arange(len(seg)), cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    n_idx = np.repeat(n_lo, cnt) + offs
    a1, b1 = a[m_idx].astype(np.float64), b[m_idx].astype(np.float64)
    a2, b2 = a[n_idx].astype(np.float64), b[n_idx].astype(np.float64)
    # |[a1,b1) & [a2-tau, b2-tau)| = h(b1-a2+tau) - h(b1-b2+tau) - h(a1-a2+tau) + h(a1-b2+tau)
    total = (
        _ramp_integral(b1 - a2, tau1, tau2)
        - _ramp_integral(b1 - b2, tau1, tau2)
        - _ramp_integral(a1 - a2, tau1, tau2)
        + _ramp_integral(a1 - b2, tau1, tau2)
    )
    return float(total.sum())


def accidentals_singles(
    counts: CoincidenceCounts, pair: tuple[int, int], center_ps: float, width_ps: float
) -> AccidentalsEstimate:
    """Accidentals from singles x singles x window: r_a r_b integral O(tau) d tau.

    r_c are live singles rates and O(tau) the live time in which a tag at t and one at
    t + tau are both live (dead intervals and the observation edges excluded exactly).
    Uncertainty from the Poisson errors of the two singles counts.
    """
    win = window_counts(counts, pair, center_ps, width_ps)
    a, b = pair
    live = counts.live_time_ps
    if live <= 0:
        raise ValueError("counts: no live time observed yet")
    na, nb_ = float(counts.singles[a]), float(counts.singles[b])
    seg = counts.segments_ps()
    integral = _overlap_integral(seg, float(win.lo_ps), float(win.hi_ps))
    value = na * nb_ / (float(live) ** 2) * integral
    rel = math.sqrt((1.0 / na if na else 0.0) + (1.0 / nb_ if nb_ else 0.0))
    return AccidentalsEstimate(value, value * rel, "singles", 0)


def car(
    counts: CoincidenceCounts,
    pair: tuple[int, int],
    center_ps: float,
    width_ps: float,
    *,
    method: Literal["offpeak", "singles"] = "offpeak",
    guard_ps: float | None = None,
) -> CarResult:
    """Coincidence-to-accidental ratio of ``pair`` in the window around ``center_ps``."""
    win = window_counts(counts, pair, center_ps, width_ps)
    if method == "offpeak":
        acc = accidentals_offpeak(counts, pair, center_ps, width_ps, guard_ps=guard_ps)
    elif method == "singles":
        acc = accidentals_singles(counts, pair, center_ps, width_ps)
    else:
        raise ValueError(f"method: expected 'offpeak' or 'singles', got {method!r}")
    c = float(win.counts)
    if acc.value <= 0:
        ratio = math.inf if c > 0 else math.nan
        return CarResult(win.counts, acc, ratio, math.nan, ratio, win)
    ratio = c / acc.value
    err = ratio * math.sqrt((1.0 / c if c > 0 else 0.0) + (acc.err / acc.value) ** 2)
    return CarResult(win.counts, acc, ratio, err, (c - acc.value) / acc.value, win)


def peak_delay(
    counts: CoincidenceCounts, pair: tuple[int, int], *, smooth_ps: float = 200.0
) -> DelayEstimate:
    """Delay (``t_b - t_a``) of the coincidence peak of ``pair``.

    Box-smooth the histogram over ``smooth_ps`` (at least one bin), take the maximum, then the
    centroid of the raw bins in that box minus the median background.
    """
    if not smooth_ps >= 0:
        raise ValueError(f"smooth_ps: expected >= 0, got {smooth_ps}")
    cfg = counts.config
    p = cfg.pair_index(*pair)
    h = counts.hist[p].astype(np.float64)
    k = max(1, round(smooth_ps / cfg.bin_ps))
    k = min(k, cfg.n_bins)
    box = np.convolve(h, np.ones(k), mode="valid")  # box[s] = sum h[s : s + k]
    s = int(np.argmax(box))
    # widen to an odd box centred on the maximum, at least 3 bins
    half = max(1, k // 2 + 1)
    c = s + k // 2
    lo, hi = max(0, c - half), min(cfg.n_bins, c + half + 1)
    bg = float(np.median(h))
    w = np.clip(h[lo:hi] - bg, 0.0, None)
    centers = cfg.lo_ps[p] + cfg.bin_ps * (np.arange(lo, hi) + 0.5)
    if w.sum() > 0:
        delay = float(np.sum(w * centers) / w.sum())
    else:
        delay = float(centers[int(np.argmax(h[lo:hi]))])
    total = float(h[lo:hi].sum())
    sig = float(w.sum()) / math.sqrt(total) if total > 0 else 0.0
    peak_bin = int(np.clip((delay - cfg.lo_ps[p]) // cfg.bin_ps, 0, cfg.n_bins - 1))
    return DelayEstimate(delay, peak_bin, float(w.sum()), bg, sig)


def find_delay(
    timestamp_ps: npt.ArrayLike,
    channel: npt.ArrayLike,
    a: int,
    b: int,
    *,
    max_delay_ps: int = 100_000,
    bin_ps: int = 10,
    smooth_ps: float = 200.0,
) -> DelayEstimate:
    """Delay of b relative to a (peak of ``t_b - t_a``) searched over +-``max_delay_ps``.

    For offsets beyond ~1 us (free-running taggers) use :func:`dsp.clocksync.coarse_offset`.
    """
    cfg = CoincidenceConfig.create([(a, b)], bin_ps=bin_ps, half_range_ps=max_delay_ps)
    counts = coincidence_histogram(timestamp_ps, channel, cfg)
    return peak_delay(counts, (a, b), smooth_ps=smooth_ps)

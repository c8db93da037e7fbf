"""Clock offset and drift between two free-running time taggers (physics.md section 2).

Two users' taggers (A and B) each time-tag their own detectors on their own crystal clock.
Photon pairs make correlated tags, so the pairs themselves synchronise the clocks.

Clock model
-----------
B's clock runs at ``1 + d`` times A's rate (``d = drift_ppm * 1e-6``). With the offset
``o(t_b) = t_b - t_a`` of a pair seen at B time t_b::

    o(t_b) = offset_ps + s * (t_b - ref_ps),        s = d / (1 + d)
    t_a    = t_b - offset_ps - round(s * (t_b - ref_ps))        (:meth:`ClockModel.to_a_ps`)

The correction ``s * (t_b - ref)`` is computed in float64 and rounded, so B tags keep their
order and integer picoseconds after mapping (the correction is ~ppm of the elapsed time, so
its rounding error is far below a picosecond).

Coarse search (:func:`coarse_offset`)
-------------------------------------
Bin a chunk of B (duration D) and the A tags that can pair with it (offsets within
+-R = ``max_offset_ps``) at ``bin_ps`` = w and cross-correlate the two count series with a
zero-padded real FFT::

    c[m] = sum_i x_B[i] y_A[i + m]            offset = R - m w

The peak (refined by a 3-bin centroid) gives the offset to about w. A drift d smears the peak
over d D, so w must exceed ~2 d_max D; the peak-to-noise ratio is then
~ R_pair / sqrt(2 d_max r_a r_b), independent of D.

Continuous tracking (:func:`track_process`)
-------------------------------------------
B's time axis is cut into frames [G_k, G_k + P). Frame k maps its B tags with a piecewise
linear, continuous model (offset o_k at G_k, slope s_k), finds every A tag within +-W_k of
each mapped tag, and histograms the residuals r = t_a - mapped. The peak of the histogram
(box-smoothed maximum, then two background-subtracted centroid passes) gives the model error
e_k (centroid) and the peak rms sigma_k; the frame is *locked* when the background-
subtracted peak exceeds ``min_significance`` sigma. A locked frame gives an observation of the
true offset at the mean B time t_k of its peak, y_k = o_model(t_k) - e_k. The observations
enter an exponentially weighted least-squares polynomial fit (weights n_signal / sigma_k^2,
the inverse variance of the centroid, so acquisition frames with smeared peaks hardly count;
memory time constant ``memory_ps``; degree ``model_order`` = 2 by default, so a drift that
changes at a constant rate, e.g. with temperature, is followed without lag) in
u = (t - G_{k+1}) / P: y = c_0 + c_1 u + c_2 u^2. Then

    o_{k+1} = o_k + s_k P                          (continuous: tags never jump)
    s_{k+1} = (y_fit(u = 1) - o_{k+1}) / P         (slew onto the fit by the next frame's end)
    W_{k+1} = clip(4 (|e_k| + 2 sigma_k), min_window_ps, max_window_ps)

and the drift estimate is the fit's slope beta = c_1 / P at G_{k+1}
(``drift_ppm = 1e6 beta / (1 - beta)``). Until three (two) frames have locked, the fit's degree
is lowered; before that the initial model's drift is kept. An unlocked frame coasts and
doubles the window (re-acquisition). Frames are fixed on B's time axis and
a frame is processed only once all tags it needs have arrived (B up to G_k + P, A up to the
mapped end + W), so the output is identical for any cut of the two streams into batches.
The mapped B tags of processed frames are returned, ready to merge (:func:`merge_tags`) with
A's tags for :mod:`dsp.coincidence`.

Batch estimate (:func:`estimate_clock`)
---------------------------------------
Coarse search on the first chunk (w = max(1 ns, 2 d_max D)), then the tracker over all the
data starting from that offset with drift 0 and a +-(w + 2 d_max P) acquisition window, then
a global least-squares line through the offsets of the matched pairs (nearest A tag within the
final window, iteratively clipped at 4 sigma) for one model over the whole span, and once more
after re-matching every B tag with that line (which also recovers the pairs of the
acquisition frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

__all__ = [
    "ClockEstimate",
    "ClockModel",
    "CoarseClock",
    "CoarseOffset",
    "FrameReport",
    "TrackResult",
    "TrackerConfig",
    "TrackerState",
    "coarse_clock",
    "coarse_offset",
    "estimate_clock",
    "fit_clock",
    "merge_tags",
    "refine_clock",
    "track_process",
]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

#: largest FFT length of the coarse search (memory guard: ~2 GiB of complex128 work arrays)
MAX_FFT_LENGTH = 1 << 27


# ---------------------------------------------------------------------------------------------
# Helpers


def _sorted_tags(t: npt.ArrayLike, name: str) -> I64:
    arr = np.asarray(t)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of int64 ps, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected int64 picoseconds, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size > 1:
        bad = np.nonzero(arr[1:] < arr[:-1])[0]
        if bad.size:
            j = int(bad[0]) + 1
            raise ValueError(
                f"{name}: not sorted at index {j} ({int(arr[j])} ps after {int(arr[j - 1])} ps); "
                "time tags must be non-decreasing"
            )
    return arr


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, int | float | np.integer | np.floating) and value > 0):
        raise ValueError(f"{name}: expected > 0, got {value!r}")
    return float(value)


@nb.njit(cache=True, nogil=True)
def _merge_kernel(t1, c1, t2, c2, out_t, out_c):
    """Stable merge of two sorted tag streams (ties: stream 1 first)."""
    i = 0
    j = 0
    k = 0
    n1 = t1.size
    n2 = t2.size
    while i < n1 and j < n2:
        if t2[j] < t1[i]:
            out_t[k] = t2[j]
            out_c[k] = c2[j]
            j += 1
        else:
            out_t[k] = t1[i]
            out_c[k] = c1[i]
            i += 1
        k += 1
    while i < n1:
        out_t[k] = t1[i]
        out_c[k] = c1[i]
        i += 1
        k += 1
    while j < n2:
        out_t[k] = t2[j]
        out_c[k] = c2[j]
        j += 1
        k += 1


def merge_tags(
    t1_ps: npt.ArrayLike, channel1: npt.ArrayLike, t2_ps: npt.ArrayLike, channel2: npt.ArrayLike
) -> tuple[I64, U8]:
    """Merge two sorted tag streams (e.g. A's tags and B's tags mapped to A's clock) into one.

    Stable: at equal timestamps stream 1 comes first. Channels must be 0..255.
    """
    a = _sorted_tags(t1_ps, "t1_ps")
    b = _sorted_tags(t2_ps, "t2_ps")
    ca = np.asarray(channel1)
    cb = np.asarray(channel2)
    for c, t, name in ((ca, a, "channel1"), (cb, b, "channel2")):
        if c.shape != t.shape:
            raise ValueError(f"{name}: expected {t.size} channels (one per tag), got {c.shape}")
        if c.size and (c.min() < 0 or c.max() > 255):
            raise ValueError(f"{name}: channels must be tagger inputs 0..255")
    out_t = np.empty(a.size + b.size, np.int64)
    out_c = np.empty(a.size + b.size, np.uint8)
    _merge_kernel(a, ca.astype(np.uint8), b, cb.astype(np.uint8), out_t, out_c)
    return out_t, out_c


# ---------------------------------------------------------------------------------------------
# Clock model


@dataclass(frozen=True)
class ClockModel:
    """Linear map between B's and A's clocks: ``t_b - t_a = offset_ps + s (t_b - ref_ps)``.

    ``drift_ppm`` is B's rate relative to A's minus one, in ppm; s = d / (1 + d).
    """

    offset_ps: float
    drift_ppm: float = 0.0
    ref_ps: int = 0

    @property
    def slope(self) -> float:
        """d(t_b - t_a) / d t_b."""
        d = self.drift_ppm * 1e-6
        return d / (1.0 + d)

    @classmethod
    def from_slope(cls, offset_ps: float, slope: float, ref_ps: int) -> ClockModel:
        """Model with offset slope s = d(t_b - t_a)/d t_b (drift d = s / (1 - s))."""
        return cls(float(offset_ps), 1e6 * slope / (1.0 - slope), int(ref_ps))

    def offset_at_ps(self, t_b_ps: npt.ArrayLike) -> F64 | float:
        """``t_b - t_a`` predicted at B time(s) ``t_b_ps``."""
        t = np.asarray(t_b_ps, dtype=np.float64)
        out = self.offset_ps + self.slope * (t - self.ref_ps)
        return float(out) if out.ndim == 0 else out

    def to_a_ps(self, t_b_ps: npt.ArrayLike) -> I64:
        """Map B timestamps (int64 ps) onto A's clock (int64 ps, order kept)."""
        t = np.asarray(t_b_ps, dtype=np.int64)
        corr = np.rint(self.offset_ps + self.slope * (t - self.ref_ps).astype(np.float64))
        return t - corr.astype(np.int64)

    def to_b_ps(self, t_a_ps: npt.ArrayLike) -> I64:
        """Map A timestamps onto B's clock (inverse of :meth:`to_a_ps` to within 1 ps)."""
        t = np.asarray(t_a_ps, dtype=np.int64)
        x = (t - self.ref_ps).astype(np.float64) + self.offset_ps
        return self.ref_ps + np.rint(x / (1.0 - self.slope)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Coarse search


@dataclass(frozen=True)
class CoarseOffset:
    """Result of the FFT cross-correlation search."""

    offset_ps: float  #: t_b - t_a at the chunk
    bin_ps: int
    start_b_ps: int  #: the B chunk searched: [start_b_ps, start_b_ps + duration_ps)
    duration_ps: int
    peak_counts: float
    background_counts: float  #: mean correlation away from the peak
    significance: float  #: (peak - background) / std of the correlation


def coarse_offset(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    *,
    max_offset_ps: int,
    bin_ps: int,
    start_b_ps: int | None = None,
    duration_ps: int | None = None,
) -> CoarseOffset:
    """Offset ``t_b - t_a`` within +-``max_offset_ps`` from the cross-correlation peak.

    Uses B's tags in ``[start_b_ps, start_b_ps + duration_ps)`` (default: all of B from its
    first tag) and A's tags that can pair with them; resolution ``bin_ps``.
    """
    a = _sorted_tags(t_a_ps, "t_a_ps")
    b = _sorted_tags(t_b_ps, "t_b_ps")
    if a.size == 0 or b.size == 0:
        raise ValueError("t_a_ps/t_b_ps: both taggers need tags for a coarse search")
    w = int(_positive(bin_ps, "bin_ps"))
    r = int(_positive(max_offset_ps, "max_offset_ps"))
    b0 = int(b[0]) if start_b_ps is None else int(start_b_ps)
    dur = int(b[-1]) - b0 + 1 if duration_ps is None else int(_positive(duration_ps, "duration_ps"))
    if dur <= 0:
        raise ValueError(f"start_b_ps: {b0} is after B's last tag ({int(b[-1])})")
    n1 = -(-dur // w)
    n2 = -(-(dur + 2 * r) // w) + 1
    length = sfft.next_fast_len(n1 + n2, real=True)
    if length > MAX_FFT_LENGTH:
        raise ValueError(
            f"bin_ps: {n1 + n2} bins for duration {dur} ps and max_offset {r} ps at {w} ps "
            f"exceed {MAX_FFT_LENGTH}; use a coarser bin_ps or a shorter duration_ps"
        )
    tb = b[(b >= b0) & (b < b0 + dur)]
    ta = a[(a >= b0 - r) & (a < b0 + dur + r)]
    if tb.size == 0 or ta.size == 0:
        raise ValueError("t_a_ps/t_b_ps: no tags in the searched chunk")
    x = np.bincount((tb - b0) // w, minlength=n1).astype(np.float64)
    y = np.bincount((ta - (b0 - r)) // w, minlength=n2).astype(np.float64)
    spec = np.conj(sfft.rfft(x, length)) * sfft.rfft(y, length)
    corr = sfft.irfft(spec, length)[: n2 - n1 + 1]
    return _correlation_peak(corr, r, w, b0, dur)


def _correlation_peak(corr: F64, r: int, w: int, b0: int, dur: int) -> CoarseOffset:
    """The refined peak of a cross-correlation ``c[m]`` (offset = R - m w)."""
    m = int(np.argmax(corr))
    mask = np.ones(corr.size, bool)
    mask[max(0, m - 2) : m + 3] = False
    bg = float(np.mean(corr[mask])) if mask.any() else 0.0
    sd = float(np.std(corr[mask])) if mask.any() else 1.0
    lo, hi = max(0, m - 1), min(corr.size, m + 2)
    wts = np.clip(corr[lo:hi] - bg, 0.0, None)
    m_ref = float(np.sum(wts * np.arange(lo, hi)) / wts.sum()) if wts.sum() > 0 else float(m)
    return CoarseOffset(
        offset_ps=r - m_ref * w,
        bin_ps=w,
        start_b_ps=b0,
        duration_ps=dur,
        peak_counts=float(corr[m]),
        background_counts=bg,
        significance=(float(corr[m]) - bg) / sd if sd > 0 else math.inf,
    )


@dataclass(frozen=True)
class CoarseClock:
    """Result of :func:`coarse_clock`: the best (offset, drift) hypothesis."""

    offset_ps: float  #: t_b - t_a at ``search.start_b_ps``
    drift_ppm: float  #: the drift hypothesis whose correlation peak was the most significant
    drift_step_ppm: float  #: spacing of the hypotheses (the drift is known to half of it)
    search: CoarseOffset  #: the FFT search of the winning hypothesis

    def model(self) -> ClockModel:
        """The clock model of the hypothesis, referenced at the searched chunk's start."""
        d = self.drift_ppm * 1e-6
        return ClockModel.from_slope(self.offset_ps, d / (1.0 + d), self.search.start_b_ps)


def coarse_clock(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    *,
    max_offset_ps: int,
    max_drift_ppm: float,
    duration_ps: int,
    bin_ps: int = 100_000,
    start_b_ps: int | None = None,
) -> CoarseClock:
    """Offset and drift together: :func:`coarse_offset` under a grid of drift hypotheses.

    A drift d smears the correlation peak of a chunk of duration D over d D, so the plain
    search needs bins of ~2 d_max D and its peak-to-noise ratio R_pair / sqrt(2 d_max r_a r_b)
    does not grow with D: at 10 ppm and ~4e5 tags/s per tagger it is ~3, too low. Here B's
    chunk is first corrected for each drift in a grid of step ``2 bin_ps / D`` over
    +-``max_drift_ppm`` (the residual smear is then at most one bin), and the most significant
    peak wins: the ratio becomes R_pair sqrt(D / (r_a r_b w)), e.g. ~14 for 0.1 s at 100 ns.
    Cost: one FFT of (D + 2 R) / w bins per hypothesis.
    """
    a = _sorted_tags(t_a_ps, "t_a_ps")
    b = _sorted_tags(t_b_ps, "t_b_ps")
    if a.size == 0 or b.size == 0:
        raise ValueError("t_a_ps/t_b_ps: both taggers need tags for a coarse search")
    dur = int(_positive(duration_ps, "duration_ps"))
    w = int(_positive(bin_ps, "bin_ps"))
    dmax = float(_positive(max_drift_ppm, "max_drift_ppm")) * 1e-6
    b0 = int(b[0]) if start_b_ps is None else int(start_b_ps)
    tb = b[(b >= b0) & (b < b0 + dur)]
    if tb.size == 0:
        raise ValueError(f"t_b_ps: no B tags in [{b0}, {b0 + dur}) ps")
    r = int(_positive(max_offset_ps, "max_offset_ps"))
    n1 = -(-dur // w)
    n2 = -(-(dur + 2 * r) // w) + 1
    length = sfft.next_fast_len(n1 + n2, real=True)
    if length > MAX_FFT_LENGTH:
        raise ValueError(
            f"bin_ps: {n1 + n2} bins for duration {dur} ps and max_offset {r} ps at {w} ps "
            f"exceed {MAX_FFT_LENGTH}; use a coarser bin_ps or a shorter duration_ps"
        )
    ta = a[(a >= b0 - r) & (a < b0 + dur + r)]
    if ta.size == 0:
        raise ValueError("t_a_ps: no A tags within max_offset_ps of the searched chunk")
    y_spec = sfft.rfft(np.bincount((ta - (b0 - r)) // w, minlength=n2).astype(np.float64), length)
    step = 2.0 * w / dur
    n_side = math.ceil(dmax / step)
    best: tuple[float, float] | None = None
    best_search: CoarseOffset | None = None
    for k in range(-n_side, n_side + 1):
        d = k * step
        s = d / (1.0 + d)
        corrected = tb - np.rint(s * (tb - b0).astype(np.float64)).astype(np.int64)
        corrected = corrected[(corrected >= b0) & (corrected < b0 + dur)]
        x = np.bincount((corrected - b0) // w, minlength=n1).astype(np.float64)
        corr = sfft.irfft(np.conj(sfft.rfft(x, length)) * y_spec, length)[: n2 - n1 + 1]
        found = _correlation_peak(corr, r, w, b0, dur)
        if best_search is None or found.significance > best_search.significance:
            best, best_search = (found.offset_ps, d), found
    assert best is not None and best_search is not None
    return CoarseClock(best[0], best[1] * 1e6, step * 1e6, best_search)


def refine_clock(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    model: ClockModel,
    *,
    half_window_ps: float,
    drift_span_ppm: float,
    drift_step_ppm: float,
    bin_ps: int,
) -> tuple[ClockModel, float]:
    """Refine a coarse model: residual histograms under a fine grid of drift corrections.

    For each slope correction in +-``drift_span_ppm`` (step ``drift_step_ppm``), every B tag
    is mapped with the corrected model and the A tags within +-``half_window_ps`` give
    residuals ``t_a - mapped``; the correction whose histogram (``bin_ps``) has the highest
    3-bin peak wins and the offset moves to the peak's centroid. Direct pair search, no FFT:
    cheap for a window of ~100 ns, where the FFT search would need 10^7 bins. Use it between
    :func:`coarse_clock` and :func:`track_process` (give the tracker a window of a few bins).
    Returns (refined model, peak significance (peak - background) / sqrt(peak)).
    """
    a = _sorted_tags(t_a_ps, "t_a_ps")
    b = _sorted_tags(t_b_ps, "t_b_ps")
    if a.size == 0 or b.size == 0:
        raise ValueError("t_a_ps/t_b_ps: both taggers need tags to refine the clock")
    hw = float(_positive(half_window_ps, "half_window_ps"))
    w = int(_positive(bin_ps, "bin_ps"))
    span = float(_positive(drift_span_ppm, "drift_span_ppm")) * 1e-6
    step = float(_positive(drift_step_ppm, "drift_step_ppm")) * 1e-6
    n_bins = max(3, math.ceil(2 * hw / w))
    ref = int(b[0])
    base = model.offset_at_ps(ref)
    best = (-math.inf, 0.0, 0.0, 0.0)  # (peak - background, slope, offset, significance)
    for k in range(-math.ceil(span / step), math.ceil(span / step) + 1):
        slope = model.slope + k * step
        mapped = b - np.rint(base + slope * (b - ref).astype(np.float64)).astype(np.int64)
        r, _ = _residuals(a, mapped, hw)
        total = r.size
        if total == 0:
            continue
        hist, edges = np.histogram(r, bins=n_bins, range=(-hw, hw))
        box = np.convolve(hist, np.ones(3), mode="same")
        m = int(np.argmax(box))
        bg = 3.0 * total / n_bins
        if box[m] - bg > best[0]:
            centre = 0.5 * (edges[m] + edges[m + 1])
            sel = np.abs(r - centre) <= 1.5 * w
            e = float(np.mean(r[sel])) if np.any(sel) else centre
            sig = (box[m] - bg) / math.sqrt(max(box[m], 1.0))
            best = (box[m] - bg, slope, base - e, sig)
    if not math.isfinite(best[0]):
        raise ValueError("t_a_ps/t_b_ps: no A tag within the window of any mapped B tag")
    return ClockModel.from_slope(best[2], best[1], ref), float(best[3])


# ---------------------------------------------------------------------------------------------
# Tracking


@dataclass(frozen=True)
class TrackerConfig:
    """Parameters of :func:`track_process` (all times in ps of B's clock)."""

    frame_ps: int = 50_000_000_000  #: frame length P (50 ms)
    min_window_ps: int = 2_000  #: +-half window once locked
    max_window_ps: int = 2_000_000  #: +-half window ceiling (acquisition, lost lock)
    memory_ps: int = 1_000_000_000_000  #: time constant of the drift regression (1 s)
    model_order: int = 2  #: offset polynomial: 1 = constant drift, 2 = drift with a rate
    n_bins: int = 64  #: residual histogram bins across the window
    min_significance: float = 5.0  #: background-subtracted peak in sigma for lock

    def __post_init__(self) -> None:
        for name in (
            "frame_ps",
            "min_window_ps",
            "max_window_ps",
            "memory_ps",
            "n_bins",
            "model_order",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.max_window_ps < self.min_window_ps:
            raise ValueError(
                f"max_window_ps: {self.max_window_ps} is below min_window_ps {self.min_window_ps}"
            )
        if self.frame_ps < 4 * self.max_window_ps:
            raise ValueError(
                f"frame_ps: {self.frame_ps} must be at least 4 x max_window_ps "
                f"({4 * self.max_window_ps})"
            )
        if self.model_order > 2:
            raise ValueError(f"model_order: expected 1 or 2, got {self.model_order}")
        if not self.min_significance > 0:
            raise ValueError(f"min_significance: expected > 0, got {self.min_significance}")


@dataclass(frozen=True)
class FrameReport:
    """What one tracking frame measured."""

    start_b_ps: int
    n_b: int  #: B tags in the frame
    n_candidates: int  #: (A, B) pairs within the window
    n_signal: float  #: background-subtracted peak pairs
    error_ps: float  #: model error e = mean(t_a - mapped t_b) of the peak
    width_ps: float  #: rms of the peak
    half_window_ps: float
    offset_ps: float  #: estimated t_b - t_a at the frame's peak time
    drift_ppm: float  #: drift estimate after this frame
    locked: bool


@dataclass(frozen=True, eq=False)
class TrackerState:
    """What :func:`track_process` carries between calls."""

    frame_start_ps: int | None  #: G_k on B's clock (None until B's first tag)
    ref_ps: int  #: reference time of offset_ps (= frame_start_ps once that is known)
    offset_ps: float  #: model offset o_k at ref_ps
    slope: float  #: model slope s_k within frame k
    drift_slope: float  #: regression slope beta (the drift estimate)
    half_window_ps: float
    peak_rms_ps: float
    reg: tuple[float, ...]  #: S_0..S_4, T_0..T_2 of the offset regression, u = (t - G_k) / P
    y_ref_ps: float | None  #: offsets enter the regression relative to this
    n_locked: int
    pending_a: I64
    pending_b: I64
    pending_b_ch: U8
    last_a_ps: int | None
    last_b_ps: int | None
    last_out_ps: int | None

    @classmethod
    def initial(
        cls,
        model: ClockModel,
        config: TrackerConfig,
        *,
        start_b_ps: int | None = None,
        half_window_ps: float | None = None,
    ) -> TrackerState:
        """Start tracking from ``model`` (e.g. :func:`coarse_offset` with drift 0).

        Frames start at ``start_b_ps`` (default: B's first tag); the first frame searches
        +-``half_window_ps`` (default ``config.max_window_ps``).
        """
        hw = float(config.max_window_ps if half_window_ps is None else half_window_ps)
        if not hw > 0:
            raise ValueError(f"half_window_ps: expected > 0, got {half_window_ps}")
        ref, offset = int(model.ref_ps), float(model.offset_ps)
        if start_b_ps is not None:
            offset += model.slope * (int(start_b_ps) - ref)
            ref = int(start_b_ps)
        return cls(
            frame_start_ps=None if start_b_ps is None else int(start_b_ps),
            ref_ps=ref,
            offset_ps=offset,
            slope=model.slope,
            drift_slope=model.slope,
            half_window_ps=hw,
            peak_rms_ps=hw / 8.0,
            reg=(0.0,) * 8,
            y_ref_ps=None,
            n_locked=0,
            pending_a=np.zeros(0, np.int64),
            pending_b=np.zeros(0, np.int64),
            pending_b_ch=np.zeros(0, np.uint8),
            last_a_ps=None,
            last_b_ps=None,
            last_out_ps=None,
        )

    @property
    def model(self) -> ClockModel:
        """The model of the current frame (reference: the frame start)."""
        return ClockModel.from_slope(self.offset_ps, self.slope, self.ref_ps)

    @property
    def drift_ppm(self) -> float:
        """Current drift estimate (ppm)."""
        return 1e6 * self.drift_slope / (1.0 - self.drift_slope)


@dataclass(frozen=True, eq=False)
class TrackResult:
    """Frames processed by one :func:`track_process` call and their mapped B tags."""

    frames: tuple[FrameReport, ...]
    t_b_in_a_ps: I64  #: B tags of those frames on A's clock (sorted)
    channel_b: U8  #: their channels
    model: ClockModel  #: the model of the next frame


def _residuals(a: I64, mapped: I64, half_window_ps: float) -> tuple[F64, I64]:
    """``t_a - mapped`` for every (A tag, mapped B tag) pair within +-half_window_ps, and the
    index of the B tag of each (sorted ``a``)."""
    hw = math.floor(half_window_ps)
    lo = np.searchsorted(a, mapped - hw, side="left")
    hi = np.searchsorted(a, mapped + hw, side="right")
    cnt = hi - lo
    total = int(cnt.sum())
    ib = np.repeat(np.arange(mapped.size), cnt)
    ia = np.repeat(lo, cnt) + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    return (a[ia] - mapped[ib]).astype(np.float64), ib


def _peak(r: F64, half_w: float, n_bins: int, rms_prev: float) -> tuple[float, float, float, float]:
    """(error, rms, n_signal, significance) of the residual peak within +-half_w."""
    if r.size == 0:
        return 0.0, rms_prev, 0.0, 0.0
    bw = 2.0 * half_w / n_bins
    hist, _ = np.histogram(r, bins=n_bins, range=(-half_w, half_w))
    sm = np.convolve(hist, np.ones(3), mode="same")
    c = -half_w + (int(np.argmax(sm)) + 0.5) * bw
    rad = max(1.5 * bw, 3.0 * min(rms_prev, half_w / 4))
    e, rms, n_sig, sig = c, rms_prev, 0.0, 0.0
    for _ in range(2):
        rad = min(rad, half_w)
        sel = np.abs(r - c) <= rad
        n_in = int(np.count_nonzero(sel))
        outside = 2.0 * half_w - 2.0 * rad
        dens = (r.size - n_in) / outside if outside > bw else 0.0
        nb_ = dens * 2.0 * rad
        n_sig = n_in - nb_
        if n_sig <= 0 or n_in == 0:
            return c, rms_prev, 0.0, 0.0
        rs = r[sel]
        e = (float(rs.sum()) - nb_ * c) / n_sig
        var = (float(np.sum((rs - e) ** 2)) - nb_ * (rad**2 / 3.0 + (c - e) ** 2)) / n_sig
        rms = math.sqrt(max(var, bw * bw / 12.0))
        sig = n_sig / math.sqrt(n_in)
        c = e
        rad = max(1.5 * bw, 3.0 * rms)
    return e, rms, n_sig, sig


def _shift(reg: tuple[float, ...], lam: float) -> tuple[float, ...]:
    """Decay the regression sums by lam and move their origin one frame later (u -> u - 1).

    reg = (S_0..S_4, T_0..T_2) with S_m = sum w u^m and T_m = sum w u^m y; binomial shift:
    sum w (u - 1)^m = sum_k C(m, k) (-1)^(m - k) S_k.
    """
    sw = [lam * v for v in reg[:5]]
    ty = [lam * v for v in reg[5:]]
    s_new = [sum(math.comb(m, k) * (-1) ** (m - k) * sw[k] for k in range(m + 1)) for m in range(5)]
    t_new = [sum(math.comb(m, k) * (-1) ** (m - k) * ty[k] for k in range(m + 1)) for m in range(3)]
    return (*s_new, *t_new)


def _solve(reg: tuple[float, ...], order: int) -> npt.NDArray[np.float64] | None:
    """Coefficients c of the weighted polynomial fit y = sum_k c_k u^k (degree ``order``, lowered
    if ill-conditioned), or None if not even a line can be fitted."""
    for deg in range(order, 0, -1):
        normal = np.array([[reg[r + c] for c in range(deg + 1)] for r in range(deg + 1)])
        rhs = np.array(reg[5 : 5 + deg + 1])
        if normal[0, 0] <= 0 or np.linalg.cond(normal) > 1e12:
            continue
        return np.linalg.solve(normal, rhs)
    return None


def track_process(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    state: TrackerState,
    config: TrackerConfig,
    *,
    channel_b: npt.ArrayLike | None = None,
    horizon_a_ps: int | None = None,
    horizon_b_ps: int | None = None,
    final: bool = False,
    sync_channels_b: Sequence[int] | None = None,
) -> tuple[TrackResult, TrackerState]:
    """Feed new tags of both taggers; process every complete frame; return them and the state.

    ``t_a_ps``/``t_b_ps`` are new sorted tags of A and B (either may be empty), each not
    before that tagger's previous batch. ``channel_b`` (default all 0) rides along with B's
    tags into the mapped output. ``sync_channels_b`` (default: all) restricts the residual
    histogram to B tags of those channels, e.g. the one B channel correlated with the A tags
    given, when other B channels would add peaks at other delays; every B tag is mapped.
    ``horizon_*_ps`` declare every earlier tag delivered (default: the last tag seen).
    ``final=True`` ends the stream: the remaining (partial) frames are processed too.
    """
    a_new = _sorted_tags(t_a_ps, "t_a_ps")
    b_new = _sorted_tags(t_b_ps, "t_b_ps")
    if channel_b is None:
        cb_new = np.zeros(b_new.size, np.uint8)
    else:
        cb = np.asarray(channel_b)
        if cb.shape != b_new.shape:
            raise ValueError(f"channel_b: expected {b_new.size} channels, got shape {cb.shape}")
        if cb.size and (cb.min() < 0 or cb.max() > 255):
            raise ValueError("channel_b: channels must be tagger inputs 0..255")
        cb_new = cb.astype(np.uint8)
    sync_lut: npt.NDArray[np.bool_] | None = None
    if sync_channels_b is not None:
        sync_lut = np.zeros(256, bool)
        for c in sync_channels_b:
            if not 0 <= int(c) <= 255:
                raise ValueError(f"sync_channels_b: channels must be 0..255, got {c!r}")
            sync_lut[int(c)] = True
    if a_new.size and state.last_a_ps is not None and a_new[0] < state.last_a_ps:
        raise ValueError(
            f"t_a_ps: batch starts at {int(a_new[0])} ps, before A's last tag or horizon "
            f"({state.last_a_ps} ps)"
        )
    if b_new.size and state.last_b_ps is not None and b_new[0] < state.last_b_ps:
        raise ValueError(
            f"t_b_ps: batch starts at {int(b_new[0])} ps, before B's last tag or horizon "
            f"({state.last_b_ps} ps)"
        )
    last_a = state.last_a_ps
    if a_new.size:
        last_a = int(a_new[-1])
    if horizon_a_ps is not None:
        last_a = int(horizon_a_ps) if last_a is None else max(last_a, int(horizon_a_ps))
    last_b = state.last_b_ps
    if b_new.size:
        last_b = int(b_new[-1])
    if horizon_b_ps is not None:
        last_b = int(horizon_b_ps) if last_b is None else max(last_b, int(horizon_b_ps))

    pa = np.concatenate([state.pending_a, a_new]) if a_new.size else state.pending_a
    pb = np.concatenate([state.pending_b, b_new]) if b_new.size else state.pending_b
    pbc = np.concatenate([state.pending_b_ch, cb_new]) if b_new.size else state.pending_b_ch

    g = state.frame_start_ps
    o, s = state.offset_ps, state.slope
    if g is None and pb.size:
        g = int(pb[0])
        o = o + s * (g - state.ref_ps)  # re-reference the initial model's offset to G_0
    if g is not None and pb.size and pb[0] < g:
        k = int(np.searchsorted(pb, g, side="left"))
        pb, pbc = pb[k:], pbc[k:]

    p = config.frame_ps
    lam = math.exp(-p / config.memory_ps)
    hw, rms_prev = state.half_window_ps, state.peak_rms_ps
    beta = state.drift_slope
    reg = state.reg
    y_ref = state.y_ref_ps
    n_locked = state.n_locked
    last_out = state.last_out_ps
    frames: list[FrameReport] = []
    out_t: list[I64] = []
    out_c: list[U8] = []

    while g is not None:
        end = g + p
        end_a = end - (o + s * p)  # mapped end of the frame on A's clock
        if not final:
            if last_b is None or last_b < end:
                break
            if last_a is None or last_a <= end_a + hw:
                break
        elif pb.size == 0:
            break
        kb = int(np.searchsorted(pb, end, side="left"))
        tb, cbf = pb[:kb], pbc[:kb]
        m = tb - np.rint(o + s * (tb - g).astype(np.float64)).astype(np.int64)
        if last_out is not None and m.size:
            m = np.maximum(m, last_out)
        use = slice(None) if sync_lut is None else np.flatnonzero(sync_lut[cbf])
        ms, tbs = m[use], tb[use]
        r, ib = _residuals(pa, ms, hw)
        total = r.size
        hw_used = hw
        e, rms, n_sig, sig = _peak(r, hw, config.n_bins, rms_prev)
        locked = sig >= config.min_significance and n_sig >= 3.0
        reg = _shift(reg, lam)
        y_obs = math.nan
        fit = None
        if locked:
            sel = np.abs(r - e) <= max(3.0 * rms, 2.0 * hw / config.n_bins)
            t_mean = float(np.mean(tbs[ib[sel]])) if np.any(sel) else g + 0.5 * p
            y_obs = o + s * (t_mean - g) - e
            if y_ref is None:
                y_ref = y_obs
            u = (t_mean - end) / p
            wgt = max(n_sig, 1.0) / (rms * rms)  # inverse variance of the centroid
            yy = y_obs - y_ref
            reg = (
                *(reg[k] + wgt * u**k for k in range(5)),
                *(reg[5 + k] + wgt * u**k * yy for k in range(3)),
            )
            n_locked += 1
            fit = _solve(reg, min(config.model_order, n_locked - 1))
            hw = min(
                max(4.0 * (abs(e) + 2.0 * rms), float(config.min_window_ps)),
                float(config.max_window_ps),
            )
            rms_prev = rms
        elif n_locked >= 2:
            fit = _solve(reg, min(config.model_order, n_locked - 1))
        if not locked:
            hw = min(2.0 * hw, float(config.max_window_ps))
        if fit is not None and y_ref is not None:
            beta = float(fit[1]) / p  # slope of the fitted offset at the next frame's start
            target = y_ref + float(np.sum(fit))  # the fit at the next frame's end (u = 1)
        elif locked:
            target = y_obs + beta * (end + p - t_mean)
        else:
            target = o + s * 2 * p  # coast
        o_next = o + s * p
        s_next = (target - o_next) / p
        frames.append(
            FrameReport(
                start_b_ps=int(g),
                n_b=int(tb.size),
                n_candidates=total,
                n_signal=float(n_sig),
                error_ps=float(e) if locked else math.nan,
                width_ps=float(rms) if locked else math.nan,
                half_window_ps=float(hw_used),
                offset_ps=float(y_obs),
                drift_ppm=1e6 * beta / (1.0 - beta),
                locked=bool(locked),
            )
        )
        out_t.append(m)
        out_c.append(cbf)
        if m.size:
            last_out = int(m[-1])
        pb, pbc = pb[kb:], pbc[kb:]
        o, s, g = o_next, s_next, end
        keep_from = g - o - config.max_window_ps - 1  # A tags the next frame may need
        ka = int(np.searchsorted(pa, keep_from, side="left"))
        pa = pa[ka:]

    new_state = TrackerState(
        frame_start_ps=g,
        ref_ps=g if g is not None else state.ref_ps,
        offset_ps=o,
        slope=s,
        drift_slope=beta,
        half_window_ps=hw,
        peak_rms_ps=rms_prev,
        reg=tuple(reg),  # type: ignore[arg-type]
        y_ref_ps=y_ref,
        n_locked=n_locked,
        pending_a=pa,
        pending_b=pb,
        pending_b_ch=pbc,
        last_a_ps=last_a,
        last_b_ps=last_b,
        last_out_ps=last_out,
    )
    result = TrackResult(
        frames=tuple(frames),
        t_b_in_a_ps=np.concatenate(out_t) if out_t else np.zeros(0, np.int64),
        channel_b=np.concatenate(out_c) if out_c else np.zeros(0, np.uint8),
        model=new_state.model,
    )
    return result, new_state


# ---------------------------------------------------------------------------------------------
# Batch estimate


@dataclass(frozen=True, eq=False)
class ClockEstimate:
    """Result of :func:`estimate_clock`."""

    model: ClockModel  #: one linear model over the whole span (least squares)
    coarse: CoarseOffset
    frames: tuple[FrameReport, ...]
    n_pairs: int  #: pairs used in the final fit
    residual_rms_ps: float
    tracker_drift_ppm: float  #: the tracker's own final drift estimate


def _match(a: I64, m: I64, half_window_ps: float) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Nearest A tag to each mapped B tag, and whether it is within the window."""
    k = np.clip(np.searchsorted(a, m), 1, a.size - 1)
    near = a[k]
    left = a[k - 1]
    near = np.where(np.abs(left - m) <= np.abs(near - m), left, near)
    return near, np.abs(near - m) <= half_window_ps


def _fit_line(
    b: I64, y: F64, sel: npt.NDArray[np.bool_], clip_sigma: float, iterations: int
) -> tuple[ClockModel, int, float]:
    """Iteratively clipped least-squares line y = o + s (b - b[0]) through selected offsets."""
    if np.count_nonzero(sel) < 3:
        raise ValueError("half_window_ps: fewer than 3 pairs matched; the model is too far off")
    ref = int(b[0])
    scale = max(float(b[-1] - ref), 1.0)
    x = (b - ref).astype(np.float64) / scale
    y0 = float(np.median(y[sel]))
    dy = y - y0
    coef = np.zeros(2)
    rms = 0.0
    for _ in range(max(1, iterations)):
        design = np.stack([np.ones(np.count_nonzero(sel)), x[sel]], axis=1)
        coef, *_ = np.linalg.lstsq(design, dy[sel], rcond=None)
        resid = dy - (coef[0] + coef[1] * x)
        rms = float(np.sqrt(np.mean(resid[sel] ** 2)))
        new_sel = sel & (np.abs(resid) <= max(clip_sigma * rms, 1.0))
        if np.count_nonzero(new_sel) < 3 or np.array_equal(new_sel, sel):
            break
        sel = new_sel
    model = ClockModel.from_slope(y0 + float(coef[0]), float(coef[1]) / scale, ref)
    return model, int(np.count_nonzero(sel)), rms


def fit_clock(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    model: ClockModel,
    *,
    half_window_ps: float,
    clip_sigma: float = 4.0,
    iterations: int = 5,
) -> tuple[ClockModel, int, float]:
    """Least-squares line through the offsets of the pairs that ``model`` matches.

    Each B tag is paired with the nearest A tag within +-``half_window_ps`` of its mapped time;
    the offsets t_b - t_a are fitted with a line against t_b, clipping at ``clip_sigma``
    times the rms and iterating. Returns (model referenced at B's first tag, pairs used,
    rms residual in ps).
    """
    a = _sorted_tags(t_a_ps, "t_a_ps")
    b = _sorted_tags(t_b_ps, "t_b_ps")
    hw = _positive(half_window_ps, "half_window_ps")
    if a.size < 2 or b.size < 2:
        raise ValueError("t_a_ps/t_b_ps: both taggers need at least 2 tags")
    near, sel = _match(a, model.to_a_ps(b), hw)
    return _fit_line(b, (b - near).astype(np.float64), sel, clip_sigma, iterations)


def estimate_clock(
    t_a_ps: npt.ArrayLike,
    t_b_ps: npt.ArrayLike,
    *,
    max_offset_ps: int,
    max_drift_ppm: float = 10.0,
    chunk_ps: int | None = None,
    tracker: TrackerConfig | None = None,
) -> ClockEstimate:
    """Offset and drift of B's clock against A's from correlated tags (whole recording).

    Coarse FFT search on B's first ``chunk_ps`` (default min(span, 50 ms)) over
    +-``max_offset_ps``, then tracking over all the data, then one least-squares line.
    """
    a = _sorted_tags(t_a_ps, "t_a_ps")
    b = _sorted_tags(t_b_ps, "t_b_ps")
    if a.size < 2 or b.size < 2:
        raise ValueError("t_a_ps/t_b_ps: both taggers need tags")
    dmax = _positive(max_drift_ppm, "max_drift_ppm") * 1e-6
    span = int(b[-1] - b[0]) + 1
    chunk = min(span, 50_000_000_000) if chunk_ps is None else int(_positive(chunk_ps, "chunk_ps"))
    w = max(1_000, math.ceil(2.0 * dmax * chunk))
    coarse = coarse_offset(a, b, max_offset_ps=max_offset_ps, bin_ps=w, duration_ps=chunk)
    frame = chunk
    acq = int(w + 2.0 * dmax * frame) + 1
    if tracker is None:
        tracker = TrackerConfig(
            frame_ps=max(frame, 4 * acq), max_window_ps=acq, min_window_ps=min(2_000, acq)
        )
    ref = int(b[0]) + chunk // 2
    st = TrackerState.initial(
        ClockModel(coarse.offset_ps, 0.0, ref), tracker, start_b_ps=int(b[0]), half_window_ps=acq
    )
    res, st = track_process(a, b, st, tracker, final=True)
    locked = [f for f in res.frames if f.locked]
    if not locked:
        raise ValueError(
            "t_a_ps/t_b_ps: the tracker never locked; check max_offset_ps / max_drift_ppm "
            "or give more data"
        )
    # one line through the offsets of the pairs matched by the tracked (piecewise) mapping
    widths = [f.width_ps for f in locked[len(locked) // 2 :]]
    hw = max(6.0 * float(np.median(widths)), 200.0)
    near, sel = _match(a, res.t_b_in_a_ps, hw)
    model, n, rms = _fit_line(b, (b - near).astype(np.float64), sel, 4.0, 5)
    # re-match every B tag with that line (also those of the acquisition frames) and refit
    model, n, rms = fit_clock(a, b, model, half_window_ps=max(6.0 * rms, 200.0))
    return ClockEstimate(model, coarse, res.frames, n, rms, st.drift_ppm)

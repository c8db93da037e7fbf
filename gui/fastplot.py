"""Fast plots for million-point streaming traces: ring buffer, clip to view, per-pixel peaks.

A live trace (unwrapped phase vs time, a vibration waveform, a spectrum) may hold 10**6 samples
or more, while the screen has ~10**3 pixel columns. Drawing every sample costs a QPainterPath of
10**6 vertices per frame (~0.1 s each on one core, see ``labctl bench gui``); drawing a
subsequence that keeps, per pixel column, the column's minimum and maximum gives the same picture
(every column is painted from its lowest to its highest value, so spikes stay visible) with at
most a few thousand vertices.

Pieces:

* :class:`TraceBuffer` -- a ring buffer of (x, y) float64 samples. It is stored "doubled"
  (2 x capacity slots; when the end is reached the newest ``capacity - n`` samples move to the
  front), so the samples are always one contiguous, ordered slice: :attr:`TraceBuffer.x` /
  :attr:`TraceBuffer.y` are views, never copies, and an append costs O(n) amortised. Memory:
  32 bytes per sample of capacity (32 MB for a 10**6-point trace).
* :func:`visible_range` and :func:`peak_decimate` -- clip to the view (binary search on the
  sorted x, one neighbour kept on each side so the line reaches the plot's edges) and reduce to
  at most 3 samples per pixel column in one pass (a Numba kernel): the column's minimum and
  maximum in their order of occurrence, plus its first non-finite sample if there is one (a gap
  stays a gap). The output is a subsequence of the input (original x and y values, nothing
  interpolated), and for every column, every finite sample of that column lies between the
  smallest and largest drawn value of the column.
* :class:`ColumnGrid` and :class:`ColumnDecimator` -- the same reduction, incremental: the
  pixel columns are fixed in x (column k covers [origin + k dx, origin + (k+1) dx), dx a
  little under a pixel) and each column's min/max/first-gap indices are cached, so a frame of
  a scrolling trace processes only the samples appended since the last frame, the columns
  that scrolled in and the column of the oldest sample (when samples left the ring); every
  column is recomputed only on zoom, on a resize beyond the grid's tolerance or when the
  samples are replaced. :func:`decimate_on_grid` is the full recomputation it equals.
* :class:`TickGrid` -- grid lines at the axes' ticks, opaque, one ``drawLines`` per level.
* :class:`TracePlot` -- a ``pyqtgraph.PlotWidget`` showing one or more traces from
  :class:`TraceBuffer` s; :meth:`TracePlot.refresh` redraws what changed (called by a timer, see
  :meth:`TracePlot.start_auto_refresh`, and after a zoom/pan/resize). It follows the newest data
  (the whole buffer, or the last ``window_s`` seconds) until the user zooms or pans; the
  view box's "A" (auto-range) button returns to following. Time is drawn relative to the
  newest sample (roll mode) so the axes stay still while data stream in, and the y range
  moves with hysteresis: pyqtgraph regenerating axis ticks every frame costs more than the
  decimated curves (``labctl bench gui``).
* :class:`SpectrumPlot` -- the same for spectra and PSDs (x in Hz, log y by default) with
  :meth:`SpectrumPlot.mark_band` to shade a frequency band (a node's FDM carrier band).

Why not pyqtgraph's own ``PlotDataItem.setDownsampling(auto=True, method="peak")`` +
``setClipToView(True)``: ``labctl bench gui`` measures both in the same run. pyqtgraph's peak
mode (0.14) cuts the samples into chunks of a fixed *count* (it assumes uniform x spacing, so a
gap in time skews its columns), drops the last ``len % ds`` samples (in a streaming trace: the
newest ones), does not clip while x auto-range is on (the usual "show everything" live view),
and recomputes the full data bounds (min/max over all 10**6 samples) on every ``setData``. Our
columns are pixel columns in x, every sample belongs to one, and the work per frame is
proportional to the samples *appended* since the last frame (:class:`ColumnDecimator`).

Threading: these are Qt widgets; call everything (including :meth:`TracePlot.append`) on the
GUI thread. Acquisition/DSP threads hand their arrays over through a queued Qt signal or a
queue drained by a GUI timer; :meth:`TracePlot.append` only copies into the buffer (cheap), the
drawing happens at most once per refresh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import pyqtgraph as pg
from numpy.typing import ArrayLike, NDArray
from PySide6 import QtCore, QtWidgets

FloatArray = NDArray[np.float64]

#: default refresh period of :meth:`TracePlot.start_auto_refresh`: 60 frames/s, a common
#: display refresh rate; a refresh with nothing new costs a few microseconds.
DEFAULT_REFRESH_PERIOD_S = 1.0 / 30.0


#: y pad of :class:`TracePlot`'s automatic y range, as a fraction of the data's span on each
#: side. A drifting phase (a pump laser's slow drift: tens of rad/s, physics.md section 2)
#: leaves a 5 % pad within a frame or two; with 15 % the range, its axis and its grid are
#: regenerated every ~10 frames instead (``labctl bench gui``: the re-ranging, not the
#: traces, was then the largest cost), and the data still fill >= 1/1.3 of the height.
Y_PAD_FRACTION = 0.15


# ---------------------------------------------------------------------------------------------
# Ring buffer


class TraceBuffer:
    """A ring buffer of ``capacity`` samples (x, y), float64, x non-decreasing.

    ``append`` keeps the newest ``capacity`` samples. ``x`` and ``y`` are read-only views of
    the samples in order (oldest first), valid until the next ``append``/``set_data``/
    ``clear``. ``version`` increases on every change (plots redraw when it moved).
    ``name`` only labels error messages.

    Every sample has an absolute index, counted from the first sample appended since the last
    ``set_data``/``clear``: ``x[i]`` is sample ``start_index + i`` and ``end_index`` is the
    index the next appended sample gets. ``epoch`` increases when the samples are replaced
    (``set_data``, ``clear``), i.e. when the absolute indices restart; incremental consumers
    (:class:`ColumnDecimator`) key their caches on (``epoch``, absolute index).
    """

    def __init__(self, capacity: int, *, name: str = "trace") -> None:
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"{name}: capacity: got {capacity!r}, expected an integer >= 1")
        self.name = name
        self._capacity = int(capacity)
        self._x = np.empty(2 * self._capacity, dtype=np.float64)
        self._y = np.empty(2 * self._capacity, dtype=np.float64)
        self._start = 0
        self._end = 0
        self._dropped = 0  # absolute index of the sample at slot 0 (samples slid out before it)
        self.version = 0
        self.epoch = 0

    @property
    def start_index(self) -> int:
        """Absolute index of the oldest sample kept (``x[0]``)."""
        return self._dropped + self._start

    @property
    def end_index(self) -> int:
        """Absolute index of the next sample to be appended (one past ``x[-1]``)."""
        return self._dropped + self._end

    @property
    def capacity(self) -> int:
        """Most samples kept."""
        return self._capacity

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def x(self) -> FloatArray:
        """The x values (e.g. time, s), oldest first; a read-only view."""
        v = self._x[self._start : self._end]
        v.flags.writeable = False
        return v

    @property
    def y(self) -> FloatArray:
        """The y values, oldest first; a read-only view."""
        v = self._y[self._start : self._end]
        v.flags.writeable = False
        return v

    def clear(self) -> None:
        """Forget every sample."""
        self._start = self._end = self._dropped = 0
        self.version += 1
        self.epoch += 1

    def _checked(self, x: ArrayLike, y: ArrayLike, what: str) -> tuple[FloatArray, FloatArray]:
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.ndim != 1 or ya.ndim != 1 or xa.shape != ya.shape:
            raise ValueError(
                f"{self.name}: {what}: x and y must be 1-D of the same length, got shapes "
                f"{xa.shape} and {ya.shape}"
            )
        if xa.size and not np.all(np.isfinite(xa)):
            bad = int(np.flatnonzero(~np.isfinite(xa))[0])
            raise ValueError(f"{self.name}: {what}: x[{bad}] = {xa[bad]} is not finite")
        if xa.size > 1:
            steps = np.diff(xa)
            if np.any(steps < 0):
                bad = int(np.flatnonzero(steps < 0)[0])
                raise ValueError(
                    f"{self.name}: {what}: x must be non-decreasing, got x[{bad}] = {xa[bad]} "
                    f"> x[{bad + 1}] = {xa[bad + 1]}"
                )
        return xa, ya

    def append(self, x: ArrayLike, y: ArrayLike) -> None:
        """Append samples (x non-decreasing and not before the last sample); the oldest
        samples beyond ``capacity`` are dropped."""
        xa, ya = self._checked(x, y, "append")
        n = xa.size
        if n == 0:
            return
        if len(self) and xa[0] < self._x[self._end - 1]:
            raise ValueError(
                f"{self.name}: append: x[0] = {xa[0]} is before the last sample's x = "
                f"{self._x[self._end - 1]}"
            )
        cap = self._capacity
        if n >= cap:
            self._dropped = self.end_index + n - cap
            self._x[:cap] = xa[n - cap :]
            self._y[:cap] = ya[n - cap :]
            self._start, self._end = 0, cap
        else:
            if self._end + n > 2 * cap:  # slide the newest samples that stay to the front
                keep = min(len(self), cap - n)
                src = slice(self._end - keep, self._end)
                self._dropped += self._end - keep
                self._x[:keep] = self._x[src]
                self._y[:keep] = self._y[src]
                self._start, self._end = 0, keep
            self._x[self._end : self._end + n] = xa
            self._y[self._end : self._end + n] = ya
            self._end += n
            self._start = max(self._start, self._end - cap)
        self.version += 1

    def set_data(self, x: ArrayLike, y: ArrayLike) -> None:
        """Replace every sample (e.g. a new spectrum); grows the capacity if needed."""
        xa, ya = self._checked(x, y, "set_data")
        if xa.size > self._capacity:
            self._capacity = int(xa.size)
            self._x = np.empty(2 * self._capacity, dtype=np.float64)
            self._y = np.empty(2 * self._capacity, dtype=np.float64)
        self._x[: xa.size] = xa
        self._y[: ya.size] = ya
        self._start, self._end, self._dropped = 0, int(xa.size), 0
        self.version += 1
        self.epoch += 1


# ---------------------------------------------------------------------------------------------
# Clip and decimate


def visible_range(x: FloatArray, x_min: float, x_max: float) -> tuple[int, int]:
    """Index range [lo, hi) of the sorted ``x`` to draw for the view [x_min, x_max]: every
    sample inside it plus one neighbour on each side (so the line reaches the edges)."""
    lo = int(np.searchsorted(x, x_min, side="left"))
    hi = int(np.searchsorted(x, x_max, side="right"))
    return max(lo - 1, 0), min(hi + 1, x.size)


@nb.njit(cache=True, nogil=True, inline="always")
def _emit(
    x: FloatArray, y: FloatArray, i: int, out_x: FloatArray, out_y: FloatArray, k: int
) -> int:
    out_x[k] = x[i]
    out_y[k] = y[i]
    return k + 1


@nb.njit(cache=True, nogil=True, inline="always")
def _flush_column(
    x: FloatArray,
    y: FloatArray,
    i_min: int,
    i_max: int,
    i_nan: int,
    out_x: FloatArray,
    out_y: FloatArray,
    k: int,
) -> int:
    """Emit the column's min, max and first non-finite sample (each once, in index order)."""
    a, b, c = i_min, i_max, i_nan  # -1 = absent
    if a > b:
        a, b = b, a
    if b > c:
        b, c = c, b
    if a > b:
        a, b = b, a
    last = -1
    for i in (a, b, c):
        if i >= 0 and i != last:
            k = _emit(x, y, i, out_x, out_y, k)
            last = i
    return k


@nb.njit(cache=True, nogil=True, inline="always")
def _column(xi: float, c0: float, scale: float, log_x: bool, n_columns: int) -> int:
    c = int(((math.log10(xi) if log_x else xi) - c0) * scale)
    return min(max(c, 0), n_columns - 1)


@nb.njit(cache=True)
def _peak_kernel(
    x: FloatArray,
    y: FloatArray,
    lo: int,
    hi: int,
    in_lo: int,
    in_hi: int,
    x_min: float,
    x_max: float,
    n_columns: int,
    log_x: bool,
    out_x: FloatArray,
    out_y: FloatArray,
) -> int:
    """x[lo:hi] sorted, x[in_lo:in_hi] the samples inside [x_min, x_max]; returns the number
    of samples written to out_*.

    Each column's end is found by binary search on the column formula (x sorted: the column
    is non-decreasing in the index), then one tight min/max pass over the column's y.
    Not ``nogil``: it runs on the GUI thread, and releasing the GIL for ~2 ms only lets a busy
    DSP thread take it, after which the GUI thread waits up to a switch interval (5 ms) for it.
    """
    if log_x:
        c0 = math.log10(x_min)
        scale = n_columns / (math.log10(x_max) - c0)
    else:
        c0 = x_min
        scale = n_columns / (x_max - x_min)
    k = 0
    for i in range(lo, in_lo):  # neighbour left of the view: drawn as it is
        k = _emit(x, y, i, out_x, out_y, k)
    i = in_lo
    while i < in_hi:
        c = _column(x[i], c0, scale, log_x, n_columns)
        a, b = i + 1, in_hi  # first index whose column is > c
        while a < b:
            m = (a + b) >> 1
            if _column(x[m], c0, scale, log_x, n_columns) > c:
                b = m
            else:
                a = m + 1
        i_min = i_max = i_nan = -1
        y_min = np.inf
        y_max = -np.inf
        for j in range(i, a):
            v = y[j]
            if math.isfinite(v):
                if v < y_min:
                    y_min = v
                    i_min = j
                if v > y_max:
                    y_max = v
                    i_max = j
            elif i_nan < 0:
                i_nan = j
        k = _flush_column(x, y, i_min, i_max, i_nan, out_x, out_y, k)
        i = a
    for i in range(in_hi, hi):  # neighbour right of the view
        k = _emit(x, y, i, out_x, out_y, k)
    return k


def column_index(
    x: ArrayLike, x_min: float, x_max: float, n_columns: int, *, log_x: bool = False
) -> NDArray[np.int64]:
    """The pixel column (0 .. n_columns-1) of each x in [x_min, x_max], as the decimation
    assigns it: ``floor((x - x_min) * n_columns / (x_max - x_min))`` (log10 of each for a log
    axis), x == x_max in the last column."""
    xa = np.asarray(x, dtype=np.float64)
    if log_x:
        c0 = math.log10(x_min)
        scale = n_columns / (math.log10(x_max) - c0)
        u = np.array([math.log10(v) for v in xa.ravel()], dtype=np.float64).reshape(xa.shape)
    else:
        c0, scale, u = x_min, n_columns / (x_max - x_min), xa
    return np.clip(((u - c0) * scale).astype(np.int64), 0, n_columns - 1)


def peak_decimate(
    x: ArrayLike,
    y: ArrayLike,
    x_min: float,
    x_max: float,
    n_columns: int,
    *,
    log_x: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """Samples to draw for the view [x_min, x_max] on ``n_columns`` pixel columns.

    ``x`` must be sorted (non-decreasing). Clips to the view (:func:`visible_range`); if more
    than ``2 * n_columns`` samples remain, keeps per column its minimum and maximum (in their
    order) and its first non-finite sample, and the two neighbours outside the view as they are.
    ``log_x``: columns of equal width in log10(x) (x_min > 0). Returns new float64 arrays (a
    subsequence of the input).
    """
    xa = np.ascontiguousarray(x, dtype=np.float64)
    ya = np.ascontiguousarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(
            f"peak_decimate: x and y must be 1-D of the same length, got {xa.shape} and {ya.shape}"
        )
    n_columns = int(n_columns)
    if n_columns < 1:
        raise ValueError(f"peak_decimate: n_columns: got {n_columns}, expected >= 1")
    if not (math.isfinite(x_min) and math.isfinite(x_max) and x_max > x_min):
        raise ValueError(
            f"peak_decimate: view: got x_min = {x_min}, x_max = {x_max}, expected finite "
            "x_min < x_max"
        )
    if log_x and x_min <= 0:
        raise ValueError(f"peak_decimate: log x view needs x_min > 0, got {x_min}")
    in_lo = int(np.searchsorted(xa, x_min, side="left"))
    in_hi = int(np.searchsorted(xa, x_max, side="right"))
    lo, hi = max(in_lo - 1, 0), min(in_hi + 1, xa.size)
    if hi - lo <= 2 * n_columns:
        return xa[lo:hi].copy(), ya[lo:hi].copy()
    out_x = np.empty(3 * n_columns + 2, dtype=np.float64)
    out_y = np.empty(3 * n_columns + 2, dtype=np.float64)
    k = _peak_kernel(
        xa, ya, lo, hi, in_lo, in_hi, float(x_min), float(x_max), n_columns, log_x, out_x, out_y
    )
    return out_x[:k], out_y[:k]


# ---------------------------------------------------------------------------------------------
# Incremental decimation on a column grid fixed in x

#: column width of a new grid, in pixels: a little under one pixel, so that the view's width
#: may shrink by ~5 % (a stream with irregular timestamps, a few pixels less after a resize)
#: before the columns become wider than a pixel and the grid must be rebuilt.
GRID_NEW_COLUMN_PX = 0.95
#: a grid is kept while its columns are between this and 1 pixel wide. Below, a stream that
#: fills its buffer (the view widens) would draw ever more vertices per pixel: at 0.75 px at
#: most 4/3 x 3 vertices per pixel column. The band [0.75, 1] makes a filling 10**6-sample
#: buffer rebuild ~log(10**6) / log(0.95 / 0.75) = 58 times, each rebuild one pass.
GRID_MIN_COLUMN_PX = 0.75

_COL_LOW = -(2**62)  # column of x <= 0 on a log axis: left of every column
_COL_CLAMP = 2.0**61  # columns beyond +- this are clamped (a view absurdly far from the grid)


@dataclass(frozen=True)
class ColumnGrid:
    """Pixel columns fixed in x: column ``k`` covers axis units
    ``[origin + k / scale, origin + (k + 1) / scale)``, axis units being x (or log10 x with
    ``log_x``). ``k`` is any integer (negative left of ``origin``).

    A sample's column is ``floor((u - origin) * scale)`` in float64, computed the same way by
    the Numba kernels and by :meth:`columns`, so a numpy reference can recompute it exactly.
    """

    origin: float
    scale: float  # columns per axis unit
    log_x: bool = False

    @property
    def width(self) -> float:
        """Column width in axis units (x, or decades with ``log_x``)."""
        return 1.0 / self.scale

    def columns(self, x: ArrayLike) -> NDArray[np.int64]:
        """The column of each x (``log_x``: x <= 0 gets a column left of every other)."""
        xa = np.asarray(x, dtype=np.float64).ravel()
        if self.log_x:  # math.log10: the libm function the kernels call (numpy's may differ)
            u = np.array([math.log10(v) if v > 0 else -math.inf for v in xa], dtype=np.float64)
        else:
            u = xa
        with np.errstate(invalid="ignore"):
            f = np.floor((u - self.origin) * self.scale)
        f = np.where(np.isnan(f) | (f < -_COL_CLAMP), float(_COL_LOW), np.minimum(f, _COL_CLAMP))
        return f.astype(np.int64)

    def column_range(self, x_min: float, x_max: float) -> tuple[int, int]:
        """Columns [k_lo, k_hi) overlapping the view [x_min, x_max] (x_max's column included)."""
        c = self.columns([x_min, x_max])
        return int(c[0]), int(c[1]) + 1

    def column_start(self, k: int) -> float:
        """x where column k starts."""
        u = self.origin + k / self.scale
        return 10.0**u if self.log_x else u

    @staticmethod
    def for_view(x_min: float, x_max: float, n_columns: int, *, log_x: bool = False) -> ColumnGrid:
        """A new grid for the view: anchored at ``x_min``, columns ``GRID_NEW_COLUMN_PX`` of a
        pixel wide."""
        u0, u1 = (math.log10(x_min), math.log10(x_max)) if log_x else (x_min, x_max)
        return ColumnGrid(u0, n_columns / (GRID_NEW_COLUMN_PX * (u1 - u0)), log_x)

    def fits(self, x_min: float, x_max: float, n_columns: int) -> bool:
        """True if the columns are between ``GRID_MIN_COLUMN_PX`` and 1 pixel wide for this
        view, and the view's column numbers stay small enough to be exact."""
        u0, u1 = (math.log10(x_min), math.log10(x_max)) if self.log_x else (x_min, x_max)
        column_px = n_columns / ((u1 - u0) * self.scale)
        if not GRID_MIN_COLUMN_PX <= column_px <= 1.0:
            return False
        k_lo, k_hi = self.column_range(x_min, x_max)
        return k_lo > -(2**50) and k_hi < 2**50


@nb.njit(cache=True, inline="always")
def _col(xi: float, origin: float, scale: float, log_x: bool) -> int:
    if log_x:
        if not xi > 0:
            return _COL_LOW
        u = math.log10(xi)
    else:
        u = xi
    f = np.floor((u - origin) * scale)
    if f < -_COL_CLAMP:
        return _COL_LOW
    if f > _COL_CLAMP:
        f = _COL_CLAMP
    return int(f)


@nb.njit(cache=True, inline="always")
def _first_col_at_least(
    x: FloatArray, lo: int, hi: int, k: int, origin: float, scale: float, log_x: bool
) -> int:
    """First index i in [lo, hi) with column(x[i]) >= k (hi if none); x sorted."""
    a, b = lo, hi
    while a < b:
        m = (a + b) >> 1
        if _col(x[m], origin, scale, log_x) < k:
            a = m + 1
        else:
            b = m
    return a


@nb.njit(cache=True)
def _accumulate(
    x: FloatArray,
    y: FloatArray,
    lo: int,
    hi: int,
    base: int,
    origin: float,
    scale: float,
    log_x: bool,
    ka: int,
    k_lo: int,
    k_hi: int,
    i_min: NDArray[np.int64],
    i_max: NDArray[np.int64],
    i_nan: NDArray[np.int64],
) -> int:
    """Merge the samples of x[lo:hi] whose column is in [k_lo, k_hi) into the per-column
    statistics (array slot = column - ka): index of the first minimum, of the first maximum
    and of the first non-finite y, as absolute indices (buffer index + base), -1 = none.

    Samples are visited in index order with strict comparisons, so merging new samples into
    a column gives exactly what one pass over all of the column's samples gives. Each
    column's end is found by binary search (x sorted: the column is non-decreasing in the
    index), then one tight pass over its y. Returns the number of samples visited.
    Not ``nogil``: it runs on the GUI thread, and releasing the GIL only lets a busy DSP
    thread take it, after which the GUI thread waits up to a switch interval for it.
    """
    i = _first_col_at_least(x, lo, hi, k_lo, origin, scale, log_x)
    end = _first_col_at_least(x, i, hi, k_hi, origin, scale, log_x)
    visited = end - i
    while i < end:
        c = _col(x[i], origin, scale, log_x)
        a = _first_col_at_least(x, i + 1, end, c + 1, origin, scale, log_x)
        j = c - ka
        mn, mx, nn = i_min[j], i_max[j], i_nan[j]
        y_mn = y[mn - base] if mn >= 0 else np.inf
        y_mx = y[mx - base] if mx >= 0 else -np.inf
        for s in range(i, a):
            v = y[s]
            if math.isfinite(v):
                if v < y_mn:
                    y_mn = v
                    mn = s + base
                if v > y_mx:
                    y_mx = v
                    mx = s + base
            elif nn < 0:
                nn = s + base
        i_min[j], i_max[j], i_nan[j] = mn, mx, nn
        i = a
    return visited


@nb.njit(cache=True)
def _emit_columns(
    x: FloatArray,
    y: FloatArray,
    base: int,
    i_min: NDArray[np.int64],
    i_max: NDArray[np.int64],
    i_nan: NDArray[np.int64],
    left: int,
    right: int,
    out_x: FloatArray,
    out_y: FloatArray,
) -> int:
    """Write the left neighbour (buffer index, -1 = none), each column's min, max and first
    non-finite sample (each once, in index order), the right neighbour; returns the count."""
    k = 0
    if left >= 0:
        k = _emit(x, y, left, out_x, out_y, k)
    for j in range(i_min.size):
        a, b, c = i_min[j], i_max[j], i_nan[j]
        if a < 0 and b < 0 and c < 0:
            continue
        a = a - base if a >= 0 else -1
        b = b - base if b >= 0 else -1
        c = c - base if c >= 0 else -1
        k = _flush_column(x, y, a, b, c, out_x, out_y, k)
    if right >= 0:
        k = _emit(x, y, right, out_x, out_y, k)
    return k


class ColumnDecimator:
    """Per-column min/max of one streaming trace, updated incrementally frame to frame.

    The columns are a :class:`ColumnGrid` fixed in x (not in the view), chosen for the view
    and pixel width (:meth:`ColumnGrid.for_view`) and kept while it :meth:`~ColumnGrid.fits`.
    Per column the decimator caches the absolute indices of the first minimum, first maximum
    and first non-finite sample. A frame then costs:

    * the samples appended since the last update (merged into the columns they fall in);
    * columns that scrolled out of the view: dropped; columns that scrolled in: computed from
      the buffer (only the samples in them);
    * the column holding the buffer's oldest sample, recomputed when samples dropped out of
      the ring buffer (a dropped sample may have been its minimum or maximum);
    * one pass over the cached columns to emit at most 3 samples each.

    It recomputes every column (one pass over the visible samples) only when the grid no
    longer fits the view (zoom, a resize by more than the grid's tolerance, a buffer that is
    still filling up and widens the view) or the buffer's samples were replaced
    (``set_data``, ``clear``: a new :attr:`TraceBuffer.epoch`).

    The output equals :func:`decimate_on_grid` on the buffer's current samples with the same
    grid (a full recomputation): the columns overlapping the view, each as its minimum,
    maximum and first non-finite sample in index order, plus one neighbour sample on each
    side (so the line reaches the view's edges); or, when the columns hold at most
    ``2 * n_columns`` samples, those samples and the two neighbours as they are.

    Counters for tests and benchmarks: :attr:`full_recomputes` (grid or epoch changes) and
    :attr:`last_visited` (samples visited by the last update).
    """

    def __init__(self) -> None:
        self.grid: ColumnGrid | None = None
        self.full_recomputes = 0
        self.last_visited = 0
        self._epoch = -1
        self._done = 0  # absolute index of the first sample not yet merged
        self._first = 0  # absolute index of the oldest sample at the last update
        self._ka = 0  # cached columns [ka, ka + size)
        self._i_min = np.empty(0, np.int64)
        self._i_max = np.empty(0, np.int64)
        self._i_nan = np.empty(0, np.int64)

    def invalidate(self) -> None:
        """Forget the cache: the next update recomputes every column on a new grid."""
        self.grid = None
        self._epoch = -1

    def update(
        self,
        buffer: TraceBuffer,
        x_min: float,
        x_max: float,
        n_columns: int,
        *,
        log_x: bool = False,
    ) -> tuple[FloatArray, FloatArray]:
        """The samples to draw for the view [x_min, x_max] on ``n_columns`` pixel columns
        (new float64 arrays, a subsequence of the buffer)."""
        return self._update(
            buffer.x,
            buffer.y,
            buffer.start_index,
            buffer.end_index,
            buffer.epoch,
            x_min,
            x_max,
            n_columns,
            log_x,
            None,
        )

    def _update(
        self,
        x: FloatArray,
        y: FloatArray,
        first: int,
        end: int,
        epoch: int,
        x_min: float,
        x_max: float,
        n_columns: int,
        log_x: bool,
        grid: ColumnGrid | None,
    ) -> tuple[FloatArray, FloatArray]:
        _check_view("ColumnDecimator", x_min, x_max, n_columns, log_x)
        n = x.size
        if grid is None:
            grid = self.grid
            if grid is None or grid.log_x != log_x or not grid.fits(x_min, x_max, n_columns):
                grid = ColumnGrid.for_view(x_min, x_max, n_columns, log_x=log_x)
        fresh = grid != self.grid or epoch != self._epoch
        if fresh:
            self.full_recomputes += 1
            self.grid, self._epoch = grid, epoch
            self._done = self._first = first
            self._ka, self._i_min = 0, np.empty(0, np.int64)
            self._i_max, self._i_nan = self._i_min.copy(), self._i_min.copy()
        o, s, lx = grid.origin, grid.scale, grid.log_x
        ka, kb = grid.column_range(x_min, x_max)
        if kb - ka > 4 * n_columns + 4:
            raise ValueError(
                f"ColumnDecimator: the grid's columns ({grid.width:g} axis units) are much "
                f"narrower than a pixel for the view [{x_min}, {x_max}] on {n_columns} columns"
            )
        old_ka, old_kb = self._ka, self._ka + self._i_min.size
        ca, cb = max(ka, old_ka), min(kb, old_kb)  # columns kept from the cache
        size = kb - ka
        i_min = np.full(size, -1, np.int64)
        i_max = np.full(size, -1, np.int64)
        i_nan = np.full(size, -1, np.int64)
        visited = 0
        if ca < cb:
            src = slice(ca - old_ka, cb - old_ka)
            dst = slice(ca - ka, cb - ka)
            i_min[dst], i_max[dst], i_nan[dst] = (
                self._i_min[src],
                self._i_max[src],
                self._i_nan[src],
            )
            clean = ca  # cached columns from here on hold no dropped sample
            if first > self._first and n:
                # samples dropped out of the ring: columns up to the oldest sample's are stale
                c_first = _col(x[0], o, s, lx)
                clean = min(max(ca, c_first + 1), cb)
                if clean > ca:
                    i_min[ca - ka : clean - ka] = -1
                    i_max[ca - ka : clean - ka] = -1
                    i_nan[ca - ka : clean - ka] = -1
                    visited += _accumulate(
                        x, y, 0, n, first, o, s, lx, ka, ca, clean, i_min, i_max, i_nan
                    )
            new_lo = max(self._done - first, 0)  # samples appended since the last update
            visited += _accumulate(
                x, y, new_lo, n, first, o, s, lx, ka, clean, cb, i_min, i_max, i_nan
            )
            spans = ((ka, ca), (cb, kb))  # columns that scrolled in on either side
        else:
            spans = ((ka, kb),)
        for k_lo, k_hi in spans:
            if k_lo < k_hi:
                visited += _accumulate(
                    x, y, 0, n, first, o, s, lx, ka, k_lo, k_hi, i_min, i_max, i_nan
                )
        self._ka, self._i_min, self._i_max, self._i_nan = ka, i_min, i_max, i_nan
        self._done, self._first = end, first
        self.last_visited = visited

        lo = _first_col_at_least(x, 0, n, ka, o, s, lx)
        hi = _first_col_at_least(x, lo, n, kb, o, s, lx)
        left = lo - 1 if lo > 0 else -1
        right = hi if hi < n else -1
        if hi - lo <= 2 * n_columns:  # few samples: draw them as they are
            a, b = max(lo - 1, 0), min(hi + 1, n)
            return x[a:b].copy(), y[a:b].copy()
        out_x = np.empty(3 * size + 2, dtype=np.float64)
        out_y = np.empty(3 * size + 2, dtype=np.float64)
        k = _emit_columns(x, y, first, i_min, i_max, i_nan, left, right, out_x, out_y)
        return out_x[:k], out_y[:k]


def _check_view(what: str, x_min: float, x_max: float, n_columns: int, log_x: bool) -> None:
    if int(n_columns) != n_columns or n_columns < 1:
        raise ValueError(f"{what}: n_columns: got {n_columns}, expected an integer >= 1")
    if not (math.isfinite(x_min) and math.isfinite(x_max) and x_max > x_min):
        raise ValueError(
            f"{what}: view: got x_min = {x_min}, x_max = {x_max}, expected finite x_min < x_max"
        )
    if log_x and x_min <= 0:
        raise ValueError(f"{what}: log x view needs x_min > 0, got {x_min}")


def decimate_on_grid(
    x: ArrayLike,
    y: ArrayLike,
    grid: ColumnGrid,
    x_min: float,
    x_max: float,
    n_columns: int,
) -> tuple[FloatArray, FloatArray]:
    """What :class:`ColumnDecimator` draws for sorted samples (x, y) and this grid, computed
    from scratch (one pass over the samples in the view's columns): the full recomputation
    an incremental update must equal."""
    xa = np.ascontiguousarray(x, dtype=np.float64)
    ya = np.ascontiguousarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(
            f"decimate_on_grid: x and y must be 1-D of the same length, got {xa.shape} and "
            f"{ya.shape}"
        )
    return ColumnDecimator()._update(
        xa, ya, 0, xa.size, 0, x_min, x_max, n_columns, grid.log_x, grid
    )


# ---------------------------------------------------------------------------------------------
# Plots


class TickGrid(pg.GraphicsObject):
    """Grid lines at the plot's major (and minor) tick values, in opaque colours.

    Replaces ``pg.GridItem`` / ``PlotItem.showGrid``: pyqtgraph's grids draw up to three
    levels of translucent lines (hundreds on a 1600 px wide plot, each blended into every
    pixel it crosses) and regenerate them in Python on every range change: ~0.6 ms per paint
    of a 1600x250 px plot plus ~1 ms (much more while a DSP thread competes for the GIL) per
    y re-range (``labctl bench gui``). This one asks the axes for their tick values
    (``AxisItem.tickValues``, so lines sit on the labelled ticks, log axes included), keeps
    the two finest levels with at least ``min_spacing_px`` between lines, and draws each level
    with one ``drawLines`` call of an opaque cosmetic 1 px pen (no blending).
    """

    def __init__(
        self,
        plot_item: pg.PlotItem,
        *,
        major: object = (70, 70, 70),
        minor: object = (38, 38, 38),
        min_spacing_px: float = 12.0,
    ) -> None:
        super().__init__()
        self._plot_item = plot_item
        self._pens = [pg.mkPen(major, width=1), pg.mkPen(minor, width=1)]
        for pen in self._pens:
            pen.setCosmetic(True)
        self._min_spacing_px = float(min_spacing_px)
        self._lines: list[list[QtCore.QLineF]] | None = None
        self.setZValue(-20)

    def viewRangeChanged(self) -> None:  # pyqtgraph's hook, called on view changes
        self._lines = None
        self.prepareGeometryChange()
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        vb = self.getViewBox()
        return QtCore.QRectF() if vb is None else vb.viewRect()

    def grid_values(self) -> tuple[list[float], list[float]]:
        """The x and y values (view coordinates: log10 on a log axis) of the lines drawn."""
        lines = self._compute()
        xs = [ln.x1() for level in lines for ln in level if ln.x1() == ln.x2()]
        ys = [ln.y1() for level in lines for ln in level if ln.y1() == ln.y2()]
        return sorted(xs), sorted(ys)

    def _compute(self) -> list[list[QtCore.QLineF]]:
        if self._lines is not None:
            return self._lines
        vb = self.getViewBox()
        levels: list[list[QtCore.QLineF]] = [[], []]
        if vb is None:
            return levels
        rect = vb.viewRect()
        x0, x1, y0, y1 = rect.left(), rect.right(), rect.top(), rect.bottom()
        for side, lo, hi, size in (
            ("bottom", x0, x1, vb.width()),
            ("left", y0, y1, vb.height()),
        ):
            if not (size > 0 and hi > lo):
                continue
            ticks = self._plot_item.getAxis(side).tickValues(lo, hi, size)
            for level, (spacing, values) in enumerate(ticks):
                if spacing is None:  # a log axis's minor level: uneven, take the closest two
                    gaps = np.diff(np.sort(np.asarray(values, dtype=np.float64)))
                    spacing = float(gaps.min()) if gaps.size else hi - lo
                if level > 1 or spacing * size / (hi - lo) < self._min_spacing_px:
                    break
                for v in values:
                    if lo <= v <= hi:
                        line = (
                            QtCore.QLineF(v, y0, v, y1)
                            if side == "bottom"
                            else QtCore.QLineF(x0, v, x1, v)
                        )
                        levels[level].append(line)
        self._lines = levels
        return levels

    def paint(self, p: object, *args: object) -> None:
        for pen, lines in zip(self._pens, self._compute(), strict=True):
            if lines:
                p.setPen(pen)  # type: ignore[attr-defined]
                p.drawLines(lines)  # type: ignore[attr-defined]


@dataclass
class _Trace:
    buffer: TraceBuffer
    item: pg.PlotDataItem
    key: tuple[int, float, float, int] | None = None
    shown_x: FloatArray | None = None
    shown_y: FloatArray | None = None
    decimator: ColumnDecimator = field(default_factory=lambda: ColumnDecimator())


class TracePlot(pg.PlotWidget):
    """A plot of streaming traces (one :class:`TraceBuffer` each) drawn clipped and decimated.

    Parameters
    ----------
    traces: names of the traces (one curve each, colours in order); more with
        :meth:`add_trace`.
    capacity: samples kept per trace (default 10**6).
    window_s: while following, show the last ``window_s`` units of x (a strip chart); None:
        the whole buffer.
    relative_x: draw x relative to the newest sample (0 = newest, the past negative: a
        scope's roll mode). The axis then stays still while data stream in, so pyqtgraph does
        not regenerate its ticks and grid every frame (that costs more than drawing a decimated
        trace, see ``labctl bench gui``); the origin freezes while the user zooms or pans
        (:attr:`x_origin`). Not with ``log_x``.
    x_label, x_units, y_label, y_units: axis labels; pyqtgraph adds SI prefixes to the units.
    log_x, log_y: logarithmic axes (decimation columns are then equal in log10 x).
    title: plot title.

    The y range follows the visible data with hysteresis: it grows at once when the data leave
    it and shrinks when they use less than half of it, with a pad of ``Y_PAD_FRACTION`` of
    the data's span on each side, so it is not recomputed (nor its axis and grid redrawn) on
    every frame, even for a drifting signal.

    :meth:`append` / :meth:`set_data` only store the samples; :meth:`refresh` draws (call it
    from a timer: :meth:`start_auto_refresh`). :meth:`displayed` returns what is drawn.
    """

    def __init__(
        self,
        traces: Sequence[str] = ("trace",),
        *,
        capacity: int = 1_000_000,
        window_s: float | None = None,
        relative_x: bool = True,
        x_label: str = "time",
        x_units: str | None = "s",
        y_label: str = "",
        y_units: str | None = None,
        log_x: bool = False,
        log_y: bool = False,
        title: str | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent=parent, title=title)
        if relative_x and log_x:
            raise ValueError("TracePlot: relative_x needs a linear x axis (log_x=False)")
        self._capacity = int(capacity)
        self._traces: dict[str, _Trace] = {}
        self._log_x = bool(log_x)
        self._log_y = bool(log_y)
        self._relative_x = bool(relative_x)
        self._origin = 0.0
        self._follow_x = True
        self._auto_y = True
        self._refresh_pending = False
        self._timer: QtCore.QTimer | None = None
        self._window_s: float | None = None
        self.set_window(window_s)
        pi = self.getPlotItem()
        if relative_x:
            x_label = f"{x_label} (0 = newest sample)"
        pi.setLabel("bottom", x_label, units=x_units)
        pi.setLabel("left", y_label, units=y_units)
        pi.setLogMode(x=log_x, y=log_y)
        # a GridItem, not pi.showGrid(): the axes' grid lines cost ~10 ms per plot per frame
        # at 1600x250 px on the raster engine, a GridItem ~0.2 ms (measured, pyqtgraph 0.14)
        grid = TickGrid(pi)
        pi.addItem(grid, ignoreBounds=True)
        # The axes change only when the view range or size does (roll-mode x axis, y
        # hysteresis), so Qt keeps them as device pixmaps and blits them instead of replaying
        # their pictures on every paint (~0.15 ms -> ~0.05 ms per axis at 1600x250 px,
        # ``labctl bench gui``). pyqtgraph calls update() on every change, which refreshes
        # the pixmap, so what is drawn stays the same.
        for side in ("left", "bottom"):
            pi.getAxis(side).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        vb = pi.getViewBox()
        vb.disableAutoRange()  # we move the view ourselves (follow, y hysteresis)
        vb.sigRangeChangedManually.connect(self._on_manual_range)
        vb.sigStateChanged.connect(self._on_view_state)
        vb.sigXRangeChanged.connect(self._schedule_refresh)
        vb.sigResized.connect(self._schedule_refresh)
        for name in traces:
            self.add_trace(name)

    # --- traces -------------------------------------------------------------------------

    def add_trace(
        self, name: str, *, capacity: int | None = None, pen: object = None
    ) -> TraceBuffer:
        """Add a trace (a curve and its buffer); returns the buffer."""
        if name in self._traces:
            raise ValueError(f"trace {name!r} already exists in this plot")
        if pen is None:
            pen = pg.mkPen(pg.intColor(len(self._traces), hues=8), width=1)
        item = self.getPlotItem().plot(name=name, pen=pen, connect="finite")
        buffer = TraceBuffer(self._capacity if capacity is None else capacity, name=name)
        self._traces[name] = _Trace(buffer, item)
        return buffer

    @property
    def trace_names(self) -> list[str]:
        return list(self._traces)

    def buffer(self, trace: str | None = None) -> TraceBuffer:
        """The buffer of ``trace`` (default: the first trace)."""
        return self._trace(trace).buffer

    def _trace(self, name: str | None) -> _Trace:
        if name is None:
            if not self._traces:
                raise KeyError("this plot has no trace; add one with add_trace()")
            return next(iter(self._traces.values()))
        try:
            return self._traces[name]
        except KeyError:
            raise KeyError(f"no trace {name!r} in this plot (traces: {self.trace_names})") from None

    def append(self, x: ArrayLike, y: ArrayLike, *, trace: str | None = None) -> None:
        """Append samples (e.g. t_s, phase_rad) to ``trace`` (default: the first)."""
        self._trace(trace).buffer.append(x, y)

    def set_data(self, x: ArrayLike, y: ArrayLike, *, trace: str | None = None) -> None:
        """Replace the samples of ``trace`` (default: the first)."""
        self._trace(trace).buffer.set_data(x, y)

    def clear_traces(self) -> None:
        """Forget every trace's samples."""
        for t in self._traces.values():
            t.buffer.clear()

    def displayed(self, trace: str | None = None) -> tuple[FloatArray, FloatArray]:
        """The samples drawn for ``trace`` at the last :meth:`refresh`, x in data units
        (absolute, not relative to :attr:`x_origin`); empty before the first refresh."""
        t = self._trace(trace)
        if t.shown_x is None or t.shown_y is None:
            return np.empty(0, np.float64), np.empty(0, np.float64)
        return t.shown_x, t.shown_y

    def decimator(self, trace: str | None = None) -> ColumnDecimator:
        """The incremental decimator of ``trace`` (default: the first): its :attr:`grid`
        and counters say how the last :meth:`refresh` computed what is drawn."""
        return self._trace(trace).decimator

    def column_grid(self, trace: str | None = None) -> ColumnGrid | None:
        """The pixel-column grid (fixed in x) ``trace`` was decimated on at the last
        :meth:`refresh`; None before the first. :meth:`displayed` equals
        :func:`decimate_on_grid` of the buffer on this grid and the view :meth:`x_view`."""
        return self._trace(trace).decimator.grid

    # --- view ---------------------------------------------------------------------------

    def set_window(self, window_s: float | None) -> None:
        """Follow the last ``window_s`` units of x (None: the whole buffer)."""
        if window_s is not None and not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s: got {window_s!r}, expected a positive number or None")
        self._window_s = None if window_s is None else float(window_s)
        self._schedule_refresh()

    @property
    def following(self) -> bool:
        """True while the x range follows the newest data (until the user zooms or pans x)."""
        return self._follow_x

    @property
    def x_origin(self) -> float:
        """The data x drawn at 0 on the x axis (the newest sample while following with
        ``relative_x``; 0.0 without)."""
        return self._origin

    def follow(self) -> None:
        """Return to following the newest data, y range automatic."""
        self._follow_x = self._auto_y = True
        self._schedule_refresh()

    def x_view(self) -> tuple[float, float]:
        """The visible x range in data units (Hz, s; absolute, not log10 on a log axis)."""
        x0, x1 = self.getPlotItem().getViewBox().viewRange()[0]
        if self._log_x:
            return 10.0**x0, 10.0**x1
        return float(x0) + self._origin, float(x1) + self._origin

    def pixel_columns(self) -> int:
        """Device pixel columns of the data area (the decimation's column count)."""
        vb = self.getPlotItem().getViewBox()
        return max(1, round(vb.width() * self.devicePixelRatioF()))

    def _data_x_range(self) -> tuple[float, float] | None:
        """The x range (data units) to show while following."""
        spans = []
        for t in self._traces.values():
            x = t.buffer.x
            i = int(np.searchsorted(x, 0.0, side="right")) if self._log_x else 0
            if i < x.size:  # a log axis shows only positive x
                spans.append((float(x[i]), float(x[-1])))
        if not spans:
            return None
        lo = min(s[0] for s in spans)
        hi = max(s[1] for s in spans)
        if self._window_s is not None:
            lo = hi - self._window_s
            if self._log_x and lo <= 0:
                lo = min(s[0] for s in spans)
        if not hi > lo:  # a single x: a unit-wide view around it
            lo, hi = (hi / 10.0, hi * 10.0) if self._log_x else (hi - 0.5, hi + 0.5)
        return lo, hi

    def _on_manual_range(self, mask: object) -> None:
        x_changed = y_changed = True
        if isinstance(mask, list | tuple) and len(mask) == 2:
            x_changed, y_changed = bool(mask[0]), bool(mask[1])
        if x_changed:
            self._follow_x = False
        if y_changed:
            self._auto_y = False

    def _on_view_state(self, vb: pg.ViewBox) -> None:
        auto_x, auto_y = vb.autoRangeEnabled()
        if auto_x or auto_y:  # the "A" button: we follow and range ourselves
            self._follow_x = self._follow_x or bool(auto_x)
            self._auto_y = self._auto_y or bool(auto_y)
            vb.disableAutoRange()
            self._schedule_refresh()

    def _schedule_refresh(self, *_: object) -> None:
        if not self._refresh_pending:
            self._refresh_pending = True
            QtCore.QTimer.singleShot(0, self, self.refresh)  # dropped if the plot is deleted first

    def start_auto_refresh(self, period_s: float = DEFAULT_REFRESH_PERIOD_S) -> None:
        """Refresh every ``period_s`` seconds (a Qt timer on the GUI thread)."""
        if not (math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"period_s: got {period_s!r}, expected > 0")
        if self._timer is None:
            self._timer = QtCore.QTimer(self)
            self._timer.timeout.connect(self.refresh)
        self._timer.start(max(1, round(period_s * 1000)))

    def stop_auto_refresh(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    def _follow(self, vb: pg.ViewBox) -> None:
        if self._relative_x:
            ends = [float(t.buffer.x[-1]) for t in self._traces.values() if len(t.buffer)]
            if ends:
                self._origin = max(ends)
        target = self._data_x_range()
        if target is None:
            return
        if self._log_x:
            lo, hi = math.log10(target[0]), math.log10(target[1])
        else:
            lo, hi = target[0] - self._origin, target[1] - self._origin
        cur = vb.viewRange()[0]
        tol = 1e-9 * (hi - lo)  # rounding of x[-1] - x[0] must not move the axis every frame
        if abs(cur[0] - lo) > tol or abs(cur[1] - hi) > tol:
            vb.setXRange(lo, hi, padding=0.0)

    def _range_y(self, vb: pg.ViewBox, x0: float, x1: float) -> None:
        """Y range with hysteresis over the drawn samples inside [x0, x1]."""
        lo, hi = math.inf, -math.inf
        for t in self._traces.values():
            if t.shown_x is None or t.shown_y is None or not t.shown_y.size:
                continue
            y = t.shown_y[(t.shown_x >= x0) & (t.shown_x <= x1)]
            if self._log_y:
                y = y[y > 0]
                y = np.log10(y) if y.size else y
            y = y[np.isfinite(y)]
            if y.size:
                lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
        if not lo <= hi:
            return
        span = hi - lo
        pad = Y_PAD_FRACTION * (span if span > 0 else max(abs(hi), 1.0))
        c0, c1 = vb.viewRange()[1]
        if lo < c0 or hi > c1 or span < 0.5 * (c1 - c0):
            vb.setYRange(lo - pad, hi + pad, padding=0.0)

    def refresh(self) -> None:
        """Move the view if following, redraw each trace whose data or view changed, range y."""
        self._refresh_pending = False
        vb = self.getPlotItem().getViewBox()
        if self._follow_x:
            self._follow(vb)
        x0, x1 = self.x_view()
        if not (math.isfinite(x0) and math.isfinite(x1) and x1 > x0):
            return
        n_columns = self.pixel_columns()
        changed = False
        for t in self._traces.values():
            key = (t.buffer.version, x0, x1, n_columns)
            if key == t.key:
                continue
            t.key = key
            changed = True
            if len(t.buffer) == 0:
                xd = yd = np.empty(0, np.float64)
            else:
                xd, yd = t.decimator.update(t.buffer, x0, x1, n_columns, log_x=self._log_x)
            t.shown_x, t.shown_y = xd, yd
            t.item.setData(xd - self._origin if self._origin else xd, yd)
        if changed and self._auto_y:
            self._range_y(vb, x0, x1)


class SpectrumPlot(TracePlot):
    """A spectrum / PSD plot (x: frequency in Hz, log y by default), decimated like
    :class:`TracePlot` so a 2**20-bin FFT draws as fast as a 1000-bin one.

    ``set_spectrum(freq_hz, psd)`` replaces a trace's spectrum (freq_hz non-decreasing);
    ``mark_band(f_lo_hz, f_hi_hz)`` shades a band (e.g. a node's carrier +- half its symbol
    rate) that stays in place while the spectrum updates.
    """

    def __init__(
        self,
        traces: Sequence[str] = ("spectrum",),
        *,
        capacity: int = 1 << 20,
        y_label: str = "PSD",
        y_units: str | None = None,
        log_x: bool = False,
        log_y: bool = True,
        title: str | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(
            traces,
            capacity=capacity,
            relative_x=False,
            x_label="frequency",
            x_units="Hz",
            y_label=y_label,
            y_units=y_units,
            log_x=log_x,
            log_y=log_y,
            title=title,
            parent=parent,
        )
        self._bands: list[pg.LinearRegionItem] = []

    def set_spectrum(self, freq_hz: ArrayLike, psd: ArrayLike, *, trace: str | None = None) -> None:
        """Replace the spectrum of ``trace`` (default: the first)."""
        self.set_data(freq_hz, psd, trace=trace)

    def mark_band(
        self, f_lo_hz: float, f_hi_hz: float, label: str = "", *, color: object = None
    ) -> pg.LinearRegionItem:
        """Shade the band [f_lo_hz, f_hi_hz] (not movable); returns the region item."""
        if not (math.isfinite(f_lo_hz) and math.isfinite(f_hi_hz) and f_hi_hz > f_lo_hz):
            raise ValueError(
                f"mark_band: got f_lo_hz = {f_lo_hz}, f_hi_hz = {f_hi_hz}, expected finite "
                "f_lo_hz < f_hi_hz"
            )
        if self._log_x and f_lo_hz <= 0:
            raise ValueError(f"mark_band: a log frequency axis needs f_lo_hz > 0, got {f_lo_hz}")
        brush = pg.mkBrush(color if color is not None else (100, 160, 255, 40))
        lo, hi = (math.log10(f_lo_hz), math.log10(f_hi_hz)) if self._log_x else (f_lo_hz, f_hi_hz)
        region = pg.LinearRegionItem(values=(lo, hi), movable=False, brush=brush)
        region.setZValue(-10)
        if label:  # staggered down the plot, so the labels of neighbouring bands do not overlap
            position = 0.95 - 0.1 * (len(self._bands) % 4)
            pg.InfLineLabel(
                region.lines[0], text=label, position=position, anchors=[(0, 0), (0, 0)]
            )
        self.getPlotItem().addItem(region, ignoreBounds=True)
        self._bands.append(region)
        return region

    def bands_hz(self) -> list[tuple[float, float]]:
        """The marked bands, (f_lo_hz, f_hi_hz) each."""
        out = []
        for r in self._bands:
            lo, hi = r.getRegion()
            out.append((10.0**lo, 10.0**hi) if self._log_x else (float(lo), float(hi)))
        return out


class PointCloudItem(pg.PlotCurveItem):
    """A cloud of points drawn as (almost) zero-length segments with a square-capped cosmetic pen
    (dots of ``size_px`` pixels, one colour), i.e. one ``QPainterPath`` built from numpy
    arrays and one ``drawPath`` call: for constellations of thousands of points refreshed at
    the frame rate. ``pg.ScatterPlotItem`` keeps an item per spot and draws each from its
    symbol atlas: ~11 ms to set and ~60 ms to paint 3 x 2000 points here."""

    def __init__(self, *, color: object = (255, 255, 255), size_px: float = 2.0) -> None:
        pen = pg.mkPen(color, width=size_px)
        pen.setCosmetic(True)
        pen.setCapStyle(QtCore.Qt.PenCapStyle.SquareCap)
        super().__init__(pen=pen, connect="pairs", antialias=False)
        self._x = np.empty(0, np.float64)
        self._y = np.empty(0, np.float64)

    def set_points(self, x: ArrayLike, y: ArrayLike) -> None:
        """Replace the points (finite ones only are drawn)."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.shape != ya.shape or xa.ndim != 1:
            raise ValueError(f"PointCloudItem.set_points: x {xa.shape} and y {ya.shape} differ")
        keep = np.isfinite(xa) & np.isfinite(ya)
        self._x, self._y = xa[keep], ya[keep]
        ends = np.repeat(self._x, 2)
        # Qt's raster engine skips segments of exactly zero length: nudge each end by 1e-9
        # (relative), far below a pixel at any zoom a constellation is looked at
        ends[1::2] += 1e-9 * (1.0 + np.abs(self._x))
        self.setData(ends, np.repeat(self._y, 2))

    def points(self) -> tuple[FloatArray, FloatArray]:
        """The points drawn (x, y)."""
        return self._x, self._y

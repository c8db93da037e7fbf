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
columns are pixel columns in x, every sample belongs to one, and the work per frame is one pass
over the *visible* samples.

Threading: these are Qt widgets; call everything (including :meth:`TracePlot.append`) on the
GUI thread. Acquisition/DSP threads hand their arrays over through a queued Qt signal or a
queue drained by a GUI timer; :meth:`TracePlot.append` only copies into the buffer (cheap), the
drawing happens at most once per refresh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np
import pyqtgraph as pg
from numpy.typing import ArrayLike, NDArray
from PySide6 import QtCore, QtWidgets

FloatArray = NDArray[np.float64]

#: default refresh period of :meth:`TracePlot.start_auto_refresh`: 60 frames/s, a common
#: display refresh rate; a refresh with nothing new costs a few microseconds.
DEFAULT_REFRESH_PERIOD_S = 1.0 / 60.0


# ---------------------------------------------------------------------------------------------
# Ring buffer


class TraceBuffer:
    """A ring buffer of ``capacity`` samples (x, y), float64, x non-decreasing.

    ``append`` keeps the newest ``capacity`` samples. ``x`` and ``y`` are read-only views of
    the samples in order (oldest first), valid until the next ``append``/``set_data``/
    ``clear``. ``version`` increases on every change (plots redraw when it moved).
    ``name`` only labels error messages.
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
        self.version = 0

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
        self._start = self._end = 0
        self.version += 1

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
            self._x[:cap] = xa[n - cap :]
            self._y[:cap] = ya[n - cap :]
            self._start, self._end = 0, cap
        else:
            if self._end + n > 2 * cap:  # slide the newest samples that stay to the front
                keep = min(len(self), cap - n)
                src = slice(self._end - keep, self._end)
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
        self._start, self._end = 0, int(xa.size)
        self.version += 1


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
# Plots


@dataclass
class _Trace:
    buffer: TraceBuffer
    item: pg.PlotDataItem
    key: tuple[int, float, float, int] | None = None
    shown_x: FloatArray | None = None
    shown_y: FloatArray | None = None


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
    it and shrinks when they use less than half of it (pad 5 %), so it is not recomputed (nor
    its axis redrawn) on every frame.

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
        grid = pg.GridItem(pen=pg.mkPen(128, 128, 128, 90), textPen=None)
        grid.setZValue(-20)
        pi.addItem(grid, ignoreBounds=True)
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
            QtCore.QTimer.singleShot(0, self.refresh)

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
        pad = 0.05 * span if span > 0 else 0.05 * max(abs(hi), 1.0)
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
                xd, yd = peak_decimate(t.buffer.x, t.buffer.y, x0, x1, n_columns, log_x=self._log_x)
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
        if label:
            pg.InfLineLabel(region.lines[0], text=label, position=0.95, anchors=[(0, 0), (0, 0)])
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

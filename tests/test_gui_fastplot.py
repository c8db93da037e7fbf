"""gui.fastplot (ring buffer, clip + per-column peak decimation, TracePlot) and labctl bench gui.

References are independent numpy computations: the newest ``capacity`` samples of everything
appended (np.concatenate), per pixel column min/max with a Python loop over the columns, the
rendered pixmap's pixels for the drawn curve.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PySide6 import QtCore, QtGui

from gui.fastplot import (
    GRID_MIN_COLUMN_PX,
    ColumnDecimator,
    ColumnGrid,
    SpectrumPlot,
    TickGrid,
    TraceBuffer,
    TracePlot,
    column_index,
    decimate_on_grid,
    peak_decimate,
    visible_range,
)
from labctl import bench_gui

# ---------------------------------------------------------------------------------------------
# Ring buffer


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 50),
    chunks=st.lists(st.integers(0, 120), min_size=1, max_size=25),
)
def test_ring_buffer_keeps_the_newest_samples_in_order(capacity: int, chunks: list[int]) -> None:
    buf = TraceBuffer(capacity)
    xs, ys = [], []
    start = 0
    for n in chunks:
        x = np.arange(start, start + n, dtype=np.float64)
        y = -x * 0.5
        start += n
        buf.append(x, y)
        xs.append(x)
        ys.append(y)
        ref_x = np.concatenate(xs)[-capacity:]
        ref_y = np.concatenate(ys)[-capacity:]
        np.testing.assert_array_equal(buf.x, ref_x)
        np.testing.assert_array_equal(buf.y, ref_y)
        assert len(buf) == ref_x.size
        assert buf.x.dtype == np.float64
        assert buf.end_index == start  # absolute indices: x[i] is sample start_index + i
        assert buf.start_index == start - ref_x.size
        assert buf.epoch == 0


def test_ring_buffer_refuses_bad_samples_with_a_clear_message() -> None:
    buf = TraceBuffer(10, name="node 1 phase")
    buf.append([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"node 1 phase: append: x\[0\] = 1.5 is before"):
        buf.append([1.5], [0.0])
    with pytest.raises(ValueError, match=r"non-decreasing, got x\[1\] = 5.0 > x\[2\] = 4.0"):
        buf.append([3.0, 5.0, 4.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"x\[0\] = nan is not finite"):
        buf.append([np.nan], [0.0])
    with pytest.raises(ValueError, match="same length"):
        buf.append([3.0, 4.0], [0.0])
    with pytest.raises(ValueError, match="capacity"):
        TraceBuffer(0)
    np.testing.assert_array_equal(buf.x, [1.0, 2.0])  # nothing refused was stored
    with pytest.raises(ValueError):
        buf.x[0] = 7.0  # read-only view


def test_set_data_replaces_and_grows() -> None:
    buf = TraceBuffer(4)
    buf.append(np.arange(4.0), np.arange(4.0))
    f = np.linspace(0.0, 1e6, 9)
    buf.set_data(f, f**2)
    assert buf.capacity == 9
    np.testing.assert_array_equal(buf.x, f)
    np.testing.assert_array_equal(buf.y, f**2)
    assert (buf.start_index, buf.end_index, buf.epoch) == (0, 9, 1)  # indices restart
    v = buf.version
    buf.clear()
    assert len(buf) == 0 and buf.version == v + 1
    assert (buf.start_index, buf.end_index, buf.epoch) == (0, 0, 2)


# ---------------------------------------------------------------------------------------------
# Clip and decimate, against numpy


def _reference_columns(
    x: np.ndarray, y: np.ndarray, x0: float, x1: float, n: int
) -> dict[int, tuple[float, float]]:
    """Column -> (min, max) of the finite y inside [x0, x1], by a plain loop."""
    out: dict[int, tuple[float, float]] = {}
    inside = (x >= x0) & (x <= x1)
    cols = np.minimum(np.floor((x[inside] - x0) * (n / (x1 - x0))).astype(np.int64), n - 1)
    for c in np.unique(cols):
        yc = y[inside][cols == c]
        yc = yc[np.isfinite(yc)]
        if yc.size:
            out[int(c)] = (float(yc.min()), float(yc.max()))
    return out


def _is_subsequence(xd: np.ndarray, yd: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
    j = 0
    for a, b in zip(xd, yd, strict=True):
        while j < x.size and not (x[j] == a and (y[j] == b or (np.isnan(y[j]) and np.isnan(b)))):
            j += 1
        if j == x.size:
            return False
        j += 1
    return True


def test_decimation_matches_numpy_per_column_min_max() -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    x = np.cumsum(rng.exponential(1e-3, n))  # irregular sampling
    y = np.cumsum(rng.normal(0.0, 1.0, n))
    y[rng.integers(0, n, 20)] += 1e4  # isolated spikes
    y[rng.integers(0, n, 5)] = np.nan  # gaps
    x0, x1, cols = float(x[n // 10]), float(x[n - n // 7]), 700
    xd, yd = peak_decimate(x, y, x0, x1, cols)
    assert xd.dtype == yd.dtype == np.float64
    assert xd.size <= 3 * cols + 2
    ref = _reference_columns(x, y, x0, x1, cols)
    shown = (xd >= x0) & (xd <= x1)
    dcol = column_index(xd[shown], x0, x1, cols)
    dy = yd[shown]
    got = {
        int(c): (float(np.nanmin(dy[dcol == c])), float(np.nanmax(dy[dcol == c])))
        for c in np.unique(dcol)
        if np.isfinite(dy[dcol == c]).any()
    }
    assert got == ref
    # every spike inside the view is drawn exactly
    spikes = y[(x >= x0) & (x <= x1) & (y > 5e3)]
    assert set(spikes.tolist()) <= set(yd.tolist())
    # the gaps inside the view stay gaps
    assert np.isnan(yd).sum() == np.isnan(y[(x >= x0) & (x <= x1)]).sum()
    # one neighbour on each side, so the line reaches the edges
    assert xd[0] < x0 and xd[-1] > x1
    assert np.all(np.diff(xd) >= 0)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 30),  # x step (duplicates allowed)
            st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))),
        ),
        min_size=1,
        max_size=300,
    ),
    cols=st.integers(1, 12),
    view=st.tuples(st.floats(-0.2, 1.0), st.floats(0.01, 1.2)),
    log_x=st.booleans(),
)
def test_every_sample_lies_within_the_drawn_envelope_of_its_column(
    data: list[tuple[int, float]], cols: int, view: tuple[float, float], log_x: bool
) -> None:
    x = 1.0 + np.cumsum([d[0] for d in data]).astype(np.float64)
    y = np.array([d[1] for d in data], dtype=np.float64)
    span = float(x[-1] - x[0]) + 1.0
    x0 = float(x[0]) + view[0] * span
    x1 = x0 + view[1] * span
    if log_x:
        x0 = max(x0, 0.5)
        if not x1 > x0:
            x1 = x0 * 2
    xd, yd = peak_decimate(x, y, x0, x1, cols, log_x=log_x)
    assert _is_subsequence(xd, yd, x, y)
    lo, hi = visible_range(x, x0, x1)
    inside = (x >= x0) & (x <= x1)
    if hi - lo <= 2 * cols:  # nothing to reduce: the clipped samples as they are
        np.testing.assert_array_equal(xd, x[lo:hi])
        return
    assert xd.size <= 3 * cols + 2
    col = column_index(x[inside], x0, x1, cols, log_x=log_x)
    shown = (xd >= x0) & (xd <= x1)
    dcol = column_index(xd[shown], x0, x1, cols, log_x=log_x)
    dy = yd[shown]
    for c, v in zip(col, y[inside], strict=True):
        drawn = dy[dcol == c]
        if np.isfinite(v):
            assert np.nanmin(drawn) <= v <= np.nanmax(drawn)
        else:
            assert np.isnan(drawn).any()  # a gap in the column is drawn as a gap
        assert np.count_nonzero(dcol == c) <= 3


def test_few_samples_are_only_clipped() -> None:
    x = np.arange(10.0)
    y = x**2
    xd, yd = peak_decimate(x, y, 2.5, 6.0, 100)
    np.testing.assert_array_equal(xd, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(yd, xd**2)
    with pytest.raises(ValueError, match="x_min < x_max"):
        peak_decimate(x, y, 3.0, 3.0, 10)
    with pytest.raises(ValueError, match="log x view needs x_min > 0"):
        peak_decimate(x, y, 0.0, 3.0, 10, log_x=True)


# ---------------------------------------------------------------------------------------------
# Incremental decimation on a grid fixed in x

_APPEND = st.tuples(
    st.just("append"),
    st.lists(
        st.tuples(
            st.integers(0, 3),  # x step (duplicates allowed)
            st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")), st.just(float("inf"))),
        ),
        max_size=60,
    ),
)
_OPS = st.one_of(  # mostly appends: the ring overflows, columns scroll in and out
    _APPEND,
    _APPEND,
    _APPEND,
    _APPEND,
    st.tuples(st.just("view"), st.tuples(st.floats(0.01, 1.0), st.integers(3, 40))),
    st.tuples(st.just("pan"), st.floats(-0.5, 0.5)),
    st.tuples(st.just("set_data"), st.integers(0, 50)),
    st.tuples(st.just("clear"), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 100),
    ops=st.lists(_OPS, min_size=1, max_size=30),
    log_x=st.booleans(),
)
def test_incremental_decimation_equals_full_recomputation(
    capacity: int, ops: list[tuple], log_x: bool
) -> None:
    """After any sequence of appends (ring overflow included), view changes (follow a
    fraction of the buffer, zoom, resize, pan), set_data and clear, the incremental result
    equals a from-scratch decimation on the same grid and the numpy per-column reference."""
    buf = TraceBuffer(capacity)
    dec = ColumnDecimator()
    fraction, n_columns, pan = 1.0, 10, 0.0
    next_x = 1.0
    for op, arg in ops:
        if op == "append":
            steps = np.array([a[0] for a in arg], dtype=np.float64)
            x = next_x + np.cumsum(steps)
            buf.append(x, np.array([a[1] for a in arg], dtype=np.float64))
            if x.size:
                next_x = float(x[-1])
        elif op == "view":
            fraction, n_columns = arg
        elif op == "pan":
            pan = arg
        elif op == "set_data":
            x = next_x + np.arange(arg, dtype=np.float64)
            buf.set_data(x, np.sin(x))
            next_x = float(x[-1]) if arg else next_x
        else:
            buf.clear()
        if len(buf) == 0:
            continue
        x, y = buf.x, buf.y
        span = max(float(x[-1] - x[0]), 1.0)
        x1 = float(x[-1]) + pan * span
        x0 = x1 - fraction * span
        if log_x and x0 <= 0:
            continue
        xd, yd = dec.update(buf, x0, x1, n_columns, log_x=log_x)
        grid = dec.grid
        assert grid is not None and grid.log_x == log_x
        ref_x, ref_y = decimate_on_grid(x, y, grid, x0, x1, n_columns)
        np.testing.assert_array_equal(xd, ref_x)
        np.testing.assert_array_equal(yd, ref_y)
        assert _is_subsequence(xd, yd, x, y)
        k_lo, k_hi = grid.column_range(x0, x1)
        assert k_hi - k_lo <= n_columns / GRID_MIN_COLUMN_PX + 2  # columns <= 1 px wide
        cols = grid.columns(x)
        lo = int(np.searchsorted(cols, k_lo))
        hi = int(np.searchsorted(cols, k_hi))
        if hi - lo > 2 * n_columns:
            _check_grid_envelope(xd, yd, x, y, grid, x0, x1)
        else:  # few samples: the view's columns and one neighbour each side, as they are
            np.testing.assert_array_equal(xd, x[max(lo - 1, 0) : hi + 1])


def test_streaming_updates_visit_only_new_samples_and_rebuild_on_zoom_and_resize() -> None:
    rate_hz = 1e6
    buf = TraceBuffer(200_000)
    rng = np.random.default_rng(5)
    t = np.arange(200_000) / rate_hz
    buf.append(t, np.cumsum(rng.normal(size=t.size)))
    dec = ColumnDecimator()
    dec.update(buf, buf.x[0], buf.x[-1], 1000)
    assert dec.full_recomputes == 1 and dec.last_visited == 200_000
    grid = dec.grid
    for _ in range(20):  # a full buffer scrolling: fixed width, the grid stays
        t = buf.x[-1] + np.arange(1, 1501) / rate_hz
        buf.append(t, np.cumsum(rng.normal(size=t.size)))
        xd, yd = dec.update(buf, buf.x[0], buf.x[-1], 1000)
        assert dec.grid == grid and dec.full_recomputes == 1
        # the new samples, plus the recomputed column of the oldest sample (~200 samples)
        assert dec.last_visited <= 1500 + 2 * 200_000 / 1000
        ref = decimate_on_grid(buf.x, buf.y, grid, buf.x[0], buf.x[-1], 1000)
        np.testing.assert_array_equal(xd, ref[0])
        np.testing.assert_array_equal(yd, ref[1])
    x0, x1 = float(buf.x[0]), float(buf.x[-1])
    dec.update(buf, x0, x1, 1020)  # a resize within the grid's tolerance: no rebuild
    assert dec.full_recomputes == 1
    dec.update(buf, x0, x1, 1200)  # wider than the tolerance: columns would exceed a pixel
    assert dec.full_recomputes == 2 and dec.grid != grid
    grid = dec.grid
    dec.update(buf, x1 - 0.25 * (x1 - x0), x1, 1200)  # zoom x4
    assert dec.full_recomputes == 3 and dec.grid is not None and dec.grid.scale > grid.scale
    buf.set_data(buf.x.copy(), buf.y.copy())  # replaced samples: a new epoch
    dec.update(buf, x1 - 0.25 * (x1 - x0), x1, 1200)
    assert dec.full_recomputes == 4


def test_column_grid_and_decimator_refuse_bad_views() -> None:
    grid = ColumnGrid.for_view(0.0, 10.0, 100)
    assert grid.column_range(0.0, 10.0) == (0, 106)  # columns 0.95 px wide, x_max included
    np.testing.assert_array_equal(grid.columns([0.0, 0.0949, 0.095, -0.01]), [0, 0, 1, -1])
    assert math.isclose(grid.column_start(3), 3 * grid.width)
    buf = TraceBuffer(10)
    buf.append(np.arange(5.0), np.zeros(5))
    with pytest.raises(ValueError, match="x_min < x_max"):
        ColumnDecimator().update(buf, 2.0, 2.0, 10)
    with pytest.raises(ValueError, match="n_columns"):
        ColumnDecimator().update(buf, 0.0, 2.0, 0)
    with pytest.raises(ValueError, match="log x view needs x_min > 0"):
        ColumnDecimator().update(buf, 0.0, 2.0, 10, log_x=True)
    with pytest.raises(ValueError, match="narrower than a pixel"):
        decimate_on_grid(buf.x, buf.y, ColumnGrid(0.0, 1e6), 0.0, 4.0, 10)


# ---------------------------------------------------------------------------------------------
# TracePlot


def _phase_record(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) * 2e-7  # 5 MHz pilot rate
    y = 5.0 * np.sin(2 * np.pi * 1e3 * t) + np.cumsum(rng.normal(0, 0.01, n))
    return t, y


def _grid_reference(
    x: np.ndarray, y: np.ndarray, grid: ColumnGrid, x0: float, x1: float
) -> tuple[dict[int, tuple[float, float]], set[int]]:
    """Per grid column overlapping [x0, x1]: (min, max) of the finite y, and the columns
    holding a non-finite y; plain numpy, column by column."""
    k_lo, k_hi = grid.column_range(x0, x1)
    cols = grid.columns(x)
    out: dict[int, tuple[float, float]] = {}
    gaps: set[int] = set()
    for c in np.unique(cols[(cols >= k_lo) & (cols < k_hi)]):
        yc = y[cols == c]
        if (~np.isfinite(yc)).any():
            gaps.add(int(c))
        yc = yc[np.isfinite(yc)]
        if yc.size:
            out[int(c)] = (float(yc.min()), float(yc.max()))
    return out, gaps


def _check_grid_envelope(
    xd: np.ndarray, yd: np.ndarray, x: np.ndarray, y: np.ndarray, grid, x0, x1
) -> None:
    """The drawn samples, column by column, have the reference's min, max and gaps; at most
    3 per column, and at most one neighbour outside the view's columns on each side."""
    ref, ref_gaps = _grid_reference(x, y, grid, x0, x1)
    got, got_gaps = _grid_reference(xd, yd, grid, x0, x1)
    assert got == ref
    assert got_gaps == ref_gaps
    k_lo, k_hi = grid.column_range(x0, x1)
    dcol = grid.columns(xd)
    inside = (dcol >= k_lo) & (dcol < k_hi)
    assert np.count_nonzero(dcol < k_lo) <= 1 and np.count_nonzero(dcol >= k_hi) <= 1
    assert np.bincount(dcol[inside] - k_lo).max(initial=0) <= 3


def _check_envelope(plot: TracePlot, x: np.ndarray, y: np.ndarray) -> None:
    grid = plot.column_grid()
    assert grid is not None
    x0, x1 = plot.x_view()
    xd, yd = plot.displayed()
    _check_grid_envelope(xd, yd, x, y, grid, x0, x1)
    full = decimate_on_grid(x, y, grid, x0, x1, plot.pixel_columns())
    np.testing.assert_array_equal(full[0], xd)  # the incremental result = a full recompute
    np.testing.assert_array_equal(full[1], yd)


def test_traceplot_follows_and_draws_the_envelope(qtbot) -> None:
    plot = TracePlot(("phase",), capacity=200_000, y_label="phase", y_units="rad")
    qtbot.addWidget(plot)
    plot.resize(800, 300)
    plot.show()
    qtbot.waitExposed(plot)
    t, y = _phase_record(300_000)
    plot.append(t[:250_000], y[:250_000])
    plot.append(t[250_000:], y[250_000:])
    plot.refresh()
    x, yy = plot.buffer().x, plot.buffer().y
    np.testing.assert_array_equal(x, t[-200_000:])  # the newest 200k
    # following the whole buffer, time drawn relative to the newest sample
    assert plot.following
    assert plot.x_origin == t[-1]
    x0, x1 = plot.x_view()
    assert math.isclose(x0, t[-200_000], rel_tol=0, abs_tol=1e-12)
    assert math.isclose(x1, t[-1], rel_tol=0, abs_tol=1e-12)
    xd, yd = plot.displayed()
    assert 0 < xd.size <= 3 * (plot.pixel_columns() / GRID_MIN_COLUMN_PX + 2) + 2
    _check_envelope(plot, x, yy)
    item_x, item_y = plot.getPlotItem().listDataItems()[0].getData()
    np.testing.assert_allclose(item_x, xd - t[-1], rtol=0, atol=1e-15)  # what pyqtgraph draws
    np.testing.assert_array_equal(item_y, yd)
    # the y range holds every drawn sample
    y0, y1 = plot.getPlotItem().getViewBox().viewRange()[1]
    assert y0 <= yd.min() and yd.max() <= y1
    # a strip chart of the last 1 ms
    plot.set_window(1e-3)
    plot.refresh()
    x0, x1 = plot.x_view()
    assert math.isclose(x1 - x0, 1e-3, rel_tol=1e-9) and math.isclose(x1, t[-1], rel_tol=1e-12)
    xd, _ = plot.displayed()
    grid = plot.column_grid()
    assert grid is not None
    k_lo, k_hi = grid.column_range(x0, x1)
    # clipped to the view's columns, one neighbour kept on each side
    assert xd[0] < grid.column_start(k_lo) <= xd[1] and xd[-2] < grid.column_start(k_hi)
    assert xd.size < 0.1 * x.size
    _check_envelope(plot, x, yy)


def test_traceplot_user_zoom_stops_following_and_clips(qtbot) -> None:
    plot = TracePlot(capacity=100_000)
    qtbot.addWidget(plot)
    plot.resize(600, 300)
    plot.show()
    qtbot.waitExposed(plot)
    t, y = _phase_record(100_000)
    plot.append(t, y)
    plot.refresh()
    plot.grab()  # paint: pyqtgraph maps the mouse position with the transform of the last paint
    # a real mouse-wheel zoom on the plot
    centre = QtCore.QPointF(plot.viewport().width() / 2, plot.viewport().height() / 2)
    wheel = QtGui.QWheelEvent(
        centre,
        plot.viewport().mapToGlobal(centre),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, 1200),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtCore.QCoreApplication.sendEvent(plot.viewport(), wheel)
    assert not plot.following
    origin = plot.x_origin
    plot.refresh()
    x0, x1 = plot.x_view()
    assert x1 - x0 < 0.5 * (t[-1] - t[0])  # zoomed in
    plot.append(t[-1] + 2e-7 * np.arange(1, 101), np.zeros(100))
    plot.refresh()
    assert plot.x_origin == origin  # frozen while the user looks at a zoomed range
    assert plot.x_view() == (x0, x1)
    xd, _ = plot.displayed()
    grid = plot.column_grid()
    assert grid is not None
    k_lo, k_hi = grid.column_range(x0, x1)
    dcol = grid.columns(xd)
    inside = (dcol >= k_lo) & (dcol < k_hi)
    assert inside.any() and xd.size - np.count_nonzero(inside) <= 2  # + the two neighbours
    _check_envelope(plot, plot.buffer().x, plot.buffer().y)
    plot.follow()
    plot.refresh()
    assert plot.x_view()[1] == plot.buffer().x[-1]


def test_traceplot_renders_the_curve(qtbot) -> None:
    plot = TracePlot(capacity=50_000)
    qtbot.addWidget(plot)
    plot.resize(500, 300)
    plot.show()
    qtbot.waitExposed(plot)
    plot.getPlotItem().listDataItems()[0].setPen((255, 0, 0))
    t, y = _phase_record(50_000)
    plot.append(t, y)
    plot.refresh()
    img = plot.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    arr = np.frombuffer(img.constBits(), dtype=np.uint8).reshape(img.height(), -1, 4)
    red = (arr[..., 2] > 200) & (arr[..., 1] < 60) & (arr[..., 0] < 60)  # BGRA
    cols_with_curve = np.flatnonzero(red.any(axis=0))
    # the curve spans the data area: its columns cover most of the view box width
    assert cols_with_curve.size > 0.8 * plot.getPlotItem().getViewBox().width()


def test_spectrum_plot_log_y_and_bands(qtbot) -> None:
    plot = SpectrumPlot(y_units="V²/Hz")
    qtbot.addWidget(plot)
    plot.resize(700, 300)
    plot.show()
    qtbot.waitExposed(plot)
    f = np.linspace(0.0, 500e6, 1 << 18)
    psd = 1e-12 + 1e-9 * np.exp(-(((f - 200e6) / 5e6) ** 2))
    plot.set_spectrum(f, psd)
    plot.mark_band(175e6, 225e6, "node 2")
    plot.refresh()
    xd, yd = plot.displayed()
    assert xd.size <= 3 * plot.pixel_columns() + 2
    assert yd.max() == psd.max()  # the peak survives decimation
    assert plot.bands_hz() == [(175e6, 225e6)]
    y0, y1 = plot.getPlotItem().getViewBox().viewRange()[1]  # log10 units
    assert y0 <= math.log10(psd.min()) and math.log10(psd.max()) <= y1
    with pytest.raises(ValueError, match="f_lo_hz < f_hi_hz"):
        plot.mark_band(3.0, 1.0)


def test_tick_grid_lines_sit_on_the_axis_ticks(qtbot) -> None:
    plot = TracePlot(relative_x=False, x_units=None)
    qtbot.addWidget(plot)
    plot.resize(600, 300)
    plot.show()
    qtbot.waitExposed(plot)
    plot.append(np.linspace(0.0, 10.0, 1001), np.linspace(-3.0, 3.0, 1001))
    plot.refresh()
    grid = next(i for i in plot.getPlotItem().items if isinstance(i, TickGrid))
    xs, ys = grid.grid_values()
    vb = plot.getPlotItem().getViewBox()
    (x0, x1), (y0, y1) = vb.viewRange()
    axis_x = plot.getPlotItem().getAxis("bottom").tickValues(x0, x1, vb.width())
    axis_y = plot.getPlotItem().getAxis("left").tickValues(y0, y1, vb.height())
    major_x = [v for v in axis_x[0][1] if x0 <= v <= x1]
    major_y = [v for v in axis_y[0][1] if y0 <= v <= y1]
    assert set(major_x) <= set(xs) and set(major_y) <= set(ys)
    tick_x = {v for _, values in axis_x for v in values}
    tick_y = {v for _, values in axis_y for v in values}
    assert set(xs) <= tick_x and set(ys) <= tick_y
    assert 2.0 in xs and 0.0 in ys


# ---------------------------------------------------------------------------------------------
# labctl bench gui


@pytest.mark.parametrize("dsp", [True, False])
def test_benchmark_reports_every_mode(qapp, dsp: bool) -> None:
    r = bench_gui.run_benchmark(
        4000,
        0.2,
        traces=2,
        width_px=500,
        height_px=400,
        dsp=dsp,
        capture_samples=200 * 256 * 2,
    )
    assert set(r["modes"]) == set(bench_gui.MODES)
    for m in r["modes"].values():
        assert m["frames"] >= 1 and m["fps"] > 0
        assert m["points_per_trace"] == [4000, 4000]  # full: pre-filled, then appended to
        assert 0 < m["drawn_points_per_trace"] <= 4000
    assert r["modes"]["plain"]["drawn_points_per_trace"] == 4000
    assert r["modes"]["labctl"]["envelope_matches"] is True
    assert r["modes"]["labctl"]["matches_full_recompute"] is True
    assert r["ratio_vs_plain"] == r["modes"]["labctl"]["fps"] / r["modes"]["plain"]["fps"]
    assert set(r["targets_met"]) == set(bench_gui.MODES)
    assert (r["dsp"] is not None) == dsp
    if dsp:
        assert r["dsp"]["idle_msps"] > 0 and r["modes"]["labctl"]["dsp_msps"] > 0
    json.dumps(r)  # the --json output


def test_benchmark_cli(qapp, capsys) -> None:
    parser = argparse.ArgumentParser()
    bench_gui.add_parser(parser.add_subparsers())
    args = parser.parse_args(["gui", "--traces", "5"])
    assert args.func(args) == 2
    assert "--traces: got 5, expected 1 to 4" in capsys.readouterr().err
    args = parser.parse_args(
        ["gui", "--json", "--points", "2000", "--seconds", "0.1", "--traces", "1", "--no-dsp"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["points_per_trace"] == 2000 and out["traces"] == 1
    assert out["modes"]["labctl"]["envelope_matches"] is True


def test_point_cloud_draws_every_finite_point_as_a_dot(qtbot) -> None:
    import pyqtgraph as pg

    from gui.fastplot import PointCloudItem

    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    cloud = PointCloudItem(color=(255, 0, 0), size_px=2.0)
    plot.addItem(cloud)
    x = np.array([0.0, 1.0, np.nan, 3.0, 4.0])
    y = np.array([1.0, np.inf, 2.0, 3.0, -1.0])
    cloud.set_points(x, y)
    px, py = cloud.points()
    np.testing.assert_array_equal(px, [0.0, 3.0, 4.0])
    np.testing.assert_array_equal(py, [1.0, 3.0, -1.0])
    cx, cy = cloud.getData()  # (almost) zero-length segments, one per point: a dot each
    np.testing.assert_allclose(cx, np.repeat(px, 2), rtol=0, atol=1e-8)
    np.testing.assert_array_equal(cy, np.repeat(py, 2))
    assert cloud.opts["connect"] == "pairs" and cloud.opts["pen"].isCosmetic()
    plot.resize(200, 200)
    plot.show()
    plot.setRange(xRange=(-1, 5), yRange=(-2, 4))
    qtbot.waitExposed(plot)
    image = plot.grab().toImage()  # red dots were painted
    reds = sum(
        1
        for i in range(image.width())
        for j in range(image.height())
        if image.pixelColor(i, j).red() > 200 and image.pixelColor(i, j).green() < 80
    )
    assert reds >= 3
    with pytest.raises(ValueError, match="differ"):
        cloud.set_points(np.zeros(3), np.zeros(2))

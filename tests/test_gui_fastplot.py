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
    SpectrumPlot,
    TraceBuffer,
    TracePlot,
    column_index,
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
    v = buf.version
    buf.clear()
    assert len(buf) == 0 and buf.version == v + 1


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
# TracePlot


def _phase_record(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) * 2e-7  # 5 MHz pilot rate
    y = 5.0 * np.sin(2 * np.pi * 1e3 * t) + np.cumsum(rng.normal(0, 0.01, n))
    return t, y


def _check_envelope(plot: TracePlot, x: np.ndarray, y: np.ndarray) -> None:
    x0, x1 = plot.x_view()
    n = plot.pixel_columns()
    xd, yd = plot.displayed()
    ref = _reference_columns(x, y, x0, x1, n)
    shown = (xd >= x0) & (xd <= x1)
    dcol = column_index(xd[shown], x0, x1, n)
    got = {
        int(c): (float(yd[shown][dcol == c].min()), float(yd[shown][dcol == c].max()))
        for c in np.unique(dcol)
    }
    assert got == ref


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
    assert 0 < xd.size <= 3 * plot.pixel_columns() + 2
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
    assert xd[1] >= x0 and xd[-2] <= x1 and xd[0] < x0  # clipped, one neighbour kept
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
    inside = xd[(xd >= x0) & (xd <= x1)]
    assert inside.size and xd.size - inside.size <= 2  # only the two edge neighbours outside
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

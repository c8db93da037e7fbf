"""``labctl bench gui``: frames per second of million-point live traces while the DSP runs.

Registered by the top-level CLI with ``bench_gui.add_parser(bench_sub)``; the work is done by
:func:`run_benchmark`, which returns the figures as a dict (the ``--json`` output).

Set-up (one process, one run):

* **DSP load**: a worker thread runs the real ISAQN receiver chain
  (:class:`dsp.receiver.ReceiverChain`: band separation, demodulation, symbol sampling, pilot
  phase, unwrap) flat out on a looped synthetic capture (:func:`dsp.receiver.synthetic_capture`:
  one node per trace on carriers 100, 200, 300, 400 MHz, fs 1 GS/s, 50 MBd, a pilot every 10
  symbols, each node's phase drifting and vibrating). Its Numba kernels release the GIL; its
  Python glue competes with the GUI thread for it, as acquisition and DSP threads will in the
  dashboard. Each processed block's unwrapped pilot phase (rad) per node, with its time (s), is
  queued for the GUI thread.
* **Window**: ``--traces`` plots stacked in one ``--width`` x ``--height`` window, each trace
  holding ``--points`` samples: pre-filled with a synthetic phase record, then the DSP's
  output appended every frame (the oldest samples drop out), x range following the newest
  ``--view-fraction`` of the buffer (1: everything, the usual live view), y auto-range.
* **Frame**: drain the DSP queue and append, update the plots, ``QApplication.processEvents()``
  and ``QWidget.grab()`` of the whole window: ``grab`` runs each plot's paint event into a
  pixmap, i.e. the real rasterisation of every curve, axis and grid (offscreen platform when
  there is no display: the raster paint engine, as on screen for QWidgets). Frames per second
  = frames / wall time over ``--seconds`` per mode, after two warm-up frames.

Modes, one after the other on the same data stream:

* ``labctl``: :class:`gui.fastplot.TracePlot` (clip to view, min/max per pixel column on a
  column grid fixed in x, updated incrementally with the samples appended since the last
  frame: :class:`gui.fastplot.ColumnDecimator`; :meth:`~gui.fastplot.TracePlot.refresh`);
* ``pyqtgraph_peak``: ``PlotDataItem.setData`` of the whole buffer with pyqtgraph's own
  ``setDownsampling(auto=True, method="peak")`` and ``setClipToView(True)``;
* ``plain``: ``PlotDataItem.setData`` of the whole buffer, no downsampling or clipping (the
  reference: what a straightforward pyqtgraph plot does).

Every mode has the same decorations (axes with labels, a grid at the axis ticks:
:class:`gui.fastplot.TickGrid`). The labctl
figure includes TracePlot's roll-mode x axis and y-range hysteresis (the axes do not
regenerate their ticks every frame); the pyqtgraph modes scroll an absolute time axis with
auto range, as a straightforward pyqtgraph strip chart does.

Also reported per mode: median/p95 frame time split into update (append + setData/refresh)
and render (processEvents + grab), vertices handed to each curve, points appended per second
and the DSP's throughput (M raw samples/s) during the mode, next to its throughput with no GUI
work (``dsp_idle_msps``). ``envelope_matches``: after the labctl run, the drawn curve of trace
0 is checked against a numpy computation of the min and max of every column (of the plot's
column grid) in view; ``matches_full_recompute``: it equals
:func:`gui.fastplot.decimate_on_grid` (a from-scratch decimation); ``full_recomputes``: how
many times trace 0's columns were all recomputed during the mode (grid or buffer changes).
The DSP's output arrives in one batch per processed block; each frame appends the batches of
a trace as one array (as a dashboard's queue drain does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_PROG = "labctl bench gui"
TARGET_FPS = 30.0
MODES: tuple[str, ...] = ("labctl", "pyqtgraph_peak", "plain")
MODE_LABELS = {
    "labctl": "labctl TracePlot (clip + per-column min/max)",
    "pyqtgraph_peak": "pyqtgraph setDownsampling(peak) + clipToView",
    "plain": "pyqtgraph setData, no downsampling (reference)",
}
FS_HZ = 1.0e9
SYMBOL_RATE_HZ = 50.0e6
PILOT_PERIOD = 10
CARRIERS_HZ: tuple[float, ...] = (100e6, 200e6, 300e6, 400e6)
#: raw samples per DSP block: 256 pilot periods (200 raw samples each), 51.2 us of signal
DSP_BLOCK = 200 * 256
WARMUP_FRAMES = 2

Progress = Callable[[str], None]


def add_parser(bench_subparsers: Any) -> None:
    """Register the ``gui`` sub-command on an argparse sub-parsers object."""
    parser = bench_subparsers.add_parser(
        "gui",
        help="frames/s of million-point live traces while the DSP runs, vs plain pyqtgraph",
        description=(
            "Render a window of live traces (offscreen when there is no display) while the "
            "ISAQN receiver chain runs in a worker thread; frames/s of labctl's TracePlot, "
            "pyqtgraph's peak downsampling and plain pyqtgraph setData, with their ratio."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--points", type=int, default=1_000_000, help="samples per trace (default 1e6)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per mode (default 5)"
    )
    parser.add_argument(
        "--traces", type=int, default=4, help="plots in the window, 1 to 4 (default 4)"
    )
    parser.add_argument("--width", type=int, default=1600, help="window width, px (default 1600)")
    parser.add_argument("--height", type=int, default=1000, help="window height, px (default 1000)")
    parser.add_argument(
        "--view-fraction",
        type=float,
        default=1.0,
        help="show the newest fraction of each buffer (default 1: all of it)",
    )
    parser.add_argument(
        "--no-dsp", action="store_true", help="no DSP thread: synthetic data appended instead"
    )
    parser.add_argument(
        "--dsp-block",
        type=int,
        default=DSP_BLOCK,
        help=f"raw samples per DSP block, a multiple of 200 (default {DSP_BLOCK})",
    )
    parser.add_argument(
        "--dsp-rate",
        type=float,
        default=None,
        metavar="MSPS",
        help="pace the DSP at this many M raw samples/s (default: flat out, the worst case)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        metavar="S",
        help="sys.setswitchinterval during the run (default: Python's, 0.005 s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed of the data")
    parser.set_defaults(func=run_bench_gui)


def ensure_offscreen() -> bool:
    """Select Qt's offscreen platform when there is no display and none was chosen; returns
    True if it set ``QT_QPA_PLATFORM``. Must run before the QApplication exists."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return False
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Data: the DSP worker and the synthetic pre-fill


def _node_phase(k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Node k's optical phase (rad) vs time (s): an offset, a slow drift and a vibration
    (1, 2, 3, 4 kHz, 5 rad peak: a fibre on a vibrating mount; physics.md section 1)."""

    def phase(t_s: np.ndarray) -> np.ndarray:
        return 0.5 * k + 40.0 * t_s + 5.0 * np.sin(2.0 * np.pi * 1.0e3 * (k + 1) * t_s)

    return phase


class DspLoad:
    """The ISAQN receiver chain run flat out in a thread on a looped synthetic capture.

    ``drain()`` (any thread) returns the pilot phases produced since the last call, per node:
    a list of (t_s, phase_rad) float64 arrays. ``samples`` counts raw samples processed,
    ``last_t_s`` is the time of the newest pilot produced (s of stream time).
    """

    def __init__(
        self,
        n_nodes: int,
        capture_samples: int,
        seed: int,
        *,
        block: int = DSP_BLOCK,
        rate_msps: float | None = None,
    ) -> None:
        from dsp.receiver import ReceiverChain, synthetic_capture

        if block < 200 or block % 200:
            raise ValueError(f"DSP block: got {block} samples, expected a multiple of 200")
        self.block = int(block)
        self.rate_msps = rate_msps

        carriers = CARRIERS_HZ[:n_nodes]
        rng = np.random.default_rng(seed)
        n = max(self.block, capture_samples // self.block * self.block)
        phases = [_node_phase(k) for k in range(n_nodes)]
        cap = synthetic_capture(n, FS_HZ, carriers, SYMBOL_RATE_HZ, PILOT_PERIOD, phases, rng)
        self.capture = cap.samples
        self.chain = ReceiverChain(FS_HZ, carriers, SYMBOL_RATE_HZ, PILOT_PERIOD)
        self.n_nodes = n_nodes
        self._lock = threading.Lock()
        self._pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in carriers]
        self.samples = 0
        self.last_t_s = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-gui-dsp", daemon=True)
        self.chain.process(self.capture[: self.block])  # compile or load the Numba kernels
        self.chain.reset()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pos = 0
        t0 = time.perf_counter()
        done = 0
        try:
            while not self._stop.is_set():
                if self.rate_msps:  # paced: block k is due at k * block / rate
                    wait = t0 + done / (self.rate_msps * 1e6) - time.perf_counter()
                    if wait > 0:
                        self._stop.wait(wait)
                block = self.capture[pos : pos + self.block]
                pos = (pos + self.block) % self.capture.size
                done += block.size
                res = self.chain.process(block)
                out = []
                for b in range(self.n_nodes):
                    idx = res[b]["pilot_index"]
                    t = self.chain.symbol_time_s(idx)
                    out.append((t, np.asarray(res[b]["pilot_phase_rad"], dtype=np.float64)))
                with self._lock:
                    for b, item in enumerate(out):
                        if item[0].size:
                            self._pending[b].append(item)
                            self.last_t_s = max(self.last_t_s, float(item[0][-1]))
                    self.samples += block.size
        except BaseException as exc:  # reported by the benchmark, not swallowed
            self.error = exc

    def drain(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        with self._lock:
            out, self._pending = self._pending, [[] for _ in range(self.n_nodes)]
        return out


class SyntheticLoad:
    """No DSP thread (``--no-dsp``): each ``drain()`` returns the pilot phases of the wall time
    elapsed since the previous call at the chain's pilot rate, generated in the GUI thread."""

    def __init__(self, n_nodes: int, seed: int) -> None:
        self.n_nodes = n_nodes
        self.rate_hz = SYMBOL_RATE_HZ / PILOT_PERIOD
        self.rng = np.random.default_rng(seed)
        self.t_s = 0.0
        self.samples = 0
        self.last_t_s = 0.0
        self.error: BaseException | None = None
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def stop(self) -> None:
        pass

    def drain(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        now = time.perf_counter()
        n = min(int((now - self._last) * 1e5), 1 << 20)  # 1e5 points/s per trace
        self._last = now
        t = self.t_s + (np.arange(n, dtype=np.float64) + 1) / self.rate_hz
        self.t_s = self.last_t_s = float(t[-1]) if n else self.t_s
        return [[(t, _node_phase(k)(t))] for k in range(self.n_nodes)]


def _prefill(n: int, k: int, t_end_s: float, rng: np.random.Generator) -> tuple[Any, Any]:
    """n samples of node k's phase (rad) ending just before ``t_end_s`` at the pilot rate,
    with a random-walk phase noise (0.01 rad per pilot)."""
    rate_hz = SYMBOL_RATE_HZ / PILOT_PERIOD
    t = t_end_s - (np.arange(n, 0, -1, dtype=np.float64)) / rate_hz
    y = _node_phase(k)(t) + np.cumsum(rng.normal(0.0, 0.01, n))
    return t, y


# ---------------------------------------------------------------------------------------------
# One mode


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q) * 1e3) if values else float("nan")


def _measure_mode(
    mode: str,
    load: DspLoad | SyntheticLoad,
    *,
    points: int,
    traces: int,
    seconds: float,
    width_px: int,
    height_px: int,
    view_fraction: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    import pyqtgraph as pg
    from PySide6 import QtWidgets

    from gui.fastplot import TickGrid, TraceBuffer, TracePlot, decimate_on_grid

    app = QtWidgets.QApplication.instance()
    assert app is not None
    window = QtWidgets.QWidget()
    window.setWindowTitle(f"{_PROG}: {mode}")
    layout = QtWidgets.QVBoxLayout(window)
    plots: list[Any] = []
    items: list[Any] = []
    buffers: list[TraceBuffer] = []
    for k in range(traces):
        if mode == "labctl":
            plot = TracePlot((f"node {k}",), capacity=points, y_label="phase", y_units="rad")
            buffers.append(plot.buffer())
            items.append(None)
        else:
            plot = pg.PlotWidget()
            plot.setLabel("bottom", "time", units="s")
            plot.setLabel("left", "phase", units="rad")
            plot.getPlotItem().addItem(TickGrid(plot.getPlotItem()), ignoreBounds=True)
            item = plot.plot(pen=pg.mkPen(pg.intColor(k, hues=8)), connect="finite")
            if mode == "pyqtgraph_peak":
                item.setDownsampling(auto=True, method="peak")
                item.setClipToView(True)
            if view_fraction < 1.0:
                plot.getPlotItem().getViewBox().setAutoVisible(y=True)
            buffers.append(TraceBuffer(points, name=f"node {k}"))
            items.append(item)
        plots.append(plot)
        layout.addWidget(plot)
    window.resize(width_px, height_px)
    window.show()
    app.processEvents()

    load.drain()  # discard what came before this mode; the pre-fill ends at the newest pilot
    for k, buf in enumerate(buffers):
        buf.append(*_prefill(points, k, load.last_t_s, rng))

    def update() -> int:
        appended = 0
        for k, batches in enumerate(load.drain()[:traces]):
            if not batches:
                continue
            # the DSP hands over one batch per processed block (~60 per frame and node):
            # appended as one array per frame, as the dashboard's queue drain does
            t = np.concatenate([b[0] for b in batches])
            y = np.concatenate([b[1] for b in batches])
            buf = buffers[k]
            keep = t > buf.x[-1]  # drop what was produced before the pre-fill's end
            buf.append(t[keep], y[keep])
            appended += int(np.count_nonzero(keep))
        for k, plot in enumerate(plots):
            if mode == "labctl":
                if view_fraction < 1.0:
                    x = buffers[k].x
                    plot.set_window(max((x[-1] - x[0]) * view_fraction, 1e-12))
                plot.refresh()
            else:
                x, y = buffers[k].x, buffers[k].y
                if view_fraction < 1.0:
                    span = (x[-1] - x[0]) * view_fraction
                    plot.getPlotItem().getViewBox().setXRange(x[-1] - span, x[-1], padding=0.0)
                items[k].setData(x, y)
        return appended

    for _ in range(WARMUP_FRAMES):
        update()
        app.processEvents()
        window.grab()

    samples0 = load.samples
    frame_s: list[float] = []
    update_s: list[float] = []
    render_s: list[float] = []
    appended = 0
    t_start = time.perf_counter()
    t_stop = t_start + seconds
    now = t_start
    while now < t_stop or not frame_s:
        a = time.perf_counter()
        appended += update()
        b = time.perf_counter()
        app.processEvents()
        window.grab()
        now = time.perf_counter()
        update_s.append(b - a)
        render_s.append(now - b)
        frame_s.append(now - a)
    elapsed = now - t_start
    dsp_samples = load.samples - samples0

    if mode == "labctl":
        drawn = [float(p.displayed()[0].size) for p in plots]
    elif mode == "pyqtgraph_peak":
        drawn = [float(it.getData()[0].size) for it in items]
    else:
        drawn = [float(len(b)) for b in buffers]

    out: dict[str, Any] = {
        "frames": len(frame_s),
        "fps": len(frame_s) / elapsed,
        "frame_ms_median": _percentile_ms(frame_s, 50),
        "frame_ms_p95": _percentile_ms(frame_s, 95),
        "update_ms_median": _percentile_ms(update_s, 50),
        "render_ms_median": _percentile_ms(render_s, 50),
        "drawn_points_per_trace": float(np.mean(drawn)),
        "points_per_trace": [len(b) for b in buffers],
        "appended_points_per_s_per_trace": appended / elapsed / traces,
        "dsp_msps": dsp_samples / elapsed / 1e6,
        "seconds": elapsed,
    }
    if mode == "labctl":
        plot = plots[0]
        out["pixel_columns"] = plot.pixel_columns()
        dec = plot.decimator()
        out["full_recomputes"] = dec.full_recomputes
        x0, x1 = plot.x_view()
        xs, ys = plot.displayed()
        x, y = buffers[0].x, buffers[0].y
        grid = plot.column_grid()
        assert grid is not None
        full_x, full_y = decimate_on_grid(x, y, grid, x0, x1, out["pixel_columns"])
        out["matches_full_recompute"] = bool(
            np.array_equal(full_x, xs) and np.array_equal(full_y, ys, equal_nan=True)
        )
        k_lo, k_hi = grid.column_range(x0, x1)
        col = grid.columns(x)
        inside = (col >= k_lo) & (col < k_hi)
        yin, cin = y[inside], col[inside]
        ok = True
        if yin.size > 2 * out["pixel_columns"]:
            starts = np.flatnonzero(np.r_[True, cin[1:] != cin[:-1]])
            ref_min = np.minimum.reduceat(yin, starts)
            ref_max = np.maximum.reduceat(yin, starts)
            dcol = grid.columns(xs)
            shown = (dcol >= k_lo) & (dcol < k_hi)
            dcol, dy = dcol[shown], ys[shown]
            ok = bool(
                np.array_equal(np.unique(dcol), cin[starts])
                and np.array_equal([dy[dcol == c].min() for c in cin[starts]], ref_min)
                and np.array_equal([dy[dcol == c].max() for c in cin[starts]], ref_max)
            )
        out["envelope_matches"] = ok
    window.close()
    window.deleteLater()
    app.processEvents()
    return out


# ---------------------------------------------------------------------------------------------
# Benchmark


def run_benchmark(
    points: int = 1_000_000,
    seconds: float = 5.0,
    *,
    traces: int = 4,
    width_px: int = 1600,
    height_px: int = 1000,
    view_fraction: float = 1.0,
    dsp: bool = True,
    dsp_block: int = DSP_BLOCK,
    dsp_rate_msps: float | None = None,
    switch_interval_s: float | None = None,
    capture_samples: int = 200 * 4096,
    modes: tuple[str, ...] = MODES,
    seed: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the figures (see the module docstring).

    Creates the QApplication if there is none (call :func:`ensure_offscreen` first on a
    machine without a display).
    """

    def say(msg: str) -> None:
        if progress:
            progress(msg)

    import pyqtgraph as pg
    import PySide6
    from PySide6 import QtWidgets

    if not 1 <= traces <= len(CARRIERS_HZ):
        raise ValueError(f"traces: got {traces}, expected 1 to {len(CARRIERS_HZ)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"modes: unknown {unknown}, expected some of {list(MODES)}")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([_PROG])
    rng = np.random.default_rng(seed)
    old_switch_s = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)

    load: DspLoad | SyntheticLoad
    idle_msps: float | None = None
    if dsp:
        say(f"DSP load: ISAQN receiver chain, {traces} nodes, {capture_samples} looped samples")
        load = DspLoad(traces, capture_samples, seed, block=dsp_block, rate_msps=dsp_rate_msps)
        load.start()
        s0, t0 = load.samples, time.perf_counter()
        time.sleep(min(1.0, seconds))
        idle_msps = (load.samples - s0) / (time.perf_counter() - t0) / 1e6
    else:
        load = SyntheticLoad(traces, seed)
        load.start()
    results: dict[str, Any] = {}
    try:
        for mode in modes:
            say(f"{MODE_LABELS[mode]}: {traces} x {points} points, {seconds:g} s")
            results[mode] = _measure_mode(
                mode,
                load,
                points=points,
                traces=traces,
                seconds=seconds,
                width_px=width_px,
                height_px=height_px,
                view_fraction=view_fraction,
                rng=rng,
            )
            if load.error is not None:
                raise RuntimeError(f"{_PROG}: the DSP thread failed: {load.error!r}")
    finally:
        load.stop()
        sys.setswitchinterval(old_switch_s)

    out: dict[str, Any] = {
        "points_per_trace": points,
        "traces": traces,
        "seconds_per_mode": seconds,
        "window_px": [width_px, height_px],
        "view_fraction": view_fraction,
        "platform": app.platformName(),
        "pyside6": PySide6.__version__,
        "pyqtgraph": pg.__version__,
        "dsp": (
            {
                "chain": "dsp.receiver.ReceiverChain (ISAQN receiver), 1 thread",
                "fs_hz": FS_HZ,
                "carriers_hz": list(CARRIERS_HZ[:traces]),
                "symbol_rate_hz": SYMBOL_RATE_HZ,
                "pilot_period": PILOT_PERIOD,
                "block_samples": dsp_block,
                "paced_msps": dsp_rate_msps,
                "idle_msps": idle_msps,
            }
            if dsp
            else None
        ),
        "switch_interval_s": sys.getswitchinterval()
        if switch_interval_s is None
        else switch_interval_s,
        "render": "QApplication.processEvents() + QWidget.grab() of the whole window per frame",
        "modes": results,
        "cpus": os.cpu_count(),
        "target_fps": TARGET_FPS,
    }
    fps = {m: r["fps"] for m, r in results.items()}
    out["ratio_vs_plain"] = (
        fps["labctl"] / fps["plain"] if {"labctl", "plain"} <= fps.keys() else None
    )
    out["ratio_vs_pyqtgraph_peak"] = (
        fps["labctl"] / fps["pyqtgraph_peak"]
        if {"labctl", "pyqtgraph_peak"} <= fps.keys()
        else None
    )
    out["targets_met"] = {m: r["fps"] >= TARGET_FPS for m, r in results.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Output


def print_table(result: dict[str, Any], console: Any) -> None:
    """The benchmark as a rich table plus the ratios and the target."""
    from rich.table import Table

    r = result
    dsp = r["dsp"]
    dsp_text = (
        f"DSP thread: ISAQN receiver chain, {len(dsp['carriers_hz'])} nodes, "
        f"{dsp['idle_msps']:.0f} MS/s with no GUI work"
        if dsp
        else "no DSP thread (synthetic data)"
    )
    table = Table(
        title=(
            f"{_PROG}: {r['traces']} traces x {r['points_per_trace']:,} points, window "
            f"{r['window_px'][0]}x{r['window_px'][1]} px, view = newest "
            f"{r['view_fraction']:.0%}, {r['seconds_per_mode']:g} s per mode, "
            f"Qt platform {r['platform']}"
        )
    )
    table.add_column("mode")
    for col in (
        "frames/s",
        "frame ms p50",
        "frame ms p95",
        "update ms",
        "render ms",
        "drawn pts/trace",
        "appended pts/s/trace",
        "DSP MS/s",
    ):
        table.add_column(col, justify="right")
    for mode, m in r["modes"].items():
        table.add_row(
            MODE_LABELS[mode],
            f"{m['fps']:.1f}",
            f"{m['frame_ms_median']:.1f}",
            f"{m['frame_ms_p95']:.1f}",
            f"{m['update_ms_median']:.1f}",
            f"{m['render_ms_median']:.1f}",
            f"{m['drawn_points_per_trace']:,.0f}",
            f"{m['appended_points_per_s_per_trace']:,.0f}",
            f"{m['dsp_msps']:.0f}",
        )
    console.print(table)
    console.print(dsp_text + f"; {r['cpus']} CPUs; {r['render']}")
    if r["ratio_vs_plain"] is not None:
        console.print(f"ratio labctl / plain pyqtgraph: {r['ratio_vs_plain']:.1f}x")
    if r["ratio_vs_pyqtgraph_peak"] is not None:
        console.print(
            f"ratio labctl / pyqtgraph peak downsampling: {r['ratio_vs_pyqtgraph_peak']:.2f}x"
        )
    lab = r["modes"].get("labctl")
    if lab is not None:
        met = "ok" if r["targets_met"]["labctl"] else "MISSED"
        console.print(
            f"labctl: {lab['fps']:.1f} frames/s, target >= {TARGET_FPS:g}: {met}; drawn "
            f"envelope = numpy per-column min/max: {lab['envelope_matches']}"
        )


def _validate(args: argparse.Namespace) -> str | None:
    if args.points < 1000:
        return f"--points: got {args.points}, expected >= 1000"
    if not args.seconds > 0:
        return f"--seconds: got {args.seconds}, expected > 0"
    if not 1 <= args.traces <= len(CARRIERS_HZ):
        return f"--traces: got {args.traces}, expected 1 to {len(CARRIERS_HZ)}"
    if args.width < 200 or args.height < 200:
        return f"--width/--height: got {args.width}x{args.height}, expected >= 200 each"
    if not 0 < args.view_fraction <= 1:
        return f"--view-fraction: got {args.view_fraction}, expected in (0, 1]"
    if args.dsp_block < 200 or args.dsp_block % 200:
        return f"--dsp-block: got {args.dsp_block}, expected a positive multiple of 200"
    if args.dsp_rate is not None and not args.dsp_rate > 0:
        return f"--dsp-rate: got {args.dsp_rate}, expected > 0 (M samples/s)"
    if args.switch_interval is not None and not args.switch_interval > 0:
        return f"--switch-interval: got {args.switch_interval}, expected > 0"
    return None


def run_bench_gui(args: argparse.Namespace) -> int:
    """Execute ``labctl bench gui``; returns the exit code (0 ok, 2 usage)."""
    problem = _validate(args)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    if ensure_offscreen():
        print(f"{_PROG}: no display: rendering offscreen", file=sys.stderr)
    result = run_benchmark(
        args.points,
        args.seconds,
        traces=args.traces,
        width_px=args.width,
        height_px=args.height,
        view_fraction=args.view_fraction,
        dsp=not args.no_dsp,
        dsp_block=args.dsp_block,
        dsp_rate_msps=args.dsp_rate,
        switch_interval_s=args.switch_interval,
        seed=args.seed,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(result))
    else:
        from rich.console import Console

        print_table(result, Console())
    return 0

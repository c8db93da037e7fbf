"""The ISAQN panels of the dashboard: receiver spectrum, phase, constellation + CV-QKD, location.

Each panel is a ``QWidget`` with a ``title`` (its dock's title) and a stable ``objectName``
(saved layouts), built from the bench's config. The main window calls, on the GUI thread,

* ``update_frame(frame)`` with an :class:`labctl.isaqn_view.IsaqnFrame` (spectrum, new phase
  samples, phase PSD, constellation: computed by :class:`labctl.isaqn_view.IsaqnView` on the
  data source's thread), and
* ``update_status(status)`` with a :class:`labctl.isaqn_status.NetworkStatus` (one per update
  interval: SPM flags, CV-QKD figures, located events).

Both only copy data into plots and labels (no DSP). Long traces go through
:class:`gui.fastplot.TracePlot` / :class:`gui.fastplot.SpectrumPlot` (ring buffer, clip to
view, per-pixel peak decimation), redrawn by their own refresh timers; :meth:`refresh` of each
panel redraws at once (tests, screenshots).

Every panel has accessors that return what it shows (documented on each); they are what the
tests and the lead's end-to-end tests assert on.

Colours: node k is drawn in ``pg.intColor(k, hues=8)`` in every panel (the colour
:class:`~gui.fastplot.TracePlot` gives its k-th trace); a vibrating node's band turns red.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from numpy.typing import NDArray
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.fastplot import PointCloudItem, SpectrumPlot, TracePlot
from labctl.isaqn_config import IsaqnConfig
from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus
from labctl.isaqn_view import MAX_WINDOW_S, WINDOW_S, IsaqnFrame, band_edges_hz

FloatArray = NDArray[np.float64]

#: band shading of a quiet node and of a vibrating one (RGBA)
QUIET_BRUSH = (100, 160, 255, 40)
VIBRATING_BRUSH = (255, 40, 40, 90)
#: window choices of the phase panel [s] (at most the view's history)
WINDOW_CHOICES_S = tuple(w for w in (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0) if w <= MAX_WINDOW_S)
#: located events listed by the location panel
EVENTS_SHOWN = 5


def node_color(k: int) -> object:
    """Node k's colour in every ISAQN panel."""
    return pg.intColor(k, hues=8)


def _isaqn(config: object) -> IsaqnConfig | None:
    """The ``[isaqn]`` section of a bench config (or the section itself, or None)."""
    if config is None or isinstance(config, IsaqnConfig):
        return config
    iq = getattr(config, "isaqn", None)
    if not isinstance(iq, IsaqnConfig):
        raise ValueError(
            f"expected an IsaqnConfig or a bench config with an [isaqn] section, got "
            f"{type(config).__name__}"
        )
    return iq


def _names(config: IsaqnConfig | None) -> list[str]:
    return [] if config is None else [n.name for n in config.nodes]


def _fmt(value: float, spec: str) -> str:
    return "-" if not math.isfinite(value) else format(value, spec)


def _fmt_ci(value: float, ci: tuple[float, float], spec: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:{spec}} [{_fmt(ci[0], spec)}, {_fmt(ci[1], spec)}]"


# ---------------------------------------------------------------------------------------------
# Spectrum


@dataclass
class _BandMark:
    region: pg.LinearRegionItem
    label: pg.InfLineLabel
    text: str
    flagged: bool = False


class SpectrumPanel(QWidget):
    """The receiver's averaged spectrum (two-sided, I + jQ) with each node's band marked.

    A node the SPM flags as vibrating (``NodeStatus.vibrating``) has its band shaded red and
    labelled ``"node2: 37 Hz, 6.1 dB"`` (lowest significant vibration line and castdown; the
    frequency is omitted when the detector reports none).

    Accessors: :meth:`spectrum` (the spectrum plotted, full resolution), :meth:`displayed`
    (the decimated samples drawn), :meth:`bands_hz`, :meth:`band_label`,
    :meth:`band_flagged`, :meth:`info_text`.
    """

    title = "Receiver spectrum"

    def __init__(self, config: object = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("isaqn-spectrum")
        self.plot = SpectrumPlot(("spectrum",), y_label="PSD [V²/Hz]", y_units=None)
        self.info = QLabel("no data yet")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.info)
        self._marks: dict[str, _BandMark] = {}
        self._statuses: dict[str, NodeStatus] = {}
        iq = _isaqn(config)
        if iq is not None:
            edges = band_edges_hz(iq)
            self._mark_bands(
                [(n.name, lo, hi) for n, (lo, hi) in zip(iq.nodes, edges, strict=True)]
            )
        self.plot.start_auto_refresh()

    def _mark_bands(self, bands: list[tuple[str, float, float]]) -> None:
        for name, lo, hi in bands:
            if name in self._marks:
                continue
            region = self.plot.mark_band(lo, hi, color=QUIET_BRUSH)
            # staggered down the plot: neighbouring bands' labels do not overlap
            position = 0.95 - 0.1 * (len(self._marks) % 4)
            label = pg.InfLineLabel(
                region.lines[0], text=name, position=position, anchors=[(0, 0), (0, 0)]
            )
            self._marks[name] = _BandMark(region, label, name)
            status = self._statuses.get(name)
            if status is not None:
                self._flag(status)

    def _flag(self, node: NodeStatus) -> None:
        mark = self._marks.get(node.name)
        if mark is None:
            return
        if node.vibrating:
            parts = []
            if math.isfinite(node.vibration_freq_hz):
                parts.append(f"{node.vibration_freq_hz:.0f} Hz")
            parts.append(f"{node.castdown_db:.1f} dB" if math.isfinite(node.castdown_db) else "")
            detail = ", ".join(p for p in parts if p) or "vibrating"
            text = f"{node.name}: {detail}"
            brush, color = VIBRATING_BRUSH, (255, 60, 60)
        else:
            text, brush, color = node.name, QUIET_BRUSH, (200, 200, 200)
        mark.region.setBrush(pg.mkBrush(brush))
        mark.region.update()
        mark.label.format = text.replace("{", "{{").replace("}", "}}")
        mark.label.setColor(color)
        mark.label.valueChanged()
        mark.text = text
        mark.flagged = bool(node.vibrating)

    def update_frame(self, frame: IsaqnFrame) -> None:
        """Show the frame's spectrum (and mark bands not yet marked)."""
        self._mark_bands([(n.name, n.band_lo_hz, n.band_hi_hz) for n in frame.nodes])
        if frame.spectrum_freq_hz.size:
            self.plot.set_spectrum(frame.spectrum_freq_hz, frame.spectrum_psd_v2_per_hz)
            self.info.setText(
                f"{frame.record_kind} records, {frame.spectrum_averages} averages over "
                f"{frame.spectrum_records} records; t = {frame.t_s:.2f} s"
            )

    def update_status(self, status: NetworkStatus) -> None:
        """Vibration flags of the nodes."""
        for node in status.nodes:
            self._statuses[node.name] = node
            self._flag(node)

    def refresh(self) -> None:
        """Redraw now (the plot also redraws on its own timer)."""
        self.plot.refresh()

    # -- accessors ---------------------------------------------------------------------------
    def spectrum(self) -> tuple[FloatArray, FloatArray]:
        """(freq_hz, psd_v2_per_hz) plotted, every bin (copies)."""
        buf = self.plot.buffer("spectrum")
        return buf.x.copy(), buf.y.copy()

    def displayed(self) -> tuple[FloatArray, FloatArray]:
        """The (decimated) samples drawn at the last refresh."""
        return self.plot.displayed("spectrum")

    def bands_hz(self) -> dict[str, tuple[float, float]]:
        """Each node's marked band (f_lo_hz, f_hi_hz)."""
        out = {}
        for name, mark in self._marks.items():
            lo, hi = mark.region.getRegion()
            out[name] = (float(lo), float(hi))
        return out

    def band_label(self, name: str) -> str:
        """The text shown on ``name``'s band."""
        return self._marks[name].text

    def band_flagged(self, name: str) -> bool:
        """True while ``name``'s band is shown as vibrating (red)."""
        return self._marks[name].flagged

    def band_brush_rgba(self, name: str) -> tuple[int, int, int, int]:
        """The shading colour of ``name``'s band."""
        c = self._marks[name].region.brush.color()
        return c.red(), c.green(), c.blue(), c.alpha()

    def info_text(self) -> str:
        return self.info.text()


# ---------------------------------------------------------------------------------------------
# Phase


class PhasePanel(QWidget):
    """Per node unwrapped pilot phase (the vibration waveform) over the last window, and its
    phase PSD (log-log, computed by the view over the same window).

    The window combo box sets the trace's time window and emits :attr:`windowChanged` (s)
    for the data source to forward to :meth:`labctl.isaqn_view.IsaqnView.set_window_s`.
    A re-synchronisation (``NodeFrame.breaks``) is drawn as a gap: a NaN sample inserted at
    the first sample of the new stream (the phase jump there is a new phase reference, not a
    vibration).

    Accessors: :meth:`phase` (the samples in the trace buffer, gaps included),
    :meth:`displayed_phase`, :meth:`psd`, :attr:`window_s`.
    """

    title = "Phase and phase PSD"
    #: the window the user chose [s]
    windowChanged = Signal(float)

    def __init__(
        self, config: object = None, parent: QWidget | None = None, *, window_s: float = WINDOW_S
    ) -> None:
        super().__init__(parent)
        self.setObjectName("isaqn-phase")
        self.combo = QComboBox()
        self.combo.setToolTip("time window of the phase trace and of its PSD")
        for w in WINDOW_CHOICES_S:
            self.combo.addItem(f"{w:g} s", w)
        self.trace = TracePlot((), window_s=window_s, y_label="unwrapped phase", y_units="rad")
        self.trace.getPlotItem().addLegend(offset=(5, 5))
        self.psd_plot = TracePlot(
            (),
            relative_x=False,
            x_label="frequency",
            x_units="Hz",
            y_label="phase PSD [rad²/Hz]",
            y_units=None,
            log_x=True,
            log_y=True,
        )
        top = QHBoxLayout()
        top.addWidget(QLabel("window"))
        top.addWidget(self.combo)
        self.info = QLabel("")
        top.addWidget(self.info, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.trace, 2)
        layout.addWidget(self.psd_plot, 1)
        self._window_s = float(window_s)
        self._select(self._window_s)
        self.combo.currentIndexChanged.connect(self._on_combo)
        for name in _names(_isaqn(config)):
            self._add_node(name)
        self.trace.start_auto_refresh()
        self.psd_plot.start_auto_refresh()

    def _add_node(self, name: str) -> None:
        if name in self.trace.trace_names:
            return
        k = len(self.trace.trace_names)
        pen = pg.mkPen(node_color(k), width=1)
        self.trace.add_trace(name, pen=pen)
        self.psd_plot.add_trace(name, pen=pen, capacity=1 << 16)

    def _select(self, window_s: float) -> None:
        idx = self.combo.findData(window_s)
        if idx < 0:
            self.combo.addItem(f"{window_s:g} s", window_s)
            idx = self.combo.count() - 1
        blocked = self.combo.blockSignals(True)
        self.combo.setCurrentIndex(idx)
        self.combo.blockSignals(blocked)

    def _on_combo(self, index: int) -> None:
        self.set_window_s(float(self.combo.itemData(index)))

    def set_window_s(self, window_s: float) -> None:
        """Show the last ``window_s`` seconds and emit :attr:`windowChanged`."""
        w = float(window_s)
        if not (math.isfinite(w) and 0 < w <= MAX_WINDOW_S):
            raise ValueError(f"window_s: got {window_s!r}, expected 0 < window_s <= {MAX_WINDOW_S}")
        self._window_s = w
        self._select(w)
        self.trace.set_window(w)
        self.windowChanged.emit(w)

    @property
    def window_s(self) -> float:
        """The chosen window [s]."""
        return self._window_s

    def update_frame(self, frame: IsaqnFrame) -> None:
        """Append every node's new phase samples, replace its PSD."""
        for node in frame.nodes:
            self._add_node(node.name)
            self._append(node.name, node.t_s, node.phase_rad, node.breaks)
            f, p = node.psd_freq_hz, node.psd_rad2_per_hz
            if f.size > 1:
                self.psd_plot.set_data(f[1:], p[1:], trace=node.name)  # no DC on a log axis
        if frame.nodes and math.isfinite(frame.nodes[0].psd_window_s):
            n0 = frame.nodes[0]
            self.info.setText(f"PSD over {n0.psd_window_s:.2f} s ending at {n0.psd_t_s:.2f} s")

    def _append(self, name: str, t: FloatArray, p: FloatArray, breaks: NDArray[np.int64]) -> None:
        buf = self.trace.buffer(name)
        cuts = [0, *[int(b) for b in breaks if 0 < b < t.size], t.size]
        starts = {int(b) for b in breaks}
        for a, b in itertools.pairwise(cuts):
            if a >= b:
                continue
            if len(buf) and t[a] < buf.x[-1]:  # time went back: a replay restarted
                buf.clear()
            if a in starts and len(buf):
                buf.append([t[a]], [math.nan])  # a gap: the new stream's phase reference
            buf.append(t[a:b], p[a:b])

    def reset(self) -> None:
        """Forget every sample (a replay restarting)."""
        self.trace.clear_traces()
        self.psd_plot.clear_traces()

    def refresh(self) -> None:
        self.trace.refresh()
        self.psd_plot.refresh()

    # -- accessors ---------------------------------------------------------------------------
    def phase(self, name: str) -> tuple[FloatArray, FloatArray]:
        """(t_s, phase_rad) in ``name``'s trace buffer (NaN at re-synchronisation gaps)."""
        buf = self.trace.buffer(name)
        return buf.x.copy(), buf.y.copy()

    def displayed_phase(self, name: str) -> tuple[FloatArray, FloatArray]:
        """The (decimated, clipped to the window) phase samples drawn at the last refresh."""
        return self.trace.displayed(name)

    def psd(self, name: str) -> tuple[FloatArray, FloatArray]:
        """(freq_hz, psd_rad2_per_hz) plotted for ``name`` (DC excluded)."""
        buf = self.psd_plot.buffer(name)
        return buf.x.copy(), buf.y.copy()


# ---------------------------------------------------------------------------------------------
# Constellation and CV-QKD figures

#: history plots: (NodeStatus field, CI field or None, plot label, unit)
HISTORY = (
    ("transmittance", "transmittance_ci", "T", None),
    ("xi_snu", "xi_ci_snu", "excess noise ξ [SNU]", None),
    ("skr_bps", None, "key rate", "bit/s"),
)
#: the figures table's columns
TABLE_COLUMNS = ("node", "T [95 % CI]", "ξ [SNU] [95 % CI]", "key rate [bit/s]", "symbols", "mode")


class ConstellationPanel(QWidget):
    """Per node constellation (X, P in SNU: the latest received quantum symbols, phase
    corrected) and the CV-QKD figures: transmittance T and excess noise xi with their
    confidence intervals and the key rate, as text (a table) and as history vs data time
    (the CI bounds as dashed traces).

    Accessors: :meth:`points` (the (X, P) of a node's scatter), :meth:`cell_text`,
    :meth:`history` (a quantity's trace for a node), :meth:`history_ci`.
    """

    title = "Constellation and CV-QKD"

    def __init__(self, config: object = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("isaqn-constellation")
        self._scatter: dict[str, PointCloudItem] = {}
        self._extent_snu: dict[str, float] = {}  # half-width of each scatter's square view
        self._rows: dict[str, int] = {}
        self.scatter_area = QGridLayout()
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.history_plots: dict[str, TracePlot] = {}
        hist = QHBoxLayout()
        for key, _, label, unit in HISTORY:
            plot = TracePlot((), capacity=100_000, y_label=label, y_units=unit)
            self.history_plots[key] = plot
            hist.addWidget(plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(self.scatter_area, 3)
        layout.addWidget(self.table, 1)
        layout.addLayout(hist, 2)
        for name in _names(_isaqn(config)):
            self._add_node(name)
        for plot in self.history_plots.values():
            plot.start_auto_refresh()

    def _add_node(self, name: str) -> None:
        if name in self._rows:
            return
        k = len(self._rows)
        self._rows[name] = k
        plot = pg.PlotWidget(title=name)
        plot.setAspectLocked(True)
        plot.setLabel("bottom", "X [SNU]")
        plot.setLabel("left", "P [SNU]")
        plot.showGrid(x=True, y=True, alpha=0.3)
        color = pg.mkColor(node_color(k))
        color.setAlpha(110)
        item = PointCloudItem(color=color, size_px=2.0)
        plot.addItem(item)
        plot.disableAutoRange()  # ranged in _range_constellation: axes not redone every frame
        self._scatter[name] = item
        self._extent_snu[name] = 0.0
        self.scatter_area.addWidget(plot, 0, k)
        self.table.setRowCount(len(self._rows))
        self._set_cell(k, 0, name)
        pen = pg.mkPen(node_color(k), width=1)
        dashed = pg.mkPen(node_color(k), width=1, style=Qt.PenStyle.DashLine)
        for key, ci, _, _ in HISTORY:
            p = self.history_plots[key]
            p.add_trace(name, pen=pen)
            if ci is not None:
                p.add_trace(f"{name} ci-lo", pen=dashed)
                p.add_trace(f"{name} ci-hi", pen=dashed)

    def _set_cell(self, row: int, col: int, text: str) -> None:
        item = self.table.item(row, col)
        if item is None:
            self.table.setItem(row, col, QTableWidgetItem(text))
        else:
            item.setText(text)

    def update_frame(self, frame: IsaqnFrame) -> None:
        """The latest constellation points of every node."""
        for node in frame.nodes:
            self._add_node(node.name)
            x, p = node.constellation_x_snu, node.constellation_p_snu
            self._scatter[node.name].set_points(x, p)
            self._range_constellation(node.name, x, p)

    def _range_constellation(self, name: str, x: FloatArray, p: FloatArray) -> None:
        """A square view centred on 0 that holds every point: grown at once when points leave
        it, shrunk when they use less than half of it (whole SNU, so it rarely changes)."""
        if not x.size:
            return
        reach = float(max(np.max(np.abs(x)), np.max(np.abs(p))))
        extent = self._extent_snu[name]
        if reach > extent or reach < extent / 2:
            extent = float(math.ceil(1.1 * reach)) if math.isfinite(reach) else 1.0
            self._extent_snu[name] = max(extent, 1.0)
            view = self._scatter[name].getViewBox()
            if view is not None:
                e = self._extent_snu[name]
                view.setRange(xRange=(-e, e), yRange=(-e, e), padding=0.0)

    def update_status(self, status: NetworkStatus) -> None:
        """Figures table and one history sample per quantity and node."""
        for node in status.nodes:
            self._add_node(node.name)
            row = self._rows[node.name]
            self._set_cell(row, 1, _fmt_ci(node.transmittance, node.transmittance_ci, ".4f"))
            self._set_cell(row, 2, _fmt_ci(node.xi_snu, node.xi_ci_snu, ".4f"))
            self._set_cell(row, 3, _fmt(node.skr_bps, ".4g"))
            self._set_cell(row, 4, str(node.n_symbols))
            mode = "pilot only" if node.pilot_only else ("locked" if node.locked else "no lock")
            self._set_cell(row, 5, mode)
            for key, ci, _, _ in HISTORY:
                plot = self.history_plots[key]
                t = [status.t_s]
                if len(plot.buffer(node.name)) and status.t_s < plot.buffer(node.name).x[-1]:
                    self._clear_history()
                plot.append(t, [getattr(node, key)], trace=node.name)
                if ci is not None:
                    lo, hi = getattr(node, ci)
                    plot.append(t, [lo], trace=f"{node.name} ci-lo")
                    plot.append(t, [hi], trace=f"{node.name} ci-hi")

    def _clear_history(self) -> None:
        for plot in self.history_plots.values():
            plot.clear_traces()

    def reset(self) -> None:
        """Forget the history (a replay restarting)."""
        self._clear_history()
        for item in self._scatter.values():
            item.setData([], [])

    def refresh(self) -> None:
        for plot in self.history_plots.values():
            plot.refresh()

    # -- accessors ---------------------------------------------------------------------------
    def points(self, name: str) -> tuple[FloatArray, FloatArray]:
        """(X_snu, P_snu) of ``name``'s scatter."""
        x, p = self._scatter[name].points()
        return np.asarray(x, dtype=np.float64), np.asarray(p, dtype=np.float64)

    def cell_text(self, row: int, col: int) -> str:
        """Text of the figures table's cell (columns: :data:`TABLE_COLUMNS`)."""
        item = self.table.item(row, col)
        return "" if item is None else item.text()

    def history(self, quantity: str, name: str) -> tuple[FloatArray, FloatArray]:
        """(t_s, value) history of ``quantity`` ("transmittance", "xi_snu", "skr_bps")."""
        buf = self.history_plots[quantity].buffer(name)
        return buf.x.copy(), buf.y.copy()

    def history_ci(self, quantity: str, name: str) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(t_s, ci_lo, ci_hi) history of ``quantity`` ("transmittance", "xi_snu")."""
        plot = self.history_plots[quantity]
        lo, hi = plot.buffer(f"{name} ci-lo"), plot.buffer(f"{name} ci-hi")
        return lo.x.copy(), lo.y.copy(), hi.y.copy()


# ---------------------------------------------------------------------------------------------
# Location


def ellipse_xy(
    x_m: float, y_m: float, sigma_x_m: float, sigma_y_m: float, n: int = 73
) -> tuple[FloatArray, FloatArray]:
    """Points of the axis-aligned 1-sigma ellipse around (x_m, y_m) (closed: last == first).
    :class:`EventLocation` gives sigma_x and sigma_y only (no covariance), hence no tilt."""
    a = np.linspace(0.0, 2.0 * math.pi, n)
    return x_m + sigma_x_m * np.cos(a), y_m + sigma_y_m * np.sin(a)


class LocationPanel(QWidget):
    """Node positions (the config's x_m, y_m; the center node at the origin, where the
    bench files put it) and the located vibration source: a star at the estimate, its
    1-sigma ellipse, orange and marked "ambiguous" when more than one position fits; the last
    :data:`EVENTS_SHOWN` events listed.

    Accessors: :meth:`node_positions`, :meth:`source_xy`, :meth:`ellipse`,
    :meth:`events_text`, :meth:`source_text`.
    """

    title = "Localisation"

    def __init__(self, config: object = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("isaqn-location")
        self.plot = pg.PlotWidget()
        self.plot.setAspectLocked(True)
        self.plot.setLabel("bottom", "x", units="m")
        self.plot.setLabel("left", "y", units="m")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.nodes_item = pg.ScatterPlotItem(size=12, symbol="o", pen=pg.mkPen("w"))
        self.center_item = pg.ScatterPlotItem(size=14, symbol="s", brush=pg.mkBrush(200, 200, 200))
        self.source_item = pg.ScatterPlotItem(size=18, symbol="star", brush=pg.mkBrush("y"))
        self.ellipse_item = pg.PlotDataItem(pen=pg.mkPen("y", width=1))
        for item in (self.ellipse_item, self.center_item, self.nodes_item, self.source_item):
            self.plot.addItem(item)
        self.source_label = QLabel("no event located yet")
        self.events_label = QLabel("")
        self.events_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.source_label)
        layout.addWidget(self.events_label)
        self._positions: dict[str, tuple[float, float]] = {}
        self._labels: list[pg.TextItem] = []
        self._events: deque[EventLocation] = deque(maxlen=EVENTS_SHOWN)
        self._source: EventLocation | None = None
        iq = _isaqn(config)
        if iq is not None:
            self._set_nodes([(n.name, n.x_m, n.y_m) for n in iq.nodes])

    def _set_nodes(self, nodes: list[tuple[str, float, float]]) -> None:
        positions = {name: (float(x), float(y)) for name, x, y in nodes}
        if positions == self._positions:
            return
        self._positions = positions
        for label in self._labels:
            self.plot.removeItem(label)
        self._labels = []
        brushes = [pg.mkBrush(node_color(k)) for k in range(len(nodes))]
        xs = [p[0] for p in positions.values()]
        ys = [p[1] for p in positions.values()]
        self.nodes_item.setData(xs, ys, brush=brushes)
        self.center_item.setData([0.0], [0.0])
        for name, (x, y) in positions.items():
            label = pg.TextItem(name, anchor=(0.5, -0.4))
            label.setPos(x, y)
            self.plot.addItem(label)
            self._labels.append(label)
        center = pg.TextItem("center", anchor=(0.5, -0.4))
        center.setPos(0.0, 0.0)
        self.plot.addItem(center)
        self._labels.append(center)

    def update_frame(self, frame: IsaqnFrame) -> None:
        """Node positions (only redrawn when they change)."""
        self._set_nodes([(n.name, n.x_m, n.y_m) for n in frame.nodes])

    def update_status(self, status: NetworkStatus) -> None:
        """The located source, if the status has one."""
        loc = status.location
        if loc is None or loc == self._source:
            return
        self._source = loc
        if not self._events or self._events[-1].t_s != loc.t_s:
            self._events.append(loc)
        color = (255, 150, 0) if loc.ambiguous else (255, 230, 0)
        self.source_item.setData([loc.x_m], [loc.y_m], brush=pg.mkBrush(color))
        if math.isfinite(loc.sigma_x_m) and math.isfinite(loc.sigma_y_m):
            self.ellipse_item.setData(*ellipse_xy(loc.x_m, loc.y_m, loc.sigma_x_m, loc.sigma_y_m))
            self.ellipse_item.setPen(pg.mkPen(color, width=1))
        else:
            self.ellipse_item.setData([], [])
        self.source_label.setText(self._describe(loc))
        self.events_label.setText("\n".join(self.events_text()))

    @staticmethod
    def _describe(loc: EventLocation) -> str:
        text = (
            f"source at t = {loc.t_s:.2f} s: x = {loc.x_m:.0f} m, y = {loc.y_m:.0f} m "
            f"(1σ {_fmt(loc.sigma_x_m, '.0f')} m, {_fmt(loc.sigma_y_m, '.0f')} m), "
            f"nodes {', '.join(loc.nodes)}"
        )
        return text + (" - AMBIGUOUS" if loc.ambiguous else "")

    def reset(self) -> None:
        """Forget the events (a replay restarting)."""
        self._events.clear()
        self._source = None
        self.source_item.setData([], [])
        self.ellipse_item.setData([], [])
        self.source_label.setText("no event located yet")
        self.events_label.setText("")

    def refresh(self) -> None:
        """Nothing to do (the plot items draw on change); for symmetry with the others."""

    # -- accessors ---------------------------------------------------------------------------
    def node_positions(self) -> dict[str, tuple[float, float]]:
        """Each node's (x_m, y_m) as drawn, plus "center" at the origin."""
        xs, ys = self.nodes_item.getData()
        out = {
            name: (float(x), float(y)) for name, x, y in zip(self._positions, xs, ys, strict=True)
        }
        cx, cy = self.center_item.getData()
        if len(cx):
            out["center"] = (float(cx[0]), float(cy[0]))
        return out

    def source_xy(self) -> tuple[float, float] | None:
        """The source marker's (x_m, y_m); None before an event."""
        x, y = self.source_item.getData()
        return None if not len(x) else (float(x[0]), float(y[0]))

    def ellipse(self) -> tuple[FloatArray, FloatArray]:
        """The drawn 1-sigma ellipse's points (empty without one)."""
        x, y = self.ellipse_item.getData()
        if x is None:
            return np.zeros(0), np.zeros(0)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def source_text(self) -> str:
        return self.source_label.text()

    def events_text(self) -> list[str]:
        """One line per listed event, newest last."""
        return [self._describe(e) for e in self._events]

"""Entanglement panels of the dashboard: coincidence histograms and the per-pair table.

* :class:`HistogramPanel` draws each user pair's histogram of t_b - t_a from an
  :class:`~labctl.entangle_view.EntanglementFrame` (``update_frame``): cumulative or the last
  update's counts, linear or log y, with the coincidence window shaded and the two Franson side
  peaks marked. Around the central peak (``span_ps`` either side) once the peak is found, the
  whole +-max_delay range before (or with "whole range" ticked).
* :class:`PairTablePanel` shows an :class:`~labctl.entangle_status.EntanglementStatus`
  (``update_status``): one row per pair (singles, coincidences, accidentals, CAR, visibility,
  QBER, key rate) and the network's figures (total key rate, tagger clock, lost events).

Both only present: the frames and statuses are built on the data source's thread
(:mod:`labctl.entangle_view`); ``update_*`` is called on the GUI thread and only sets data and
text. ``-`` stands for a figure that is not available (nan).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from numpy.typing import NDArray
from PySide6 import QtCore, QtWidgets

from labctl.entangle_status import EntanglementStatus, PairStatus
from labctl.entangle_view import EntanglementFrame, PairHistogram

FloatArray = NDArray[np.float64]
NAN_TEXT = "-"
#: histogram half-span shown around the central peak, ps: the three Franson peaks (+-800 ps
#: on the shipped bench) and as much background again on either side
DEFAULT_SPAN_PS = 4000.0
MODES = ("cumulative", "last update")
WINDOW_BRUSH = (60, 200, 90, 60)


def num(value: float, spec: str, scale: float = 1.0) -> str:
    """``value * scale`` formatted with ``spec``; nan / inf as ``-``."""
    if value is None or not math.isfinite(value):
        return NAN_TEXT
    return format(value * scale, spec)


def with_err(value: float, err: float, spec: str, scale: float = 1.0) -> str:
    """``value +- err`` (times ``scale``); the error left out while it is nan."""
    text = num(value, spec, scale)
    if text == NAN_TEXT or err is None or not math.isfinite(err):
        return text
    return f"{text} ± {num(err, spec, scale)}"


class _PairPlot:
    """One pair's plot: the curve, the window region, the side-peak lines."""

    def __init__(self, item: pg.PlotItem) -> None:
        self.item = item
        self.curve = item.plot(pen=pg.mkPen((40, 110, 220), width=1), connect="finite")
        self.region = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(*WINDOW_BRUSH))
        self.region.setZValue(-10)
        self.region.hide()
        item.addItem(self.region, ignoreBounds=True)
        dash = pg.mkPen((150, 150, 150), width=1, style=QtCore.Qt.PenStyle.DashLine)
        self.sides = [pg.InfiniteLine(angle=90, movable=False, pen=dash) for _ in range(2)]
        for line in self.sides:
            line.hide()
            item.addItem(line, ignoreBounds=True)
        self.shown: tuple[FloatArray, FloatArray] = (np.empty(0), np.empty(0))
        self.log_y = False


class HistogramPanel(QtWidgets.QWidget):
    """Coincidence histograms of every user pair, coincidence window shaded.

    Accessors (tests, end-to-end checks): :meth:`pair_names`, :meth:`displayed`
    (bin centres in ps and the counts drawn), :meth:`window_region` (the shaded window),
    :meth:`side_peaks`; :attr:`mode_box` ("cumulative" / "last update"), :attr:`log_box`,
    :attr:`whole_box` are the controls.
    """

    title = "Coincidence histograms"

    def __init__(
        self,
        *,
        span_ps: float = DEFAULT_SPAN_PS,
        columns: int = 3,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if not (math.isfinite(span_ps) and span_ps > 0):
            raise ValueError(f"HistogramPanel: span_ps: got {span_ps!r}, expected > 0")
        if columns < 1:
            raise ValueError(f"HistogramPanel: columns: got {columns!r}, expected >= 1")
        self.setObjectName("entanglement.histograms")
        self.span_ps = float(span_ps)
        self.columns = int(columns)
        self._frame: EntanglementFrame | None = None
        self._plots: dict[str, _PairPlot] = {}

        layout = QtWidgets.QVBoxLayout(self)
        bar = QtWidgets.QHBoxLayout()
        self.mode_box = QtWidgets.QComboBox()
        self.mode_box.addItems(MODES)
        self.mode_box.setToolTip("counts since the run started, or since the previous update")
        self.log_box = QtWidgets.QCheckBox("log y")
        self.whole_box = QtWidgets.QCheckBox("whole range")
        self.whole_box.setToolTip("the whole +-max_delay_ps histogram, not only the peak")
        self.info = QtWidgets.QLabel("waiting for the first update")
        for w in (self.mode_box, self.log_box, self.whole_box):
            bar.addWidget(w)
        bar.addWidget(self.info, 1)
        layout.addLayout(bar)
        self.graphics = pg.GraphicsLayoutWidget()
        layout.addWidget(self.graphics, 1)
        self.mode_box.currentIndexChanged.connect(self._redraw)
        self.log_box.toggled.connect(self._redraw)
        self.whole_box.toggled.connect(self._redraw)

    # -- updates -----------------------------------------------------------------------------
    def update_frame(self, frame: EntanglementFrame) -> None:
        """Show ``frame``'s histograms (GUI thread)."""
        self._frame = frame
        names = [h.name for h in frame.pairs]
        if names != list(self._plots):
            self._build(frame.pairs)
        self._redraw()

    def _build(self, pairs: tuple[PairHistogram, ...]) -> None:
        self.graphics.clear()
        self._plots = {}
        for k, h in enumerate(pairs):
            item = self.graphics.addPlot(row=k // self.columns, col=k % self.columns)
            item.setLabel("bottom", "t_b - t_a", units="s")
            item.setLabel("left", "counts")
            item.getAxis("bottom").setScale(1e-12)  # data in ps, axis in s (SI prefixes)
            self._plots[h.name] = _PairPlot(item)

    def _redraw(self, *_: object) -> None:
        frame = self._frame
        if frame is None:
            return
        cumulative = self.mode_box.currentText() == MODES[0]
        log_y = self.log_box.isChecked()
        for h in frame.pairs:
            plot = self._plots[h.name]
            counts = h.counts_total if cumulative else h.counts_interval
            x, y = h.bin_centers_ps, counts.astype(np.float64)
            found = math.isfinite(h.delay_ps)
            if found and not self.whole_box.isChecked():
                keep = np.abs(x - h.delay_ps) <= self.span_ps
                x, y = x[keep], y[keep]
            if log_y:
                y = np.where(y > 0, y, np.nan)  # an empty bin is a gap on a log axis
            if log_y != plot.log_y:
                plot.item.setLogMode(y=log_y)
                plot.log_y = log_y
            plot.curve.setData(x, y)
            plot.shown = (x, y)
            plot.item.setTitle(
                f"{h.name} ({h.channel_a}/{h.channel_b})  delay {num(h.delay_ps, '.0f')} ps"
            )
            if found and math.isfinite(h.window_lo_ps):
                plot.region.setRegion((h.window_lo_ps, h.window_hi_ps))
                plot.region.show()
                for line, pos in zip(plot.sides, h.side_peaks_ps, strict=True):
                    line.setValue(pos)
                    line.show()
            else:
                plot.region.hide()
                for line in plot.sides:
                    line.hide()
        what = "since start" if cumulative else f"last {frame.interval_s:.2f} s"
        self.info.setText(
            f"t = {frame.time_s:.1f} s, counts {what}, bins of {frame.pairs[0].bin_width_ps:g} ps"
            if frame.pairs
            else "no pairs"
        )

    # -- accessors ---------------------------------------------------------------------------
    def pair_names(self) -> list[str]:
        """The pairs plotted ("alice-bob", ...), in the frame's order."""
        return list(self._plots)

    def displayed(self, pair: str) -> tuple[FloatArray, FloatArray]:
        """(bin centres in ps, counts) drawn for ``pair`` (nan: an empty bin in log mode)."""
        return self._plot(pair).shown

    def window_region(self, pair: str) -> tuple[float, float] | None:
        """The shaded coincidence window [lo, hi] in ps, None while no peak is found."""
        plot = self._plot(pair)
        if not plot.region.isVisible():
            return None
        lo, hi = plot.region.getRegion()
        return float(lo), float(hi)

    def side_peaks(self, pair: str) -> tuple[float, float] | None:
        """Positions of the side-peak lines in ps, None while no peak is found."""
        plot = self._plot(pair)
        if not plot.sides[0].isVisible():
            return None
        return float(plot.sides[0].value()), float(plot.sides[1].value())

    def plot_item(self, pair: str) -> pg.PlotItem:
        return self._plot(pair).item

    def _plot(self, pair: str) -> _PairPlot:
        try:
            return self._plots[pair]
        except KeyError:
            raise KeyError(
                f"no pair {pair!r} in the histograms (pairs: {self.pair_names()})"
            ) from None


#: the pair table's columns: header, cell text of a PairStatus
PAIR_COLUMNS: tuple[tuple[str, Callable[[PairStatus], str]], ...] = (
    ("pair", lambda r: f"{r.user_a}-{r.user_b}"),
    ("channels", lambda r: f"{r.channel_a}/{r.channel_b}"),
    ("singles a (kHz)", lambda r: num(r.singles_a_hz, ".2f", 1e-3)),
    ("singles b (kHz)", lambda r: num(r.singles_b_hz, ".2f", 1e-3)),
    ("coincidences (1/s)", lambda r: num(r.coincidences_hz, ".1f")),
    ("accidentals (1/s)", lambda r: num(r.accidentals_hz, ".2f")),
    ("CAR", lambda r: with_err(r.car, r.car_err, ".1f")),
    ("delay (ps)", lambda r: num(r.delay_ps, ".0f")),
    ("visibility (%)", lambda r: with_err(r.visibility, r.visibility_err, ".1f", 100.0)),
    ("QBER Z (%)", lambda r: num(r.qber_z, ".2f", 100.0)),
    ("QBER X (%)", lambda r: num(r.qber_x, ".2f", 100.0)),
    ("key rate (bit/s)", lambda r: num(r.key_rate_bps, ".1f")),
)
#: the network figures under the table (accessor keys of :meth:`PairTablePanel.summary_text`)
SUMMARY_KEYS = ("time", "total key rate", "clock", "clock offset", "clock drift", "lost events")


def pair_cells(row: PairStatus) -> list[str]:
    """The table's texts for one pair, in :data:`PAIR_COLUMNS` order."""
    return [cell(row) for _, cell in PAIR_COLUMNS]


def summary_texts(status: EntanglementStatus) -> dict[str, str]:
    """The network figures' texts, keys :data:`SUMMARY_KEYS`."""
    return {
        "time": f"{status.time_s:.1f} s (interval {num(status.interval_s, '.2f')} s, "
        f"scan step {status.scan_step})",
        "total key rate": f"{num(status.total_key_rate_bps, '.1f')} bit/s",
        "clock": f"{status.clock_state}, "
        f"{num(status.clock_locked_fraction, '.0f', 100.0)} % of frames locked",
        "clock offset": f"{num(status.clock_offset_ps, '.3f', 1e-6)} us",
        "clock drift": f"{num(status.clock_drift_ppm, '+.4f')} ppm",
        "lost events": str(status.lost_events),
    }


class PairTablePanel(QtWidgets.QWidget):
    """Per-pair figures and the network's (module docstring).

    Accessors: :meth:`headers`, :meth:`cell_text` (row = pair in the status's order, column
    as :data:`PAIR_COLUMNS`), :meth:`row_of` (row of a pair name), :meth:`summary_text`.
    """

    title = "Pairs"

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("entanglement.pairs")
        layout = QtWidgets.QVBoxLayout(self)
        self.table = QtWidgets.QTableWidget(0, len(PAIR_COLUMNS))
        self.table.setHorizontalHeaderLabels([h for h, _ in PAIR_COLUMNS])
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(
            QtWidgets.QHeaderView.ResizeMode.ResizeToContents
        )
        layout.addWidget(self.table, 1)
        form = QtWidgets.QFormLayout()
        self._summary: dict[str, QtWidgets.QLabel] = {}
        for key in SUMMARY_KEYS:
            label = QtWidgets.QLabel(NAN_TEXT)
            label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            self._summary[key] = label
            form.addRow(f"{key}:", label)
        layout.addLayout(form)

    def update_status(self, status: EntanglementStatus) -> None:
        """Show ``status`` (GUI thread)."""
        t = self.table
        if t.rowCount() != len(status.pairs):
            t.setRowCount(len(status.pairs))
        for i, row in enumerate(status.pairs):
            for j, text in enumerate(pair_cells(row)):
                item = t.item(i, j)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    align = QtCore.Qt.AlignmentFlag
                    item.setTextAlignment(
                        (align.AlignLeft if j < 2 else align.AlignRight) | align.AlignVCenter
                    )
                    t.setItem(i, j, item)
                if item.text() != text:
                    item.setText(text)
        for key, text in summary_texts(status).items():
            self._summary[key].setText(text)

    # -- accessors ---------------------------------------------------------------------------
    def headers(self) -> list[str]:
        return [h for h, _ in PAIR_COLUMNS]

    def cell_text(self, row: int, col: int | str) -> str:
        """Text of the cell (``col``: index or header)."""
        j = self.headers().index(col) if isinstance(col, str) else col
        item = self.table.item(row, j)
        if item is None:
            raise IndexError(
                f"no cell ({row}, {col}) in the pair table ({self.table.rowCount()} rows)"
            )
        return item.text()

    def row_of(self, pair: str) -> int:
        """Row of pair "user_a-user_b"."""
        for i in range(self.table.rowCount()):
            if self.cell_text(i, 0) == pair:
                return i
        raise KeyError(f"no pair {pair!r} in the table")

    def summary_text(self, key: str) -> str:
        """Text of a network figure (keys: :data:`SUMMARY_KEYS`)."""
        try:
            return self._summary[key].text()
        except KeyError:
            raise KeyError(f"no summary {key!r} (keys: {', '.join(SUMMARY_KEYS)})") from None

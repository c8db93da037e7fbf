"""Control panels of the dashboard: the feedback loops and the interlocks.

* :class:`LoopsPanel` (``update_frame`` with an :class:`~labctl.entangle_view.EntanglementFrame`):
  a table of every loop (state, setpoint, measurement, output, forecast error, fault) and, for
  the loop selected in it, its history against data time: setpoint and measurement, output,
  and for a phase lock the interferometer's free-running phase with the drift predictor's
  forecast of it (made ``horizon_ticks`` updates earlier) and the forecast's running RMS error.
  Histories are :class:`gui.fastplot.TracePlot` s (clipped and decimated per pixel column).
* :class:`InterlocksPanel` (``update_status`` with any status that has ``time_s``,
  ``interlocks`` and ``messages``: :class:`~labctl.entangle_status.EntanglementStatus`,
  :class:`~labctl.loops_job.LoopsStatus`): each rule's state (coloured), since when, the last
  value, the reason and the actions taken; and a log, newest first, of every state change,
  action change and status message, kept across updates (up to ``max_log`` entries).

Both only present what the data source's thread built; ``update_*`` run on the GUI thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PySide6 import QtCore, QtGui, QtWidgets

from gui.fastplot import TracePlot
from labctl.entangle_view import DEFAULT_HISTORY_TICKS, EntanglementFrame, LoopSeries
from labctl.interlocks import RuleStatus

FloatArray = NDArray[np.float64]
NAN_TEXT = "-"
LOOP_STATE_COLOURS = {
    "running": QtGui.QColor(190, 235, 190),
    "manual": QtGui.QColor(255, 230, 150),
    "fault": QtGui.QColor(255, 150, 150),
    "stopped": QtGui.QColor(220, 220, 220),
}
RULE_STATE_COLOURS = {
    "armed": QtGui.QColor(190, 235, 190),
    "pending": QtGui.QColor(255, 210, 120),
    "tripped": QtGui.QColor(255, 130, 130),
}
#: traces of a loop's plots, accessor names of :meth:`LoopsPanel.displayed`
LOOP_TRACES = ("setpoint", "measurement", "output", "free phase", "forecast")
LOOP_COLUMNS = (
    "loop",
    "kind",
    "state",
    "setpoint",
    "measurement",
    "output",
    "forecast RMS",
    "fault",
)
RULE_COLUMNS = ("rule", "state", "since (s)", "value", "reason", "actions")
LOG_COLUMNS = ("time", "source", "event")
_SPECS = {"temperature": ".4f", "laser_lock": ".2f", "phase_lock": ".3f"}


def num(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value * scale`` formatted with ``spec``; None / nan / inf as ``-``."""
    if value is None or not math.isfinite(value):
        return NAN_TEXT
    return format(value * scale, spec)


def _last(a: FloatArray) -> float:
    return float(a[-1]) if a.size else math.nan


def _item(table: QtWidgets.QTableWidget, row: int, col: int) -> QtWidgets.QTableWidgetItem:
    item = table.item(row, col)
    if item is None:
        item = QtWidgets.QTableWidgetItem()
        table.setItem(row, col, item)
    return item


def _table(columns: tuple[str, ...]) -> QtWidgets.QTableWidget:
    table = QtWidgets.QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


def _cell(table: QtWidgets.QTableWidget, row: int, col: int | str, columns: tuple[str, ...]) -> str:
    j = columns.index(col) if isinstance(col, str) else col
    item = table.item(row, j)
    if item is None:
        raise IndexError(f"no cell ({row}, {col}) in the table ({table.rowCount()} rows)")
    return item.text()


class _LoopPage(QtWidgets.QWidget):
    """The plots of one loop."""

    def __init__(self, series: LoopSeries, capacity: int) -> None:
        super().__init__()
        unit_in, unit_out = series.units
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.capacity = capacity
        self.main = TracePlot(
            ("setpoint", "measurement"),
            capacity=capacity,
            x_label="data time",
            y_label=f"{series.name} ({unit_in})",
        )
        self.out = TracePlot(
            ("output",), capacity=capacity, x_label="data time", y_label=f"output ({unit_out})"
        )
        layout.addWidget(self.main, 2)
        layout.addWidget(self.out, 1)
        self.plots: dict[str, TracePlot] = {
            "setpoint": self.main,
            "measurement": self.main,
            "output": self.out,
        }
        self.forecast_label: QtWidgets.QLabel | None = None
        if series.is_phase:
            self.phase = TracePlot(
                ("free phase", "forecast"),
                capacity=capacity,
                x_label="data time",
                y_label="free-running phase (rad)",
            )
            self.forecast_label = QtWidgets.QLabel()
            layout.addWidget(self.phase, 2)
            layout.addWidget(self.forecast_label)
            self.plots["free phase"] = self.plots["forecast"] = self.phase

    def show_series(self, s: LoopSeries, predictor: str, horizon: int, tick_s: float) -> None:
        n = self.capacity
        t = s.time_s[-n:]
        self.main.set_data(t, s.setpoint[-n:], trace="setpoint")
        self.main.set_data(t, s.measurement[-n:], trace="measurement")
        self.out.set_data(t, s.output[-n:], trace="output")
        plots = [self.main, self.out]
        if self.forecast_label is not None and s.free_phase_rad.size == s.time_s.size:
            self.phase.set_data(t, s.free_phase_rad[-n:], trace="free phase")
            self.phase.set_data(t, s.forecast_rad[-n:], trace="forecast")
            plots.append(self.phase)
            self.forecast_label.setText(
                f"{predictor} forecast {horizon} update(s) = {horizon * tick_s:g} s ahead: "
                f"RMS error {num(s.forecast_rms_rad, '.3g', 1e3)} mrad over "
                f"{s.forecast_count} updates"
            )
        for plot in plots:
            plot.refresh()


class LoopsPanel(QtWidgets.QWidget):
    """Feedback loops: table of all, plots of the selected one (module docstring).

    Accessors: :meth:`loop_names`, :meth:`cell_text` (row = loop in the frame's order, column
    index or :data:`LOOP_COLUMNS` name), :meth:`row_of`, :meth:`state_colour`,
    :meth:`displayed` ``(loop, trace)`` with trace in :data:`LOOP_TRACES` (x: data time s),
    :meth:`forecast_text`, :meth:`show_loop` / :meth:`current_loop`.
    """

    title = "Loops"

    def __init__(
        self, *, capacity: int = DEFAULT_HISTORY_TICKS, parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(parent)
        if capacity < 1:
            raise ValueError(f"LoopsPanel: capacity: got {capacity!r}, expected >= 1")
        self.setObjectName("control.loops")
        self.capacity = int(capacity)
        layout = QtWidgets.QVBoxLayout(self)
        self.table = _table(LOOP_COLUMNS)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.stack = QtWidgets.QStackedWidget()
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 3)
        layout.addWidget(splitter)
        self._pages: dict[str, _LoopPage] = {}
        self._names: list[str] = []
        self.table.currentCellChanged.connect(self._on_row)

    def update_frame(self, frame: EntanglementFrame) -> None:
        """Show ``frame``'s loops (GUI thread)."""
        t = self.table
        if t.rowCount() != len(frame.loops):
            t.setRowCount(len(frame.loops))
        for i, s in enumerate(frame.loops):
            if s.name not in self._pages:
                page = _LoopPage(s, self.capacity)
                self._pages[s.name] = page
                self.stack.addWidget(page)
            spec = _SPECS.get(s.kind, ".4g")
            unit_in, unit_out = s.units
            texts = (
                s.name,
                s.kind,
                s.state,
                f"{num(_last(s.setpoint), spec)} {unit_in}",
                f"{num(_last(s.measurement), spec)} {unit_in}",
                f"{num(_last(s.output), '.4g')} {unit_out}",
                f"{num(s.forecast_rms_rad, '.3g', 1e3)} mrad" if s.is_phase else "",
                (s.fault_reason or "") if s.state == "fault" else "",
            )
            for j, text in enumerate(texts):
                item = _item(t, i, j)
                if item.text() != text:
                    item.setText(text)
            _item(t, i, 2).setBackground(LOOP_STATE_COLOURS.get(s.state, QtGui.QColor("white")))
            self._pages[s.name].show_series(s, frame.predictor, frame.horizon_ticks, frame.tick_s)
        self._names = [s.name for s in frame.loops]
        if t.currentRow() < 0 and self._names:
            t.setCurrentCell(0, 0)

    def _on_row(self, row: int, *_: int) -> None:
        if 0 <= row < len(self._names):
            self.stack.setCurrentWidget(self._pages[self._names[row]])

    # -- accessors ---------------------------------------------------------------------------
    def loop_names(self) -> list[str]:
        return list(self._names)

    def row_of(self, loop: str) -> int:
        try:
            return self._names.index(loop)
        except ValueError:
            raise KeyError(f"no loop {loop!r} (loops: {', '.join(self._names)})") from None

    def cell_text(self, row: int, col: int | str) -> str:
        return _cell(self.table, row, col, LOOP_COLUMNS)

    def state_colour(self, loop: str) -> QtGui.QColor:
        return self.table.item(self.row_of(loop), 2).background().color()

    def show_loop(self, loop: str) -> None:
        """Select ``loop`` in the table (its plots show)."""
        self.table.setCurrentCell(self.row_of(loop), 0)

    def current_loop(self) -> str | None:
        row = self.table.currentRow()
        return self._names[row] if 0 <= row < len(self._names) else None

    def displayed(self, loop: str, trace: str) -> tuple[FloatArray, FloatArray]:
        """(data time s, values) drawn for ``trace`` (:data:`LOOP_TRACES`) of ``loop``."""
        self.row_of(loop)
        page = self._pages[loop]
        if trace not in page.plots:
            raise KeyError(f"loop {loop!r} has no trace {trace!r} (traces: {list(page.plots)})")
        return page.plots[trace].displayed(trace)

    def plot(self, loop: str, trace: str) -> TracePlot:
        return self._pages[loop].plots[trace]

    def forecast_text(self, loop: str) -> str:
        label = self._pages[loop].forecast_label
        if label is None:
            raise KeyError(f"loop {loop!r} is not a phase lock: no forecast")
        return label.text()


class _Status(Protocol):
    time_s: float
    interlocks: Mapping[str, RuleStatus]
    messages: tuple[str, ...]


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return num(value, ".4g")
    return NAN_TEXT if value is None else str(value)


def _actions_text(actions: Mapping[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in actions.items())


class InterlocksPanel(QtWidgets.QWidget):
    """Interlock rules and their log (module docstring).

    Accessors: :meth:`rule_names`, :meth:`cell_text` (rule table: row = rule in the status's
    order, column index or :data:`RULE_COLUMNS` name), :meth:`row_of`, :meth:`rule_state`,
    :meth:`state_colour`, :meth:`log_entries` (newest first: (time, source, event)).
    """

    title = "Interlocks"

    def __init__(self, *, max_log: int = 2000, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        if max_log < 1:
            raise ValueError(f"InterlocksPanel: max_log: got {max_log!r}, expected >= 1")
        self.setObjectName("control.interlocks")
        self.max_log = int(max_log)
        layout = QtWidgets.QVBoxLayout(self)
        self.table = _table(RULE_COLUMNS)
        self.log = _table(LOG_COLUMNS)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        box = QtWidgets.QWidget()
        box_layout = QtWidgets.QVBoxLayout(box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.addWidget(QtWidgets.QLabel("Log (newest first)"))
        box_layout.addWidget(self.log)
        splitter.addWidget(box)
        layout.addWidget(splitter)
        self._names: list[str] = []
        self._seen: dict[str, RuleStatus] = {}

    def update_status(self, status: _Status) -> None:
        """Show the rules of ``status`` and log what changed since the previous one."""
        when = f"{status.time_s:.1f} s"
        rules = dict(status.interlocks)
        for name, rule in rules.items():
            old = self._seen.get(name)
            if old is None:
                if rule.state != "armed":
                    self._log(when, name, f"{rule.state}: {rule.reason}")
            elif old.state != rule.state:
                self._log(when, name, f"{old.state} -> {rule.state}: {rule.reason}")
            for inst, action in rule.actions.items():
                if old is None or old.actions.get(inst) != action:
                    self._log(when, name, f"{inst}: {action}")
            self._seen[name] = rule
        for message in status.messages:
            self._log(when, "message", message)
        t = self.table
        if t.rowCount() != len(rules):
            t.setRowCount(len(rules))
        self._names = list(rules)
        for i, rule in enumerate(rules.values()):
            texts = (
                rule.rule,
                rule.state,
                num(rule.since_s, ".1f"),
                _value_text(rule.value),
                rule.reason,
                _actions_text(rule.actions),
            )
            for j, text in enumerate(texts):
                item = _item(t, i, j)
                if item.text() != text:
                    item.setText(text)
            colour = RULE_STATE_COLOURS.get(rule.state, QtGui.QColor("white"))
            _item(t, i, 1).setBackground(colour)

    def _log(self, when: str, source: str, event: str) -> None:
        log = self.log
        log.insertRow(0)
        for j, text in enumerate((when, source, event)):
            log.setItem(0, j, QtWidgets.QTableWidgetItem(text))
        if "tripped" in event or "failed" in event:
            for j in range(3):
                log.item(0, j).setForeground(QtGui.QColor(180, 0, 0))
        while log.rowCount() > self.max_log:
            log.removeRow(log.rowCount() - 1)

    # -- accessors ---------------------------------------------------------------------------
    def rule_names(self) -> list[str]:
        return list(self._names)

    def row_of(self, rule: str) -> int:
        try:
            return self._names.index(rule)
        except ValueError:
            raise KeyError(
                f"no interlock rule {rule!r} (rules: {', '.join(self._names)})"
            ) from None

    def cell_text(self, row: int, col: int | str) -> str:
        return _cell(self.table, row, col, RULE_COLUMNS)

    def rule_state(self, rule: str) -> str:
        return self.cell_text(self.row_of(rule), "state")

    def state_colour(self, rule: str) -> QtGui.QColor:
        return self.table.item(self.row_of(rule), 1).background().color()

    def log_entries(self) -> list[tuple[str, str, str]]:
        """The log, newest first: (time, source (rule or "message"), event)."""
        log = self.log
        return [
            (log.item(i, 0).text(), log.item(i, 1).text(), log.item(i, 2).text())
            for i in range(log.rowCount())
        ]

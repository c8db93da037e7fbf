"""The dashboard's run controls: recording (live), timeline and speed (replay), and the log.

They present a source's state and forward the user's actions to it
(:class:`gui.sources.LiveSource`, :class:`gui.sources.ReplaySource`); the work (opening and
closing files, replaying) happens on the source's threads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from gui.sources import LiveSource, RecordingState, ReplaySource

#: replay speeds offered (data seconds per wall second; inf = as fast as possible)
SPEEDS: tuple[tuple[str, float], ...] = (
    ("0.1x", 0.1),
    ("0.25x", 0.25),
    ("0.5x", 0.5),
    ("1x", 1.0),
    ("2x", 2.0),
    ("5x", 5.0),
    ("10x", 10.0),
    ("max", math.inf),
)
ERROR_STYLE = "color: #c0392b; font-weight: bold"


def recording_file_name(bench: str, directory: Path = Path("runs")) -> Path:
    """``runs/<bench>-<UTC>.h5``, the name ``labctl run`` gives its recordings."""
    return directory / f"{bench}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.h5"


def _size_text(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


class RecordingPanel(QWidget):
    """Start/stop recording, the file, and its flush status (polled twice a second)."""

    title = "Recording"

    def __init__(self, source: LiveSource, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("recording")
        self.source = source
        self.file_edit = QLineEdit(str(recording_file_name(source.config.name)))
        self.file_edit.setToolTip("the next recording's file (never overwritten)")
        self.start_button = QPushButton("Start recording")
        self.stop_button = QPushButton("Stop recording")
        self.state_label = QLabel("not recording")
        self.file_label = QLabel("-")
        self.flush_label = QLabel("-")
        self.error_label = QLabel("")
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setWordWrap(True)
        form = QFormLayout()
        form.addRow("next file", self.file_edit)
        form.addRow("state", self.state_label)
        form.addRow("file", self.file_label)
        form.addRow("flush", self.flush_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        layout.addStretch(1)
        self.start_button.clicked.connect(self.start_recording)
        self.stop_button.clicked.connect(self.stop_recording)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._timer.start(500)
        self.set_source(source)

    def set_source(self, source: LiveSource) -> None:
        """Follow ``source`` (a new run of the bench)."""
        if source is not self.source:
            self.source.recording_changed.disconnect(self.show_state)
        self.source = source
        source.recording_changed.connect(self.show_state)
        self.show_state(source.recording_state())

    def start_recording(self) -> None:
        path = Path(self.file_edit.text().strip())
        if path.exists():
            self.error_label.setText(f"{path}: exists; recordings are never overwritten")
            return
        self.error_label.setText("")
        self.source.start_recording(path)
        self.start_button.setEnabled(False)

    def stop_recording(self) -> None:
        self.source.stop_recording()
        self.stop_button.setEnabled(False)

    def poll(self) -> None:
        if self.source.running:
            self.show_state(self.source.recording_state())

    def show_state(self, state: RecordingState) -> None:
        self.state_label.setText("RECORDING" if state.recording else "not recording")
        self.state_label.setStyleSheet("color: #c0392b" if state.recording else "")
        self.file_label.setText("-" if state.path is None else str(state.path))
        running = self.source.running or not self.source.started  # a request waits for it
        self.start_button.setEnabled(running and not state.recording)
        self.stop_button.setEnabled(state.recording)
        if state.recording:
            age = (
                "never"
                if state.last_commit_unix_s is None
                else f"{time.time() - state.last_commit_unix_s:.1f} s ago"
            )
            lost = f", {state.rows_lost} rows NOT recorded" if state.rows_lost else ""
            self.flush_label.setText(
                f"{_size_text(state.file_bytes)} on disk, last commit {age}, queue "
                f"{100 * state.queue_fill:.0f} %{lost}"
            )
            if state.path is not None and str(state.path) == self.file_edit.text().strip():
                self.file_edit.setText(str(recording_file_name(self.source.config.name)))
        else:
            self.flush_label.setText("-")
        self.error_label.setText(state.error or "")


class ReplayPanel(QWidget):
    """The replay's timeline (drag to seek), play/pause and speed."""

    title = "Replay"
    STEPS_PER_S = 100  # slider resolution

    def __init__(self, source: ReplaySource, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("replay")
        self.source = source
        info = source.info
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, max(1, round(info.duration_s * self.STEPS_PER_S)))
        self.slider.setToolTip("data time: drag to go there")
        self.position_label = QLabel(self._time_text(0.0))
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.speed_combo = QComboBox()
        speeds = list(SPEEDS)
        if source.clock.rate not in [v for _, v in speeds]:  # e.g. --speed 3x
            speeds.append((f"{source.clock.rate:g}x", source.clock.rate))
            speeds.sort(key=lambda item: item[1])
        for text, speed in speeds:
            self.speed_combo.addItem(text, speed)
        self.speed_combo.setCurrentIndex(self.speed_combo.findData(source.clock.rate))
        self.file_label = QLabel(f"{info.path} ({info.format}, {info.updates} updates)")
        self.file_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.pause_button)
        row.addWidget(QLabel("speed"))
        row.addWidget(self.speed_combo)
        row.addWidget(self.position_label, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.file_label)
        layout.addWidget(self.slider)
        layout.addLayout(row)
        layout.addStretch(1)
        self.pause_button.toggled.connect(self.set_paused)
        self.speed_combo.currentIndexChanged.connect(
            lambda i: source.set_speed(float(self.speed_combo.itemData(i)))
        )
        self.slider.sliderReleased.connect(
            lambda: self.seek(self.slider.value() / self.STEPS_PER_S)
        )
        source.position.connect(self.show_position)

    def _time_text(self, t_s: float) -> str:
        return f"{t_s:7.2f} s / {self.source.info.duration_s:.2f} s"

    def set_paused(self, paused: bool) -> None:
        self.source.set_paused(paused)
        self.pause_button.setText("Play" if paused else "Pause")

    def seek(self, t_s: float) -> None:
        self.source.seek(t_s)
        self.position_label.setText(self._time_text(t_s) + " (seeking)")

    def show_position(self, t_s: float) -> None:
        self.position_label.setText(self._time_text(t_s))
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(round(t_s * self.STEPS_PER_S))
            self.slider.blockSignals(False)


class LogPanel(QWidget):
    """Progress, status messages and faults, newest last, with the wall time."""

    title = "Log"
    MAX_LINES = 5000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("log")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(self.MAX_LINES)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        self.lines: list[str] = []

    def add(self, text: str, *, fault: bool = False) -> None:
        line = f"{time.strftime('%H:%M:%S')}  {'FAULT: ' if fault else ''}{text}"
        self.lines.append(line)
        del self.lines[: -self.MAX_LINES]
        if fault:
            self.text.appendHtml(f'<span style="{ERROR_STYLE}">{_html(line)}</span>')
        else:
            self.text.appendPlainText(line)

    def add_fault(self, text: str) -> None:
        self.add(text, fault=True)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""The dashboard's main window: one dock per panel, the layout saved between sessions.

Which panels: those of the bench's kind (ISAQN: spectrum, phase and PSD, constellation and
CV-QKD figures, localisation; entanglement: coincidence histograms, pair table, loops,
interlocks), the instrument panels and recording controls when live, the timeline and speed
when replaying, and the log. Every panel is fed by the source's queued signals on the GUI
thread (``update_status`` / ``update_frame``: drawing only); the window forwards the user's
actions to the source.

The layout (dock positions, sizes, floating docks, the window's geometry) is saved with
:class:`QSettings` per bench kind and mode when the window closes, and restored when one opens.

Closing the window while live stops the job first: the window stays until the source reports
``finished`` (the bench is then safe), and only then closes.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from gui import gc_policy
from gui.run_controls import LogPanel, RecordingPanel, ReplayPanel, recording_file_name
from gui.sources import LiveSource, ReplaySource

#: QSettings organisation and application
SETTINGS_ORG, SETTINGS_APP = "labctl", "dashboard"
#: where each panel docks by default
_AREAS = {
    "left": Qt.DockWidgetArea.LeftDockWidgetArea,
    "right": Qt.DockWidgetArea.RightDockWidgetArea,
    "bottom": Qt.DockWidgetArea.BottomDockWidgetArea,
}


def bench_panels(kind: str, config: Any) -> list[tuple[QWidget, str]]:
    """The bench kind's data panels with their default dock area."""
    if kind == "isaqn":
        from gui.isaqn_panels import ConstellationPanel, LocationPanel, PhasePanel, SpectrumPanel

        return [
            (SpectrumPanel(config), "left"),
            (PhasePanel(config), "left"),
            (ConstellationPanel(config), "right"),
            (LocationPanel(config), "right"),
        ]
    if kind == "entanglement":
        from gui.control_panels import InterlocksPanel, LoopsPanel
        from gui.entangle_panels import HistogramPanel, PairTablePanel

        return [
            (HistogramPanel(), "left"),
            (PairTablePanel(), "left"),
            (LoopsPanel(), "right"),
            (InterlocksPanel(), "right"),
        ]
    return []


class MainWindow(QMainWindow):
    """The dashboard on ``source`` (a :class:`LiveSource` or a :class:`ReplaySource`)."""

    def __init__(
        self,
        source: LiveSource | ReplaySource,
        parent: QWidget | None = None,
        *,
        persist_layout: bool = True,
    ) -> None:
        super().__init__(parent)
        gc_policy.acquire()  # cycles collected on this thread only while the window lives
        self._gc_held = True
        #: restore the saved layout and save it on close (off for reproducible screenshots)
        self.persist_layout = persist_layout
        self.source = source
        self.live = isinstance(source, LiveSource)
        self.kind = source.kind
        config = source.config
        mode = "live" if self.live else "replay"
        where = config.path if self.live else source.info.path
        self.setWindowTitle(f"labctl {mode}: {config.name} ({where})")
        self.setDockNestingEnabled(True)
        self.docks: dict[str, QDockWidget] = {}
        self.panels: dict[str, QWidget] = {}
        self.instrument_panels: Any = None
        self._closing = False

        for panel, area in bench_panels(self.kind, config):
            self._dock(panel, area)
        self.log = LogPanel()
        self.state_label = QLabel("starting")
        self.statusBar().addWidget(self.state_label, 1)
        if self.live:
            self.recording = RecordingPanel(source)
            self._dock(self.recording, "right")
            self._instrument_dock = QDockWidget("Instruments", self)
            self._instrument_dock.setObjectName("dock-instruments")
            self._instrument_dock.setWidget(QLabel("connecting to the bench..."))
            self.addDockWidget(_AREAS["right"], self._instrument_dock)
            self.docks["instruments"] = self._instrument_dock
            toolbar = self.addToolBar("Run")
            toolbar.setObjectName("toolbar-run")
            self.stop_action = toolbar.addAction("Stop run", self.stop_run)
            self.stop_action.setToolTip("end the job; the bench is left safe (outputs off)")
            self.start_action = toolbar.addAction("Start again", self.start_again)
            self.start_action.setToolTip("connect and run the bench again (a new recording)")
            self.start_action.setEnabled(False)
        else:
            self.replay = ReplayPanel(source)
            self._dock(self.replay, "bottom")
            source.restarted.connect(self._restarted)
            source.done.connect(self._replay_done)
        self._dock(self.log, "bottom")
        # an instruments-only bench needs less room than the data panels
        self.resize(*((1200, 800) if self.kind == "bench" else (1600, 1000)))
        self._attach(source)
        #: the default split is applied once shown (docks have no sizes before)
        self._split_pending = not (persist_layout and self._restore_layout())

    def _default_split(self) -> None:
        """The default layout gives the left column (the bench's main plots) 45 % of the
        width."""
        area = self.dockWidgetArea
        left = [d for d in self.docks.values() if area(d) == _AREAS["left"]]
        right = [d for d in self.docks.values() if area(d) == _AREAS["right"]]
        if left and right:
            width = self.width()
            self.resizeDocks(
                [left[0], right[0]],
                [int(0.45 * width), int(0.55 * width)],
                Qt.Orientation.Horizontal,
            )

    def _attach(self, source: LiveSource | ReplaySource) -> None:
        """Connect the source's signals to the panels (and, live, to the bench hand-over)."""
        self.source = source
        source.status_ready.connect(self._status)
        source.frame_ready.connect(self._frame)
        source.message.connect(self.log.add)
        source.fault.connect(self._fault)
        source.finished.connect(self._finished)
        phase = self.panels.get("isaqn-phase")
        if phase is not None and hasattr(phase, "windowChanged"):
            phase.windowChanged.connect(source.set_window_s)
        if isinstance(source, LiveSource):
            source.bench_ready.connect(self._bench_ready)
            source.closing.connect(self._bench_closing, Qt.ConnectionType.BlockingQueuedConnection)
            self.recording.set_source(source)

    # -- run control (live) --------------------------------------------------------------
    @Slot()
    def stop_run(self) -> None:
        """End the job; the source makes the bench safe and reports ``finished``."""
        self.stop_action.setEnabled(False)
        self.state_label.setText("stopping: the bench is being made safe...")
        self.source.stop()

    @Slot()
    def start_again(self) -> None:
        """A new live run of the same bench (after a stop or a fault), recorded to a new file
        if the previous run was recording when it started."""
        old = self.source
        if old.running:
            return
        path = None
        if old.record_path is not None:
            path = recording_file_name(old.config.name, old.record_path.parent)
        source = LiveSource(old.config, record_path=path, flush_s=old.flush_s, clock=old.clock)
        for panel in self.panels.values():
            reset = getattr(panel, "reset", None)
            if reset is not None:
                reset()
        self._instrument_dock.setWidget(QLabel("connecting to the bench..."))
        self.instrument_panels = None
        self.state_label.setStyleSheet("")
        self._attach(source)
        self.log.add("starting the bench again")
        self.start_action.setEnabled(False)
        self.stop_action.setEnabled(True)
        source.start()

    # -- layout ---------------------------------------------------------------------------
    def _dock(self, panel: QWidget, area: str) -> QDockWidget:
        name = panel.objectName()
        dock = QDockWidget(getattr(panel, "title", name), self)
        dock.setObjectName(f"dock-{name}")
        dock.setWidget(panel)
        self.addDockWidget(_AREAS[area], dock)
        self.docks[name] = dock
        self.panels[name] = panel
        return dock

    def _settings_key(self) -> str:
        return f"{self.kind}-{'live' if self.live else 'replay'}"

    @staticmethod
    def settings() -> QSettings:
        return QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, SETTINGS_ORG, SETTINGS_APP
        )

    def _restore_layout(self) -> bool:
        """The saved layout, if there is one (True)."""
        s = self.settings()
        geometry = s.value(f"{self._settings_key()}/geometry")
        state = s.value(f"{self._settings_key()}/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        return isinstance(state, QByteArray) and self.restoreState(state)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._split_pending:
            self._split_pending = False
            QTimer.singleShot(0, self, self._default_split)

    def save_layout(self) -> None:
        s = self.settings()
        s.setValue(f"{self._settings_key()}/geometry", self.saveGeometry())
        s.setValue(f"{self._settings_key()}/state", self.saveState())
        s.sync()

    # -- from the source (GUI thread) -------------------------------------------------------
    @Slot(int, object)
    def _status(self, index: int, status: Any) -> None:
        for panel in self.panels.values():
            update = getattr(panel, "update_status", None)
            if update is not None:
                update(status)
        t = getattr(status, "t_s", None)
        t = status.time_s if t is None else t
        self.state_label.setText(f"update {index + 1}, data time {t:.2f} s")

    @Slot(object)
    def _frame(self, frame: Any) -> None:
        for panel in self.panels.values():
            update = getattr(panel, "update_frame", None)
            if update is not None:
                update(frame)

    @Slot(object)
    def _bench_ready(self, bench: Any) -> None:
        from gui.instrument_panel import InstrumentPanels

        self.instrument_panels = InstrumentPanels(bench.instruments)
        self._instrument_dock.setWidget(self.instrument_panels)
        self.log.add(f"connected: {', '.join(bench.instruments)}")
        self.state_label.setText("connected, safe start applied")

    @Slot()
    def _bench_closing(self) -> None:
        """Blocking, from the source's thread before the bench closes: no more writes."""
        if self.instrument_panels is not None:
            self.instrument_panels.shutdown(wait=True)
            self.instrument_panels.setEnabled(False)

    @Slot()
    def _restarted(self) -> None:
        for panel in self.panels.values():
            reset = getattr(panel, "reset", None)
            if reset is not None:
                reset()
        self.log.add("replay: from the start of the file to the chosen time")

    @Slot(object)
    def _replay_done(self, report: Any) -> None:
        if report.mismatches:
            self.log.add_fault(f"replay differs from the live run: {report.mismatches[0]}")

    @Slot(str)
    def _fault(self, text: str) -> None:
        self.log.add_fault(text)
        self.state_label.setText(f"FAULT: {text}")
        self.state_label.setStyleSheet("color: #c0392b; font-weight: bold")

    @Slot(str)
    def _finished(self, why: str) -> None:
        if self.sender() is not self.source:
            return  # a previous run's last word
        self.log.add(why)
        if self.live:
            self.stop_action.setEnabled(False)
            self.start_action.setEnabled(not self._closing)
        if not self.state_label.text().startswith("FAULT"):
            self.state_label.setText(why)
        if self._closing:
            QTimer.singleShot(0, self, self.close)

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if self.source.running:
            # the job ends first (the bench is made safe on its thread); close when finished
            self._closing = True
            self.state_label.setText("stopping: the bench is being made safe...")
            self.source.stop()
            event.ignore()
            return
        if self.persist_layout:
            self.save_layout()
        if self.instrument_panels is not None:
            self.instrument_panels.shutdown(wait=True)
        super().closeEvent(event)
        if self._gc_held:
            self._gc_held = False
            gc_policy.release()

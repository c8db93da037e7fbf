"""Instrument panels generated from the drivers' declared settings.

:class:`InstrumentPanel` shows one connected driver (:class:`drivers.instrument.Instrument`):
one row per declared :class:`~drivers.settings.Setting` (per channel for per-channel settings,
one tab per channel), built from ``type(instrument).settings()`` and nothing else, so a new
driver gets its panel for free. :class:`InstrumentPanels` holds one panel per instrument of a
bench in tabs.

Safety and threading model
--------------------------
- The editor's range is :meth:`Instrument.allowed_range`: the model range intersected with the
  bench file's limits, the same range :meth:`Instrument.validate` checks. The spin boxes do not
  silently clamp a typed number that lies outside it: the number is handed to ``validate``, whose
  refusal (it names the instrument, the setting and the limit) shows in red in the row, and the
  editor goes back to the last good value. Nothing is sent.
- A value ``validate`` accepts on the GUI thread is written by a worker thread (one per panel,
  so one instrument's commands keep their order); the GUI thread never waits on the instrument.
  The result (the value read back, or the :class:`~drivers.errors.InstrumentError` text that
  names instrument and command) comes back through a queued Qt signal and shows in the row and
  in the status line at the bottom of the panel. After an error reported by the instrument the
  setting is read back, so the row shows what the instrument holds, not what was asked; after
  a timeout or a dropped link the panel (and its tab) shows the fault until an operation
  succeeds again (the driver reconnects and resynchronises on the next one), then says so.
- "Read all" reads every readable setting in the worker. Changes made elsewhere (loops, jobs,
  scripts) reach the panel through :meth:`Instrument.add_setting_listener`; the listener runs in
  the thread that wrote the setting and only forwards through a queued signal. The listener is
  removed when the panel is shut down, closed or destroyed.

One known exception: a driver's ``validate`` may itself need a value it has not cached yet
(the 33500B's amplitude/offset window reads the other one once if it was never read); that
read then happens on the GUI thread. The drivers fill those caches on connect.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QCloseEvent, QColor, QKeyEvent, QPalette, QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentError,
    InstrumentTimeout,
)
from drivers.instrument import Instrument
from drivers.settings import Range, Setting
from gui import gc_policy

log = logging.getLogger(__name__)

#: colours of the row messages and the status line (Material red 800 / green 800: readable on
#: light and dark palettes)
ERROR_COLOUR = "#c62828"
OK_COLOUR = "#2e7d32"

#: QSpinBox holds a C int
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
#: range of a float editor whose setting declares none (no driver has one today): wide enough
#: for any lab quantity in SI-prefixed units, small enough for the spin box's size hint
_UNBOUNDED_FLOAT = 1e12
#: decimals of a float editor whose wire format is not fixed-point: at least this many...
_MIN_DECIMALS = 6
#: ... and at most this many (5 ps/div timebases need 12)
_MAX_DECIMALS = 12

RowKey = tuple[str, int | None]


# -- values -------------------------------------------------------------------------------
def editor_decimals(setting: Setting, allowed: Range | None) -> int:
    """Decimals of a float editor.

    A fixed-point wire format (``fmt=".4f"``) is the instrument's resolution: nothing finer can
    be sent, so the editor shows exactly that. Otherwise enough decimals to represent both ends
    of the allowed range exactly, and at least :data:`_MIN_DECIMALS` so a value read back
    (``.10g`` on the wire) is not rounded when it is re-applied.
    """
    fmt = setting.fmt
    if fmt.startswith(".") and fmt.endswith("f") and fmt[1:-1].isdigit():
        return int(fmt[1:-1])
    needed = _MIN_DECIMALS
    if allowed is not None:
        for bound in (allowed.low, allowed.high):
            for decimals in range(_MAX_DECIMALS + 1):
                if math.isclose(round(bound, decimals), bound, rel_tol=1e-12, abs_tol=1e-15):
                    needed = max(needed, decimals)
                    break
            else:
                needed = _MAX_DECIMALS
    return min(needed, _MAX_DECIMALS)


def format_value(setting: Setting, value: Any) -> str:
    """A setting's value as the panel shows it, with units."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif setting.kind is float and setting.choices is None:
        fmt = setting.fmt if setting.fmt.endswith("f") else ".10g"
        text = format(float(value), fmt)
    else:
        text = str(value)
    return f"{text} {setting.units}" if setting.units else text


def _parse_number(widget: QWidget, text: str) -> float | None:
    """A number typed in ``widget`` (its locale first, then plain Python), or None."""
    text = text.strip()
    value, ok = widget.locale().toDouble(text)
    if ok:
        return float(value)
    try:
        return float(text)
    except ValueError:
        return None


# -- editors ------------------------------------------------------------------------------
class _RefusingSpinMixin:
    """Shared logic of the spin boxes: keep a typed out-of-range number instead of eating it.

    Qt's spin boxes refuse the keystroke that takes a number past the range and silently
    correct a number below it. Here such a number stays in the box (``Intermediate``); when
    the box interprets its text (Enter, focus out, Apply) :meth:`fixup` records it, the row
    hands it to ``validate`` (which refuses it with the limit in the message) and Qt puts the
    previous value back.
    """

    refused_number: float | None
    _refused_in_key: bool

    def _is_number(self, text: str) -> bool:
        """True when ``text`` is a number (possibly outside the range)."""
        return _parse_number(self, text) is not None  # type: ignore[arg-type]

    def _capture(self, text: str) -> None:
        number = _parse_number(self, text)  # type: ignore[arg-type]
        if number is not None:
            self.refused_number = number
            self._refused_in_key = True

    def take_refused(self) -> float | None:
        """The out-of-range number typed since the last call, if any (consumed)."""
        number, self.refused_number = self.refused_number, None
        return number

    # Qt virtuals, overridden for both spin boxes (super() is QSpinBox / QDoubleSpinBox)
    def validate(self, text: str, pos: int) -> object:
        result = super().validate(text, pos)  # type: ignore[misc]
        state = result[0] if isinstance(result, tuple) else result
        if state == QValidator.State.Invalid and self._is_number(text):
            return (QValidator.State.Intermediate, text, pos)
        return result

    def fixup(self, text: str) -> str:
        self._capture(text)
        return super().fixup(text)  # type: ignore[misc]

    def keyPressEvent(self, event: QKeyEvent) -> None:
        self._refused_in_key = False
        super().keyPressEvent(event)  # type: ignore[misc]
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self._refused_in_key:
            self.entered.emit()  # type: ignore[attr-defined]


class FloatEditor(_RefusingSpinMixin, QDoubleSpinBox):
    """Float editor: range = the setting's allowed range; Enter emits :attr:`entered`."""

    entered = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        QDoubleSpinBox.__init__(self, parent)
        self.refused_number = None
        self._refused_in_key = False
        self.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
        self.setKeyboardTracking(False)


class IntEditor(_RefusingSpinMixin, QSpinBox):
    """Integer editor: range = the setting's allowed range; Enter emits :attr:`entered`."""

    entered = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        QSpinBox.__init__(self, parent)
        self.refused_number = None
        self._refused_in_key = False
        self.setKeyboardTracking(False)


def make_editor(setting: Setting, allowed: Range | None) -> QWidget:
    """The editor widget of a writable setting, by kind (bool before choices: a checkbox)."""
    if setting.kind is bool:
        return QCheckBox()
    if setting.choices is not None:
        combo = QComboBox()
        for key in setting.choices:
            combo.addItem(str(key), key)
        return combo
    if setting.kind is float:
        spin = FloatEditor()
        spin.setDecimals(editor_decimals(setting, allowed))
        if allowed is not None:
            spin.setRange(allowed.low, allowed.high)
        else:
            spin.setRange(-_UNBOUNDED_FLOAT, _UNBOUNDED_FLOAT)
        return spin
    if setting.kind is int:
        ispin = IntEditor()
        low, high = (allowed.low, allowed.high) if allowed is not None else (_INT32_MIN, _INT32_MAX)
        ispin.setRange(max(_INT32_MIN, math.ceil(low)), min(_INT32_MAX, math.floor(high)))
        return ispin
    return QLineEdit()


def editor_value(editor: QWidget) -> Any:
    """The value an editor holds, as the driver's Python type."""
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentData()
    if isinstance(editor, QSpinBox | QDoubleSpinBox):
        return editor.value()
    assert isinstance(editor, QLineEdit)
    return editor.text()


def set_editor_value(editor: QWidget, value: Any) -> None:
    """Show ``value`` in an editor without marking the row as edited by the user."""
    if value is None:
        return
    if isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    elif isinstance(editor, QComboBox):
        index = editor.findData(value)
        if index >= 0:
            editor.setCurrentIndex(index)
    elif isinstance(editor, QDoubleSpinBox):
        editor.setValue(float(value))
    elif isinstance(editor, QSpinBox):
        editor.setValue(int(value))
    elif isinstance(editor, QLineEdit):
        editor.setText(str(value))


# -- one row --------------------------------------------------------------------------------
@dataclass(eq=False)
class SettingRow:
    """The widgets of one setting (one channel of it) and what the panel knows about it.

    ``editor`` and ``apply_button`` are None for read-only settings, ``readback`` is None for
    write-only ones. ``good_value`` is the last value read from or written to the instrument:
    the editor returns to it when a value is refused.
    """

    setting: Setting
    channel: int | None
    allowed: Range | None
    label: QLabel
    limits: QLabel
    editor: QWidget | None
    apply_button: QPushButton | None
    readback: QLabel | None
    message: QLabel
    good_value: Any = None
    edited: bool = False
    message_is_error: bool = False
    pending: int = 0
    #: the last submit from this row was refused and the editor has not been touched since
    refused: bool = False

    @property
    def key(self) -> RowKey:
        return (self.setting.name, self.channel)

    def show_message(self, text: str, *, error: bool) -> None:
        self.message.setText(text)
        self.message.setToolTip(text)
        self.message.setStyleSheet(f"color: {ERROR_COLOUR if error else OK_COLOUR};")
        self.message_is_error = error

    def show_value(self, value: Any, *, follow_editor: bool) -> None:
        """The instrument has ``value``: read-back, last good value, editor (unless edited)."""
        self.good_value = value
        if self.readback is not None:
            self.readback.setText(format_value(self.setting, value))
        if self.editor is not None and (follow_editor or not self.edited):
            self.reset_editor()

    def reset_editor(self) -> None:
        """Editor back to the last good value; the row no longer holds user edits."""
        if self.editor is not None:
            blocker = self.editor.blockSignals(True)
            try:
                set_editor_value(self.editor, self.good_value)
            finally:
                self.editor.blockSignals(blocker)
        self.edited = False


# -- worker -> GUI ----------------------------------------------------------------------------
class _Forwarder(QObject):
    """Signals emitted from the worker / setting threads, delivered queued to the GUI thread.

    Parentless and kept alive by the closures that emit it, so a late result after the panel
    is gone goes nowhere instead of touching a deleted object.
    """

    #: name, channel, value read back (or written), error text ("" when it worked)
    write_done = Signal(str, object, object, str)
    #: name, channel, value, error text ("" when it worked)
    read_done = Signal(str, object, object, str)
    #: settings read, error text of the failure that stopped the read ("" when none),
    #: whether it was a "Read all"
    read_finished = Signal(int, str, bool)
    #: name, channel, value: the setting was written by someone (listener)
    changed = Signal(str, object, object)


def _error_text(exc: BaseException) -> str:
    """An exception as the user reads it: an InstrumentError's text names instrument/command."""
    if isinstance(exc, InstrumentError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# -- the panel ------------------------------------------------------------------------------
class InstrumentPanel(QWidget):
    """Controls of one connected instrument, generated from its declared settings.

    Parameters
    ----------
    instrument:
        A connected driver.
    read_on_start:
        Read every readable setting (in the worker) as soon as the panel exists.
    """

    #: the status line's new text (for a main window's status bar)
    statusChanged = Signal(str)
    #: True after an operation failed, False once one succeeds again
    faultChanged = Signal(bool)

    def __init__(
        self, instrument: Instrument, parent: QWidget | None = None, *, read_on_start: bool = True
    ) -> None:
        super().__init__(parent)
        self._instrument = instrument
        self._rows: dict[RowKey, SettingRow] = {}
        self._pending = 0
        self._fault: str | None = None
        self._closing = threading.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"gui-{instrument.name}"
        )

        # a worker thread next to Qt objects: cycles are collected on the GUI thread only
        gc_policy.acquire()
        self._gc_held = True
        self._forwarder = _Forwarder()
        queued = Qt.ConnectionType.QueuedConnection
        self._forwarder.write_done.connect(self._on_write_done, queued)
        self._forwarder.read_done.connect(self._on_read_done, queued)
        self._forwarder.read_finished.connect(self._on_read_finished, queued)
        self._forwarder.changed.connect(self._on_changed, queued)

        forwarder = self._forwarder

        def listener(_instrument: str, name: str, channel: int | None, value: Any) -> None:
            try:
                forwarder.changed.emit(name, channel, value)
            except RuntimeError:  # the Qt side is gone (application shutting down)
                pass

        self._listener = listener
        instrument.add_setting_listener(listener)
        # destroyed fires after the Python wrapper is gone: capture only what detach needs
        self.destroyed.connect(lambda *_: instrument.remove_setting_listener(listener))

        self._build()
        if read_on_start:
            self.read_all()

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        inst = self._instrument
        layout = QVBoxLayout(self)
        header = QHBoxLayout()
        title = QLabel(
            f"<b>{inst.name}</b> &nbsp; {type(inst).modelled_on or inst.model} &nbsp; "
            f"<tt>{inst.resource}</tt>"
        )
        title.setToolTip(f"identity: {inst.identity}")
        header.addWidget(title, 1)
        self.read_all_button = QPushButton("Read all")
        self.read_all_button.setToolTip("Read every readable setting from the instrument")
        self.read_all_button.clicked.connect(self.read_all)
        header.addWidget(self.read_all_button)
        layout.addLayout(header)

        settings = type(inst).settings()
        scalar = [s for s in settings.values() if s.channels is None]
        channels = sorted({ch for s in settings.values() for ch in s.channels or ()})
        if channels:
            self.tabs: QTabWidget | None = QTabWidget()
            if scalar:
                self.tabs.addTab(self._page(scalar, None), "Instrument")
            for ch in channels:
                per_channel = [s for s in settings.values() if s.channels and ch in s.channels]
                self.tabs.addTab(self._page(per_channel, ch), f"Channel {ch}")
            layout.addWidget(self.tabs, 1)
        else:
            self.tabs = None
            layout.addWidget(self._page(scalar, None), 1)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _page(self, settings: Iterable[Setting], channel: int | None) -> QWidget:
        grid_host = QWidget()
        grid = QGridLayout(grid_host)
        for col, title in enumerate(("Setting", "Limits", "New value", "", "Instrument", "")):
            grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col)
        for row_index, setting in enumerate(settings, start=1):
            row = self._make_row(setting, channel)
            self._rows[row.key] = row
            widgets = (row.label, row.limits, row.editor, row.apply_button, row.readback)
            for col, widget in enumerate(widgets):
                if widget is not None:
                    grid.addWidget(widget, row_index, col)
            grid.addWidget(row.message, row_index, 5)
        grid.setColumnStretch(5, 1)
        grid.setRowStretch(grid.rowCount(), 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(grid_host)
        return scroll

    def _make_row(self, setting: Setting, channel: int | None) -> SettingRow:
        inst = self._instrument
        allowed = inst.allowed_range(setting.name)
        units = f" ({setting.units})" if setting.units else ""
        label = QLabel(f"{setting.name}{units}")
        tip = [setting.doc]
        if allowed is not None:
            tip.append(f"allowed {allowed} {setting.units} (model range and bench file limits)")
        rate = inst.ramp_rate(setting.name)
        if rate is not None:
            tip.append(f"ramped at {rate:g} {setting.units}/s")
        if not setting.writable:
            tip.append("read-only")
        if not setting.readable:
            tip.append("write-only: the instrument cannot be asked for it")
        label.setToolTip("\n".join(tip))
        limits = QLabel(f"{allowed} {setting.units}".strip() if allowed is not None else "")
        editor = apply_button = None
        if setting.writable:
            editor = make_editor(setting, allowed)
            editor.setToolTip(setting.doc)
            apply_button = QPushButton("Apply")
            # Apply must not take the focus: the editor's text is interpreted by apply() itself
            apply_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        readback = QLabel("?") if setting.readable else None
        message = QLabel("")
        row = SettingRow(
            setting, channel, allowed, label, limits, editor, apply_button, readback, message
        )
        if apply_button is not None:
            apply_button.clicked.connect(lambda *_: self._apply_row(row))
        if editor is not None:
            self._wire_editor(row, editor)
        return row

    def _wire_editor(self, row: SettingRow, editor: QWidget) -> None:
        def mark_edited(*_: object) -> None:
            row.edited = True
            row.refused = False

        if isinstance(editor, FloatEditor | IntEditor):
            editor.lineEdit().textEdited.connect(mark_edited)
            editor.valueChanged.connect(mark_edited)
            editor.editingFinished.connect(lambda: self._check_refused(row))
            editor.entered.connect(lambda: self._apply_row(row))
        elif isinstance(editor, QLineEdit):
            editor.textEdited.connect(mark_edited)
            editor.returnPressed.connect(lambda: self._apply_row(row))
        elif isinstance(editor, QCheckBox):
            editor.toggled.connect(mark_edited)
        elif isinstance(editor, QComboBox):
            editor.currentIndexChanged.connect(mark_edited)

    # -- public API -----------------------------------------------------------------------------
    @property
    def instrument(self) -> Instrument:
        return self._instrument

    @property
    def rows(self) -> Mapping[RowKey, SettingRow]:
        """Every row by (setting name, channel); channel None for instrument-wide settings."""
        return self._rows

    def row(self, name: str, channel: int | None = None) -> SettingRow:
        """The row of one setting (one channel of a per-channel setting)."""
        try:
            return self._rows[(name, channel)]
        except KeyError:
            known = sorted(f"{n}" + (f"[{c}]" if c is not None else "") for n, c in self._rows)
            raise KeyError(
                f"{self._instrument.name}: no panel row for {name!r} channel {channel}; "
                f"rows: {', '.join(known)}"
            ) from None

    @property
    def busy(self) -> bool:
        """True while a write or read is waiting for the worker."""
        return self._pending > 0

    @property
    def fault(self) -> str | None:
        """Text of the last failed operation, None once one has succeeded since."""
        return self._fault

    def status_text(self) -> str:
        return self.status.text()

    def submit(self, name: str, value: Any, channel: int | None = None) -> bool:
        """Validate ``value`` here, then write it in the worker.

        Returns False when ``validate`` refused it: the row shows the refusal, the editor is
        back at the last good value and nothing was sent. True when the write was queued; its
        result arrives later in the row and the status line.
        """
        row = self.row(name, channel)
        try:
            checked = self._instrument.validate(name, value, channel)
        except (InstrumentError, TypeError, ValueError) as exc:
            text = _error_text(exc)
            row.show_message(text, error=True)
            row.reset_editor()
            row.refused = True
            self._set_status(text, error=True)
            return False
        if self._closing.is_set():
            row.show_message("panel closed: not sent", error=True)
            return False
        row.pending += 1
        if row.apply_button is not None:
            row.apply_button.setEnabled(False)
        row.show_message("sending...", error=False)
        self._set_status(f"{self._where(row)}: writing {format_value(row.setting, checked)}")
        self._run(self._write_job(name, checked, channel))
        return True

    def read_all(self) -> None:
        """Read every readable setting in the worker; rows and status line follow."""
        keys = [key for key, row in self._rows.items() if row.setting.readable]
        self.read_all_button.setEnabled(False)
        self._set_status(f"{self._instrument.name}: reading {len(keys)} settings...")
        self._run(self._read_job(keys, report_all=True))

    def read(self, name: str, channel: int | None = None) -> None:
        """Read one setting in the worker."""
        self.row(name, channel)
        self._run(self._read_job([(name, channel)], report_all=False))

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop following the instrument and stop the worker (``wait``: join it).

        Queued jobs are cancelled; one already talking to the instrument finishes (bounded by
        the driver's timeout) and its result goes nowhere.
        """
        self._closing.set()
        self._instrument.remove_setting_listener(self._listener)
        self._executor.shutdown(wait=wait, cancel_futures=True)
        if self._gc_held:
            self._gc_held = False
            gc_policy.release()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    # -- GUI-thread actions -------------------------------------------------------------------
    def _apply_row(self, row: SettingRow) -> None:
        editor = row.editor
        if editor is None:
            return
        if isinstance(editor, FloatEditor | IntEditor):
            editor.interpretText()
            refused = editor.take_refused()
            if refused is not None:
                self.submit(row.setting.name, refused, row.channel)
                return
            if row.refused:
                # the click's focus change already refused the typed number and put the last
                # good value back: re-sending that value is not what the user asked for
                return
        self.submit(row.setting.name, editor_value(editor), row.channel)

    def _check_refused(self, row: SettingRow) -> None:
        """After Enter / focus out: a typed number outside the range gets its refusal."""
        editor = row.editor
        if isinstance(editor, FloatEditor | IntEditor):
            refused = editor.take_refused()
            if refused is not None:
                self.submit(row.setting.name, refused, row.channel)

    def _where(self, row: SettingRow) -> str:
        channel = f"[{row.channel}]" if row.channel is not None else ""
        return f"{self._instrument.name}: {row.setting.name}{channel}"

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)
        self.status.setStyleSheet(f"color: {ERROR_COLOUR};" if error else "")
        self.statusChanged.emit(text)

    def _failed(self, text: str) -> None:
        was = self._fault
        self._fault = text
        self._set_status(text, error=True)
        if was is None:
            self.faultChanged.emit(True)

    def _succeeded(self, text: str) -> None:
        if self._fault is not None:
            text = f"{text} (link OK again after: {self._fault})"
            self._fault = None
            self.faultChanged.emit(False)
        self._set_status(text)

    # -- worker jobs (run in the worker thread; only emit) -------------------------------------
    def _run(self, job: Callable[[], None]) -> None:
        try:
            self._executor.submit(job)
        except RuntimeError:  # executor shut down
            return
        self._pending += 1

    def _write_job(self, name: str, value: Any, channel: int | None) -> Callable[[], None]:
        inst, forwarder = self._instrument, self._forwarder

        def job() -> None:
            readable = inst.setting(name).readable
            try:
                inst.set(name, value, channel)
                shown = inst.get(name, channel) if readable else value
            except Exception as exc:  # every failure reaches the row, never vanishes
                actual = None
                if isinstance(exc, InstrumentCommandError) and readable:
                    # the link is fine: show what the instrument holds after the refusal
                    try:
                        actual = inst.get(name, channel)
                    except InstrumentError:
                        actual = None
                forwarder.write_done.emit(name, channel, actual, _error_text(exc))
                return
            forwarder.write_done.emit(name, channel, shown, "")

        return job

    def _read_job(self, keys: list[RowKey], *, report_all: bool) -> Callable[[], None]:
        inst, forwarder, closing = self._instrument, self._forwarder, self._closing

        def job() -> None:
            n_read, stop_error = 0, ""
            for name, channel in keys:
                if closing.is_set():
                    break
                try:
                    value = inst.get(name, channel)
                except Exception as exc:
                    forwarder.read_done.emit(name, channel, None, _error_text(exc))
                    if isinstance(exc, InstrumentTimeout | InstrumentDisconnected):
                        # the link is down: each further read would wait out its own recovery
                        stop_error = _error_text(exc)
                        break
                    continue
                n_read += 1
                forwarder.read_done.emit(name, channel, value, "")
            forwarder.read_finished.emit(n_read, stop_error, report_all)

        return job

    # -- results (GUI thread) -------------------------------------------------------------------
    def _on_write_done(self, name: str, channel: int | None, value: Any, error: str) -> None:
        self._pending -= 1
        row = self._rows[(name, channel)]
        row.pending -= 1
        if row.apply_button is not None and row.pending == 0:
            row.apply_button.setEnabled(True)
        if error:
            row.show_message(error, error=True)
            if value is not None:  # read back after an instrument error
                row.show_value(value, follow_editor=True)
            else:
                row.reset_editor()
            self._failed(error)
            return
        row.show_value(value, follow_editor=True)
        row.show_message("ok", error=False)
        self._succeeded(f"{self._where(row)} = {format_value(row.setting, value)}")

    def _on_read_done(self, name: str, channel: int | None, value: Any, error: str) -> None:
        row = self._rows[(name, channel)]
        if error:
            row.show_message(error, error=True)
            if row.readback is not None:
                row.readback.setText("?")
            self._failed(error)
            return
        if row.message_is_error:
            row.show_message("", error=False)
        row.show_value(value, follow_editor=False)

    def _on_read_finished(self, n_read: int, stop_error: str, read_all: bool) -> None:
        self._pending -= 1
        if not read_all:
            if not stop_error and self._fault is not None:
                self._succeeded(f"{self._instrument.name}: read {n_read} setting(s)")
            return
        self.read_all_button.setEnabled(True)
        if stop_error:
            self._failed(f"{stop_error} (read stopped after {n_read} settings)")
        elif not any(row.message_is_error for row in self._rows.values()):
            self._succeeded(f"{self._instrument.name}: read {n_read} settings")
        else:
            self._set_status(
                f"{self._instrument.name}: read {n_read} settings; failures are shown in red",
                error=True,
            )

    def _on_changed(self, name: str, channel: int | None, value: Any) -> None:
        row = self._rows.get((name, channel))
        if row is not None:
            row.show_value(value, follow_editor=False)


class InstrumentPanels(QTabWidget):
    """One :class:`InstrumentPanel` tab per instrument of a bench; a failing one turns red."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        parent: QWidget | None = None,
        *,
        read_on_start: bool = True,
    ) -> None:
        super().__init__(parent)
        self.panels: dict[str, InstrumentPanel] = {}
        for name, instrument in instruments.items():
            panel = InstrumentPanel(instrument, read_on_start=read_on_start)
            index = self.addTab(panel, name)
            self.setTabToolTip(
                index, f"{instrument.instrument_class} {instrument.model} at {instrument.resource}"
            )
            panel.faultChanged.connect(lambda fault, p=panel: self._mark(p, fault))
            self.panels[name] = panel

    def panel(self, name: str) -> InstrumentPanel:
        try:
            return self.panels[name]
        except KeyError:
            raise KeyError(
                f"no instrument panel {name!r}; instruments: {', '.join(self.panels)}"
            ) from None

    def _mark(self, panel: InstrumentPanel, fault: bool) -> None:
        index = self.indexOf(panel)
        if index >= 0:
            normal = self.palette().color(QPalette.ColorRole.WindowText)
            self.tabBar().setTabTextColor(index, QColor(ERROR_COLOUR) if fault else normal)

    def shutdown(self, *, wait: bool = False) -> None:
        """Shut every panel down (listeners removed, workers stopped)."""
        for panel in self.panels.values():
            panel.shutdown(wait=wait)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

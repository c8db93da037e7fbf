"""Instrument panels (gui/instrument_panel.py) on the simulated ISAQN bench over real sockets.

Every check reads the simulator's own state (``bench.sim_host.sims[name]``: its snapshot and
the program messages it received), not only the widgets: a value typed in the panel must reach
the instrument, a refused one must not produce a single byte.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QLineEdit

from drivers.registry import MODELS, driver_class
from drivers.settings import Range
from drivers.sim.clock import VirtualClock
from drivers.sim.faults import Fault
from gui.instrument_panel import (
    ERROR_COLOUR,
    FloatEditor,
    InstrumentPanel,
    InstrumentPanels,
    IntEditor,
    format_value,
)
from labctl.bench import Bench
from labctl.config import DEFAULT_CONFIG, load_bench

BenchFactory = Callable[..., Bench]


@pytest.fixture
def make_bench() -> Iterator[BenchFactory]:
    """Factory: the shipped isaqn_sim bench, connected, safe start applied; closed at teardown.

    ``timeouts`` overrides instruments' ``timeout_s`` (the bench file's own are 2 s).
    """
    benches: list[Bench] = []

    def make(timeouts: dict[str, float] | None = None) -> Bench:
        config = load_bench(DEFAULT_CONFIG)
        if timeouts:
            instruments = {
                name: replace(icfg, timeout_s=timeouts.get(name, icfg.timeout_s))
                for name, icfg in config.instruments.items()
            }
            config = replace(config, instruments=instruments)
        bench = Bench(config, clock=VirtualClock(realtime=False))
        benches.append(bench)
        bench.connect()
        bench.apply_safe_start()
        return bench

    yield make
    for bench in benches:
        bench.close()


@pytest.fixture
def make_panel(qtbot, make_bench) -> Iterator[Callable[..., InstrumentPanel]]:
    """Factory: a shown panel whose initial read has finished; shut down (joined) at teardown."""
    panels: list[InstrumentPanel] = []

    def make(instrument) -> InstrumentPanel:
        panel = InstrumentPanel(instrument)
        qtbot.addWidget(panel)
        panel.show()
        panels.append(panel)
        qtbot.waitUntil(lambda: not panel.busy)
        return panel

    yield make
    for panel in panels:
        panel.shutdown(wait=True)


def sim_of(bench: Bench, name: str):
    assert bench.sim_host is not None
    return bench.sim_host.sims[name]


def type_into(qtbot, editor, text: str) -> None:
    """Replace an editor's text as a user would (select all, type)."""
    line = editor.lineEdit() if isinstance(editor, FloatEditor | IntEditor) else editor
    line.setFocus()
    line.selectAll()
    qtbot.keyClicks(line, text)


def wait_done(qtbot, panel: InstrumentPanel) -> None:
    qtbot.waitUntil(lambda: not panel.busy)


# -- generated from the declared settings ---------------------------------------------------
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_registered_driver_gets_one_row_per_setting_and_channel(qtbot, model):
    """Rows, editor kinds and ranges follow type(inst).settings() and allowed_range()."""
    cls = driver_class(model)
    inst = cls("dut", "TCPIP0::127.0.0.1::9::SOCKET")  # never connected: nothing is read
    panel = InstrumentPanel(inst, read_on_start=False)
    qtbot.addWidget(panel)
    declared = cls.settings()
    expected = {(n, ch) for n, s in declared.items() for ch in (s.channels or (None,))}
    assert set(panel.rows) == expected
    for (name, _channel), row in panel.rows.items():
        setting = declared[name]
        assert (row.editor is None) == (not setting.writable)
        assert (row.readback is None) == (not setting.readable)
        assert setting.doc in row.label.toolTip()
        if setting.units:
            assert f"({setting.units})" in row.label.text()
        if row.editor is None:
            continue
        if setting.kind is bool:
            assert isinstance(row.editor, QCheckBox)
        elif setting.choices is not None:
            assert isinstance(row.editor, QComboBox)
            items = [row.editor.itemData(i) for i in range(row.editor.count())]
            assert items == list(setting.choices)
        elif setting.kind is float:
            assert isinstance(row.editor, FloatEditor)
            allowed = inst.allowed_range(name)
            if allowed is not None:
                assert (row.editor.minimum(), row.editor.maximum()) == (allowed.low, allowed.high)
        elif setting.kind is int:
            assert isinstance(row.editor, IntEditor)
            allowed = inst.allowed_range(name)
            if allowed is not None:
                assert (row.editor.minimum(), row.editor.maximum()) == (allowed.low, allowed.high)
        else:
            assert isinstance(row.editor, QLineEdit)
    panel.shutdown(wait=True)


def test_panel_shows_the_instruments_own_state_within_the_bench_limits(make_bench, make_panel):
    """Editor ranges are the bench file's limits; read-backs are what the simulator holds."""
    bench = make_bench()
    config = load_bench(DEFAULT_CONFIG)
    awg_sim = sim_of(bench, "awg1")
    # changed behind the driver's back: only a real read can show it
    awg_sim.process(b"SOUR2:VOLT 0.37")
    awg_sim.process(b"SOUR2:FUNC SQU")
    laser = make_panel(bench.instruments["laser1"])
    awg = make_panel(bench.instruments["awg1"])

    low, high = config.instruments["laser1"].limits["wavelength_nm"]
    wavelength = laser.row("wavelength_nm")
    assert (wavelength.editor.minimum(), wavelength.editor.maximum()) == (low, high)
    assert wavelength.limits.text() == f"{Range(low, high)} nm"
    truth = sim_of(bench, "laser1").snapshot()
    assert wavelength.readback.text() == f"{truth['set_wavelength_nm']:.4f} nm"
    assert wavelength.editor.value() == pytest.approx(truth["set_wavelength_nm"])
    assert laser.row("power_mw").readback.text() == f"{truth['power_setpoint_mw']:.4f} mW"
    assert laser.row("emission").readback.text() == ("on" if truth["emission"] else "off")
    measured = laser.row("measured_power_mw")
    assert measured.editor is None and measured.apply_button is None
    assert measured.readback.text() == f"{truth['optical_power_mw']:.10g} mW"

    amp_low, amp_high = config.instruments["awg1"].limits["amplitude_vpp"]
    channels = awg_sim.snapshot()["channels"]
    assert awg.tabs is not None
    assert [awg.tabs.tabText(i) for i in range(awg.tabs.count())] == [
        "Instrument",
        "Channel 1",
        "Channel 2",
    ]
    for ch in (1, 2):
        amp = awg.row("amplitude_vpp", ch)
        assert (amp.editor.minimum(), amp.editor.maximum()) == (amp_low, amp_high)
        assert amp.editor.value() == pytest.approx(channels[ch]["amplitude_vpp"])
        assert amp.readback.text() == f"{channels[ch]['amplitude_vpp']:.10g} Vpp"
        assert awg.row("function", ch).editor.currentData() == channels[ch]["function"]
    assert channels[2]["amplitude_vpp"] == pytest.approx(0.37)
    assert awg.row("function", 2).readback.text() == "SQU"
    assert "read" in awg.status_text() and awg.fault is None


# -- a change in the panel reaches the instrument -----------------------------------------------
def test_change_typed_in_the_panel_reaches_the_simulated_instrument(qtbot, make_bench, make_panel):
    bench = make_bench()
    laser_sim, awg_sim = sim_of(bench, "laser1"), sim_of(bench, "awg1")
    laser, awg = bench.instruments["laser1"], bench.instruments["awg1"]
    panel = make_panel(laser)

    row = panel.row("wavelength_nm")
    type_into(qtbot, row.editor, "1550.5")
    qtbot.mouseClick(row.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row.message.text() == "ok")
    assert laser_sim.snapshot()["set_wavelength_nm"] == pytest.approx(1550.5)
    assert b":WAV 1550.5000NM" in laser_sim.received
    assert laser.get("wavelength_nm") == pytest.approx(1550.5)
    assert row.readback.text() == "1550.5000 nm"
    assert "laser1: wavelength_nm = 1550.5000 nm" in panel.status_text()

    emission = panel.row("emission")
    emission.editor.setChecked(True)
    assert not laser_sim.snapshot()["emission"]  # ticking the box alone sends nothing
    qtbot.mouseClick(emission.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: emission.message.text() == "ok")
    assert laser_sim.snapshot()["emission"] is True

    awg_panel = make_panel(awg)
    amp2 = awg_panel.row("amplitude_vpp", 2)
    type_into(qtbot, amp2.editor, "0.25")
    qtbot.keyClick(amp2.editor.lineEdit(), Qt.Key.Key_Return)  # Enter applies
    qtbot.waitUntil(lambda: amp2.message.text() == "ok")
    channels = awg_sim.snapshot()["channels"]
    assert channels[2]["amplitude_vpp"] == pytest.approx(0.25)
    assert channels[1]["amplitude_vpp"] == pytest.approx(0.1)  # the other channel untouched
    assert awg.get("amplitude_vpp", 2) == pytest.approx(0.25)

    func1 = awg_panel.row("function", 1)
    func1.editor.setCurrentIndex(func1.editor.findData("SQU"))
    qtbot.mouseClick(func1.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: func1.message.text() == "ok")
    assert awg_sim.snapshot()["channels"][1]["function"] == "SQU"
    assert awg_sim.snapshot()["channels"][2]["function"] == "SIN"


# -- out of limits: refused in the panel, nothing sent ----------------------------------------
def test_out_of_limit_values_are_refused_in_the_panel_and_nothing_is_sent(
    qtbot, make_bench, make_panel
):
    bench = make_bench()
    laser_sim = sim_of(bench, "laser1")
    panel = make_panel(bench.instruments["laser1"])
    row = panel.row("wavelength_nm")
    before_state, before_rx = laser_sim.snapshot(), list(laser_sim.received)

    # above the bench limit, typed then Enter: the spin box keeps the number for validate
    type_into(qtbot, row.editor, "1600")
    assert row.editor.lineEdit().text() == "1600"
    qtbot.keyClick(row.editor.lineEdit(), Qt.Key.Key_Return)
    assert row.message_is_error
    assert "wavelength_nm=1600.0 refused" in row.message.text()
    assert "[1549, 1551] nm" in row.message.text()
    assert "nothing was sent" in row.message.text()
    assert row.message.text() in panel.status_text()
    assert row.editor.value() == pytest.approx(1550.12)  # back to the last good value

    # below it, typed then Apply clicked
    type_into(qtbot, row.editor, "1548")
    qtbot.mouseClick(row.apply_button, Qt.MouseButton.LeftButton)
    assert "wavelength_nm=1548.0 refused" in row.message.text()
    assert row.editor.value() == pytest.approx(1550.12)

    # the model allows 20 mW, the bench file only 2 mW
    power = panel.row("power_mw")
    type_into(qtbot, power.editor, "5")
    qtbot.keyClick(power.editor.lineEdit(), Qt.Key.Key_Return)
    assert "power_mw=5.0 refused: allowed [0.04, 2] mW" in power.message.text()

    assert not panel.busy  # nothing was queued for the worker
    assert list(laser_sim.received) == before_rx  # not one byte reached the instrument
    assert laser_sim.snapshot() == before_state


def test_a_value_within_each_range_but_outside_the_awg_output_window_is_refused(
    qtbot, make_bench, make_panel
):
    """The 33500B's |offset| + Vpp/2 <= 5 V rule lives in its validate: the panel uses it."""
    bench = make_bench()
    awg_sim = sim_of(bench, "awg4")  # limits: amplitude up to 10 Vpp, offset +-1 V
    panel = make_panel(bench.instruments["awg4"])
    offset = panel.row("offset_v", 1)
    type_into(qtbot, offset.editor, "1")
    qtbot.keyClick(offset.editor.lineEdit(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: offset.message.text() == "ok")
    assert awg_sim.snapshot()["channels"][1]["offset_v"] == pytest.approx(1.0)

    before_rx = list(awg_sim.received)
    amp = panel.row("amplitude_vpp", 1)
    type_into(qtbot, amp.editor, "10")  # inside [0.001, 10] but 1 + 10/2 > 5 V
    qtbot.keyClick(amp.editor.lineEdit(), Qt.Key.Key_Return)
    assert amp.message_is_error
    assert "amplitude_vpp" in amp.message.text()
    assert "|offset_v| + amplitude_vpp/2 <= 5 V" in amp.message.text()
    assert list(awg_sim.received) == before_rx
    assert awg_sim.snapshot()["channels"][1]["amplitude_vpp"] == pytest.approx(0.1)


@pytest.fixture
def laser_rig(make_bench, make_panel):
    """The laser's simulator and panel, shared by every hypothesis example of one test
    (nothing is ever sent, so the examples cannot disturb each other)."""
    bench = make_bench()
    return sim_of(bench, "laser1"), make_panel(bench.instruments["laser1"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_value_outside_the_allowed_range_is_refused_without_a_byte(laser_rig, data):
    """Property: for every float outside the bench's range, submit() refuses and sends nothing."""
    laser_sim, panel = laser_rig
    name = data.draw(st.sampled_from(["wavelength_nm", "power_mw", "fine_tuning_pm"]))
    allowed = panel.instrument.allowed_range(name)
    finite = {"allow_nan": False, "allow_infinity": False}
    value = data.draw(
        st.floats(max_value=allowed.low, exclude_max=True, **finite)
        | st.floats(min_value=allowed.high, exclude_min=True, **finite)
    )
    before = len(laser_sim.received)
    assert panel.submit(name, value) is False
    text = panel.row(name).message.text()
    assert f"{name}={value!r} refused" in text and str(allowed) in text
    assert len(laser_sim.received) == before
    assert not panel.busy


# -- instrument errors and timeouts: shown, GUI responsive --------------------------------------
def test_instrument_error_text_is_shown_while_the_gui_thread_keeps_running(
    qtbot, make_bench, make_panel
):
    """The simulator is held mid-command (its lock): the worker waits, the GUI does not."""
    bench = make_bench(timeouts={"laser1": 30.0})  # the held lock must never time the driver out
    laser_sim = sim_of(bench, "laser1")
    panel = make_panel(bench.instruments["laser1"])
    row = panel.row("wavelength_nm")
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()

    laser_sim.lock.acquire()
    try:
        laser_sim.faults.inject(Fault.ERROR, code=-222, text="Data out of range")
        assert panel.submit("wavelength_nm", 1550.3) is True
        # the worker is inside the transaction: the write reached the (blocked) simulator
        qtbot.waitUntil(lambda: b":WAV 1550.3000NM" in laser_sim.received)
        seen = len(ticks)
        qtbot.waitUntil(lambda: len(ticks) >= seen + 5)  # the event loop keeps turning
        assert panel.busy and row.message.text() == "sending..."
        assert not row.apply_button.isEnabled()
        # another row still answers at once: a refusal needs no instrument
        assert panel.submit("power_mw", 50.0) is False
        assert "power_mw=50.0 refused" in panel.row("power_mw").message.text()
    finally:
        laser_sim.lock.release()
    timer.stop()

    qtbot.waitUntil(lambda: not panel.busy)
    text = row.message.text()
    assert row.message_is_error
    assert text.startswith("laser1: instrument error -222: Data out of range")
    assert "':WAV 1550.3000NM'" in text  # the command that failed
    assert text in panel.status_text() and panel.fault == text
    assert row.apply_button.isEnabled()
    # the row shows what the instrument holds after the error, read back from it
    assert laser_sim.snapshot()["set_wavelength_nm"] == pytest.approx(1550.3)
    assert row.readback.text() == "1550.3000 nm"

    panel.read_all()
    wait_done(qtbot, panel)
    assert panel.fault is None and "link OK again after: laser1: instrument error -222" in (
        panel.status_text()
    )


def test_a_timeout_is_shown_and_the_recovery_too(qtbot, make_bench, make_panel):
    bench = make_bench(timeouts={"laser1": 0.3})
    laser_sim = sim_of(bench, "laser1")
    panel = make_panel(bench.instruments["laser1"])
    faults: list[bool] = []
    panel.faultChanged.connect(faults.append)
    row = panel.row("wavelength_nm")

    laser_sim.faults.inject(Fault.NO_REPLY)  # the error-queue query after the write goes unanswered
    panel.submit("wavelength_nm", 1550.4)
    wait_done(qtbot, panel)
    assert row.message_is_error
    assert row.message.text().startswith("laser1: no reply within 0.3 s")
    assert panel.fault == row.message.text() and faults == [True]

    panel.read_all()  # the driver reconnects and resynchronises first
    wait_done(qtbot, panel)
    assert panel.fault is None and faults == [True, False]
    assert "link OK again after: laser1: no reply within 0.3 s" in panel.status_text()
    assert row.readback.text() == f"{laser_sim.snapshot()['set_wavelength_nm']:.4f} nm"
    assert not row.message_is_error


# -- changes made elsewhere ------------------------------------------------------------------
def test_changes_made_through_the_driver_elsewhere_show_in_the_panel(qtbot, make_bench, make_panel):
    bench = make_bench()
    laser, awg = bench.instruments["laser1"], bench.instruments["awg1"]
    laser_panel, awg_panel = make_panel(laser), make_panel(awg)

    def from_another_thread(fn, *args) -> None:  # as a control loop or a job would
        thread = threading.Thread(target=fn, args=args)
        thread.start()
        thread.join()

    from_another_thread(laser.set, "wavelength_nm", 1550.7)
    from_another_thread(awg.set, "offset_v", 0.2, 2)
    row = laser_panel.row("wavelength_nm")
    qtbot.waitUntil(lambda: row.readback.text() == "1550.7000 nm")
    assert row.editor.value() == pytest.approx(1550.7)
    off2, off1 = awg_panel.row("offset_v", 2), awg_panel.row("offset_v", 1)
    qtbot.waitUntil(lambda: off2.readback.text() == "0.2 V")
    assert off2.editor.value() == pytest.approx(0.2)
    assert off1.readback.text() == "0 V"
    assert sim_of(bench, "awg1").snapshot()["channels"][2]["offset_v"] == pytest.approx(0.2)

    # an edit in progress is not overwritten, the read-back is
    type_into(qtbot, row.editor, "1549.5")
    from_another_thread(laser.set, "wavelength_nm", 1550.9)
    qtbot.waitUntil(lambda: row.readback.text() == "1550.9000 nm")
    assert row.editor.lineEdit().text() == "1549.5"

    laser_panel.shutdown(wait=True)  # the listener is removed
    laser.set("wavelength_nm", 1550.8)
    QApplication.processEvents()  # a forwarded change would be posted by now
    assert row.readback.text() == "1550.9000 nm"


# -- one tab per instrument ----------------------------------------------------------------
def test_bench_panels_have_one_tab_per_instrument_and_mark_a_failing_one(qtbot, make_bench):
    bench = make_bench()
    tabs = InstrumentPanels(bench.instruments)
    qtbot.addWidget(tabs)
    try:
        assert [tabs.tabText(i) for i in range(tabs.count())] == list(bench.instruments)
        for name, instrument in bench.instruments.items():
            assert tabs.panel(name).instrument is instrument
        for panel in tabs.panels.values():
            qtbot.waitUntil(lambda p=panel: not p.busy)
        awg3 = tabs.panel("awg3")
        truth = sim_of(bench, "awg3").snapshot()["channels"][1]["amplitude_vpp"]
        assert awg3.row("amplitude_vpp", 1).readback.text() == format_value(
            awg3.row("amplitude_vpp", 1).setting, truth
        )
        scope_rate = tabs.panel("scope1").row("sample_rate_hz")
        assert scope_rate.readback.text() == format_value(
            scope_rate.setting, bench.instruments["scope1"].get("sample_rate_hz")
        )

        index = tabs.indexOf(tabs.panel("awg2"))
        sim_of(bench, "awg2").faults.inject(Fault.ERROR, code=-221, text="Settings conflict")
        tabs.panel("awg2").submit("offset_v", 0.1, 1)
        qtbot.waitUntil(lambda: not tabs.panel("awg2").busy)
        assert tabs.tabBar().tabTextColor(index) == QColor(ERROR_COLOUR)
        assert "Settings conflict" in tabs.panel("awg2").status_text()
    finally:
        tabs.shutdown(wait=True)

"""The whole dashboard on the simulated benches (pytest-qt, offscreen): live runs through
:class:`gui.sources.LiveSource` into :class:`gui.main_window.MainWindow`, recorded, then
replayed through :class:`gui.sources.ReplaySource` into a second window whose panels must show
the same values; a fault injected in a simulator; instrument control from the dashboard; the
saved layout. Every check reads what a panel shows (table texts, plotted arrays), or what
reached the simulated instrument. Screenshots of the main views go to ``$LABCTL_ARTIFACTS``
(else the test's tmp_path)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QTableWidget

from drivers.sim.clock import VirtualClock
from gui.main_window import MainWindow
from gui.sources import LiveSource, ReplaySource, replay_info
from labctl.config import load_bench
from labctl.run_record import cell_text

ROOT = Path(__file__).resolve().parents[1]
ENT_BENCH = ROOT / "configs" / "entanglement_sim.toml"
ISAQN_BENCH = ROOT / "configs" / "isaqn_sim.toml"
WAIT_MS = 240_000  # generous: the machine is shared; no test asserts on time


@pytest.fixture(autouse=True)
def _own_settings(tmp_path: Path) -> None:
    """The layout goes to a settings file of the test's own."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))


def artifact(window: Any, name: str, tmp_path: Path) -> Path:
    out = Path(os.environ.get("LABCTL_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    assert window.grab().save(str(path))
    return path


def table_texts(table: QTableWidget) -> list[list[str]]:
    return [
        [
            "" if table.item(r, c) is None else table.item(r, c).text()
            for c in range(table.columnCount())
        ]
        for r in range(table.rowCount())
    ]


def run_to_end(qtbot: Any, window: MainWindow) -> list[Any]:
    """Start the window's source, collect its statuses, wait until it has finished."""
    statuses: list[Any] = []
    window.source.status_ready.connect(lambda k, st: statuses.append(st))
    finished: list[str] = []
    window.source.finished.connect(finished.append)
    window.show()
    window.source.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT_MS)
    qtbot.wait(50)  # the last queued frames and statuses
    return statuses


def close(qtbot: Any, window: MainWindow) -> None:
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)


# -- the entanglement bench ----------------------------------------------------------------------
def live_run(
    qapp: Any, tmp: Path, name: str, bench: Path, duration_s: float, shown: Any
) -> dict[str, Any]:
    """``duration_s`` of ``bench`` live on a fast virtual clock in the dashboard, recorded by
    it: the statuses and frames it drew, what ``shown(window)`` read from its panels at the
    end, the recording's path and the log."""
    from pytestqt.qtbot import QtBot

    qtbot = QtBot(qapp)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp))
    path = tmp / "runs" / f"{name}.h5"
    source = LiveSource(
        load_bench(bench),
        record_path=path,
        duration_s=duration_s,
        clock=VirtualClock(realtime=False),
    )
    window = MainWindow(source)
    frames: list[Any] = []
    source.frame_ready.connect(frames.append)
    statuses = run_to_end(qtbot, window)
    result = {
        "path": path,
        "statuses": statuses,
        "frames": frames,
        "shown": shown(window),
        "messages": window.log.lines,
    }
    artifact(window, f"dashboard-{name}-live", tmp)
    close(qtbot, window)
    return result


@pytest.fixture(scope="module")
def ent_live(tmp_path_factory: pytest.TempPathFactory, qapp: Any) -> dict[str, Any]:
    """6 s of the entanglement bench live, recorded by the dashboard."""
    return live_run(
        qapp, tmp_path_factory.mktemp("ent-gui"), "entanglement", ENT_BENCH, 6.0, shown_entanglement
    )


def shown_entanglement(window: MainWindow) -> dict[str, Any]:
    p = window.panels
    hist = p["entanglement.histograms"]
    return {
        "pairs": table_texts(p["entanglement.pairs"].table),
        "summary": {
            k: p["entanglement.pairs"].summary_text(k)
            for k in ("time", "total key rate", "clock", "lost events")
        },
        "histograms": {name: hist.displayed(name) for name in hist.pair_names()},
        "loops": table_texts(p["control.loops"].table),
        "rules": {
            r: p["control.interlocks"].rule_state(r) for r in p["control.interlocks"].rule_names()
        },
    }


def test_live_entanglement_panels_show_the_run(ent_live: dict[str, Any]) -> None:
    statuses, shown = ent_live["statuses"], ent_live["shown"]
    assert len(statuses) >= 4
    last = statuses[-1]
    rows = {r[0]: r for r in shown["pairs"]}
    assert set(rows) == {f"{p.user_a}-{p.user_b}" for p in last.pairs}
    for pair in last.pairs:
        row = rows[f"{pair.user_a}-{pair.user_b}"]
        assert f"{pair.singles_a_hz / 1e3:.2f}" in row  # the table's kHz column
    assert shown["summary"]["time"].startswith(f"{last.time_s:.1f}")
    # the histograms hold the run's coincidences: a central peak at the pair's delay
    for pair in last.pairs:
        x_ps, counts = shown["histograms"][f"{pair.user_a}-{pair.user_b}"]
        assert counts.sum() > 0
        assert abs(x_ps[int(np.argmax(counts))] - pair.delay_ps) < 200.0
    assert set(shown["rules"]) == set(last.interlocks)
    assert {r[0] for r in shown["loops"]} == {row.name for row in last.loops}
    assert ent_live["path"].exists()
    assert any("recorded" in line for line in ent_live["messages"])


def test_replay_of_the_dashboards_recording_shows_the_same_values(
    qtbot: Any, ent_live: dict[str, Any], tmp_path: Path
) -> None:
    info = replay_info(ent_live["path"])
    assert info.started_after_data_s is None  # recorded from the run's start
    window = MainWindow(ReplaySource(info, speed=math.inf))
    reports: list[Any] = []
    window.source.done.connect(reports.append)
    statuses = run_to_end(qtbot, window)
    artifact(window, "dashboard-entanglement-replay", tmp_path)
    shown = shown_entanglement(window)
    live = ent_live["shown"]
    assert [s.to_dict() for s in statuses] == [s.to_dict() for s in ent_live["statuses"]]
    assert reports[0].matches
    assert shown["pairs"] == live["pairs"]
    assert shown["summary"]["total key rate"] == live["summary"]["total key rate"]
    assert shown["loops"] == live["loops"]
    assert shown["rules"] == live["rules"]
    for name, (x, y) in live["histograms"].items():
        np.testing.assert_array_equal(shown["histograms"][name][0], x)
        np.testing.assert_array_equal(shown["histograms"][name][1], y)
    assert window.replay.position_label.text().strip().startswith(f"{statuses[-1].time_s:.2f}")
    close(qtbot, window)


def live_with_a_ticking_timer(
    qtbot: Any, bench: Path, *, updates: int
) -> tuple[LiveSource, MainWindow, list[int], QTimer]:
    """``bench`` live in a dashboard (fast virtual clock, not recorded) after ``updates``
    statuses, with a GUI-thread timer counting its ticks into the returned list (a frozen GUI
    thread would stop it)."""
    source = LiveSource(load_bench(bench), clock=VirtualClock(realtime=False))
    window = MainWindow(source)
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    statuses: list[Any] = []
    source.status_ready.connect(lambda k, st: statuses.append(st))
    window.show()
    source.start()
    qtbot.waitUntil(lambda: len(statuses) >= updates, timeout=WAIT_MS)
    return source, window, ticks, timer


def test_a_tec_fault_shows_as_a_trip_and_the_gui_stays_responsive(
    qtbot: Any, tmp_path: Path
) -> None:
    """The ring's temperature sensor opens in the simulator: the TEC faults, the interlock
    trips (pumps off), the dashboard shows it; a GUI timer keeps firing throughout."""
    source, window, ticks, _timer = live_with_a_ticking_timer(qtbot, ENT_BENCH, updates=2)
    source.bench.sim_host.sims["tec1"].set_sensor_open(True)
    panel = window.panels["control.interlocks"]
    rule = "pumps-off-on-tec-fault"
    before = len(ticks)
    qtbot.waitUntil(lambda: panel.rule_state(rule) == "tripped", timeout=WAIT_MS)
    assert len(ticks) > before  # the GUI thread went on serving its timers
    assert any(rule in " ".join(entry) for entry in panel.log_entries())
    artifact(window, "dashboard-entanglement-fault", tmp_path)
    close(qtbot, window)
    assert not source.running
    assert any("bench closed" in line for line in window.log.lines)


def test_an_instrument_panel_in_the_dashboard_drives_the_simulator(
    qtbot: Any, tmp_path: Path
) -> None:
    """Instruments-only bench: a change reaches the simulated laser; an out-of-limit one is
    refused in the panel and never sent."""
    source = LiveSource(load_bench(ROOT / "configs" / "sim_bench.toml"))
    window = MainWindow(source)
    window.show()
    source.start()
    qtbot.waitUntil(lambda: window.instrument_panels is not None, timeout=WAIT_MS)
    panel = window.instrument_panels.panel("laser1")
    sim = source.bench.sim_host.sims["laser1"]
    qtbot.waitUntil(lambda: not panel.busy, timeout=WAIT_MS)
    assert panel.submit("wavelength_nm", 1550.5)
    qtbot.waitUntil(lambda: sim.snapshot()["set_wavelength_nm"] == 1550.5, timeout=WAIT_MS)
    received = len(sim.received)
    assert not panel.submit("wavelength_nm", 1600.0)  # bench limits [1540, 1560] nm
    message = panel.row("wavelength_nm").message.text()
    assert "refused" in message and "[1540, 1560] nm" in message
    qtbot.wait(200)
    assert len(sim.received) == received  # nothing was sent
    assert sim.snapshot()["set_wavelength_nm"] == 1550.5
    close(qtbot, window)
    # the panels were shut down before the bench was made safe: nothing more can be sent
    assert not window.instrument_panels.isEnabled()


def test_the_layout_is_saved_and_restored(qtbot: Any) -> None:
    config = load_bench(ROOT / "configs" / "sim_bench.toml")
    window = MainWindow(LiveSource(config))
    window.show()
    qtbot.waitExposed(window)
    window.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, window.docks["log"])
    window.resize(700, 500)  # within the offscreen platform's 800 x 600 screen
    qtbot.wait(50)
    size = (window.width(), window.height())
    window.close()  # not started: closes at once, saving the layout
    again = MainWindow(LiveSource(config))
    again.show()
    qtbot.waitExposed(again)
    assert again.dockWidgetArea(again.docks["log"]) == Qt.DockWidgetArea.TopDockWidgetArea
    assert (again.width(), again.height()) == size
    again.close()


# -- the ISAQN bench ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def isaqn_live(tmp_path_factory: pytest.TempPathFactory, qapp: Any) -> dict[str, Any]:
    """3 s of the ISAQN network live, recorded by the dashboard."""
    return live_run(
        qapp, tmp_path_factory.mktemp("isaqn-gui"), "isaqn", ISAQN_BENCH, 3.0, shown_isaqn
    )


def shown_isaqn(window: MainWindow) -> dict[str, Any]:
    p = window.panels
    names = [n.name for n in window.source.config.isaqn.nodes]
    cons = p["isaqn-constellation"]
    return {
        "spectrum": p["isaqn-spectrum"].spectrum(),
        "bands": p["isaqn-spectrum"].bands_hz(),
        "flags": {n: p["isaqn-spectrum"].band_flagged(n) for n in names},
        "phase": {n: p["isaqn-phase"].phase(n) for n in names},
        "points": {n: cons.points(n) for n in names},
        "table": table_texts(cons.table),
        "history": {n: cons.history("transmittance", n) for n in names},
        "nodes": p["isaqn-location"].node_positions(),
    }


def test_live_isaqn_panels_show_the_run(isaqn_live: dict[str, Any]) -> None:
    statuses, frames, shown = isaqn_live["statuses"], isaqn_live["frames"], isaqn_live["shown"]
    assert len(statuses) >= 2 and frames
    last, frame = statuses[-1], frames[-1]
    np.testing.assert_array_equal(shown["spectrum"][0], frame.spectrum_freq_hz)
    np.testing.assert_array_equal(shown["spectrum"][1], frame.spectrum_psd_v2_per_hz)
    for node in last.nodes:
        nf = frame.node(node.name)
        assert shown["bands"][node.name] == pytest.approx((nf.band_lo_hz, nf.band_hi_hz))
        assert shown["flags"][node.name] == node.vibrating
        # every pilot phase sample of every frame is in the phase panel's buffer, in order
        t = np.concatenate([f.node(node.name).t_s for f in frames])
        _, y = shown["phase"][node.name]
        finite = y[np.isfinite(y)]
        assert finite.size == t.size
        x_p, p_p = shown["points"][node.name]
        np.testing.assert_array_equal(x_p, nf.constellation_x_snu)
        np.testing.assert_array_equal(p_p, nf.constellation_p_snu)
        hist_t, hist_v = shown["history"][node.name]
        np.testing.assert_array_equal(hist_t, [st.t_s for st in statuses])
        assert hist_v[-1] == pytest.approx(node.transmittance, nan_ok=True)
    row = {r[0]: r for r in shown["table"]}
    assert set(row) == {n.name for n in last.nodes}
    # the recording holds the laser switched on for the run and off by the safe state
    from labctl.replay_h5 import open_capture

    with open_capture(isaqn_live["path"]) as cap:
        changes = cap.rec.table("settings/changes")
    emission = [
        json.loads(cell_text(c["value"]))
        for c in changes
        if cell_text(c["instrument"]) == "laser1" and cell_text(c["setting"]) == "emission"
    ]
    assert True in emission and emission[-1] is False
    assert any(any(s.vibrating for s in st.nodes) for st in statuses)  # node1's PZT drive


def test_replay_of_an_isaqn_recording_shows_the_same_values(
    qtbot: Any, isaqn_live: dict[str, Any], tmp_path: Path
) -> None:
    window = MainWindow(ReplaySource(replay_info(isaqn_live["path"]), speed=math.inf))
    frames: list[Any] = []
    window.source.frame_ready.connect(frames.append)
    statuses = run_to_end(qtbot, window)
    artifact(window, "dashboard-isaqn-replay", tmp_path)
    shown, live = shown_isaqn(window), isaqn_live["shown"]
    assert [s.to_dict() for s in statuses] == [s.to_dict() for s in isaqn_live["statuses"]]
    assert shown["table"] == live["table"]
    assert shown["flags"] == live["flags"]
    for key in ("spectrum",):
        for a, b in zip(shown[key], live[key], strict=True):
            np.testing.assert_array_equal(a, b)
    for name in live["phase"]:
        for a, b in zip(shown["phase"][name], live["phase"][name], strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(shown["points"][name], live["points"][name], strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(shown["history"][name], live["history"][name], strict=True):
            np.testing.assert_array_equal(a, b)
    close(qtbot, window)


def test_a_scope_that_drops_its_link_ends_the_run_safely_and_a_new_run_recovers(
    qtbot: Any, tmp_path: Path
) -> None:
    source, window, ticks, _timer = live_with_a_ticking_timer(qtbot, ISAQN_BENCH, updates=1)
    sims = source.bench.sim_host.sims
    laser = sims["laser1"]
    sims["scope1"].faults.inject("drop", count=None)
    before = len(ticks)
    qtbot.waitUntil(lambda: window.start_action.isEnabled(), timeout=WAIT_MS)
    assert len(ticks) > before
    assert window.state_label.text().startswith("FAULT") and "scope1" in window.state_label.text()
    assert any("FAULT" in line and "scope1" in line for line in window.log.lines)
    assert not laser.snapshot()["emission"]  # the bench was left safe
    artifact(window, "dashboard-isaqn-fault", tmp_path)
    # recovery: a new run of the bench, from the dashboard
    window.start_again()
    again: list[Any] = []
    window.source.status_ready.connect(lambda k, st: again.append(st))
    qtbot.waitUntil(lambda: len(again) >= 1, timeout=WAIT_MS)
    assert window.source is not source and window.source.running
    assert not window.state_label.text().startswith("FAULT")
    close(qtbot, window)


def test_recording_started_and_stopped_from_the_dashboard_replays_on_its_own(
    qtbot: Any, tmp_path: Path
) -> None:
    """Not recording at start; Start recording after the first update, Stop after the next
    two: the file holds the run's calibration records first, says how far into the run it
    began, and replays through the pipeline on its own (not compared with the live run's
    cumulative updates)."""
    from labctl.replay_h5 import open_capture, replay_file

    source = LiveSource(load_bench(ISAQN_BENCH), duration_s=4.0, clock=VirtualClock(realtime=False))
    window = MainWindow(source)
    statuses: list[Any] = []
    source.status_ready.connect(lambda k, st: statuses.append(st))
    states: list[Any] = []
    source.recording_changed.connect(states.append)
    window.show()
    source.start()
    qtbot.waitUntil(lambda: len(statuses) >= 1, timeout=WAIT_MS)
    assert window.recording.state_label.text() == "not recording"
    path = tmp_path / "mid.h5"
    window.recording.file_edit.setText(str(path))
    window.recording.start_recording()
    qtbot.waitUntil(lambda: any(s.recording for s in states), timeout=WAIT_MS)
    n = len(statuses)
    qtbot.waitUntil(lambda: len(statuses) >= n + 2, timeout=WAIT_MS)
    window.recording.stop_recording()
    qtbot.waitUntil(lambda: states and not states[-1].recording, timeout=WAIT_MS)
    assert window.recording.state_label.text() == "not recording"
    assert window.recording.file_label.text() == str(path)
    close(qtbot, window)
    with open_capture(path) as cap:
        kinds = [r.kind for r in cap.units()]
        started = cap.rec.attrs["started_after_data_s"]
    calibration = [k for k in kinds if k != "data"]
    assert kinds[: len(calibration)] == calibration and {"electronic", "shot"} <= set(calibration)
    assert started == pytest.approx(statuses[n - 1].t_s, abs=0.2)
    report = replay_file(path)
    assert report.started_after_data_s == started and report.compared == 0
    assert report.updates  # the recording replays on its own

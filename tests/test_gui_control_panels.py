"""Loops and interlocks panels (gui/control_panels.py) showing the simulated entanglement bench.

Frames and statuses are the live ones of the session's entanglement recording
(tests/recordings.py: the job runs its ring TEC, pump and phase locks and four interlocks; the
view builds the frames in the job's status sink). The checks read what the widgets draw: the
plotted arrays, the table texts and colours, the log. A tripped rule is a real rule status
changed with dataclasses.replace. A PNG of each panel goes to ``$LABCTL_ARTIFACTS`` (else the
test's tmp_path).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from PySide6 import QtWidgets
from recordings import save_artifact, show_panel

from gui.control_panels import (
    LOOP_STATE_COLOURS,
    RULE_STATE_COLOURS,
    InterlocksPanel,
    LoopsPanel,
)
from labctl.bench_control import LoopRow
from labctl.entangle_view import EntanglementView


def _settle() -> None:
    """Run the plots' pending zero-delay refreshes while the panel is alive: fastplot's
    ``QTimer.singleShot(0, self.refresh)`` has no context object, so a refresh still queued
    when the panel is garbage collected at the end of a test would run on a deleted ViewBox."""
    for _ in range(3):
        QtWidgets.QApplication.processEvents()


def test_loops_panel_plots_every_loops_history_and_forecast(qtbot, ent_recording, tmp_path) -> None:
    panel = show_panel(qtbot, LoopsPanel(), (1200, 900), "control.loops")
    for frame in ent_recording.frames:
        panel.update_frame(frame)
    frame = ent_recording.frames[-1]
    assert panel.loop_names() == [s.name for s in frame.loops]
    for s in frame.loops:
        i = panel.row_of(s.name)
        assert panel.cell_text(i, "state") == s.state == "running"
        assert panel.state_colour(s.name) == LOOP_STATE_COLOURS["running"]
        unit_in, unit_out = s.units
        value, unit = panel.cell_text(i, "measurement").split()
        assert unit == unit_in
        assert float(value) == pytest.approx(s.measurement[-1], abs=5e-3)
        value, unit = panel.cell_text(i, "output").split()
        assert unit == unit_out and float(value) == pytest.approx(s.output[-1], rel=1e-3)
        for trace, values in (
            ("setpoint", s.setpoint),
            ("measurement", s.measurement),
            ("output", s.output),
        ):
            x, y = panel.displayed(s.name, trace)
            assert np.array_equal(x, s.time_s) and np.array_equal(y, values)
        if s.is_phase:
            x, y = panel.displayed(s.name, "free phase")
            assert np.array_equal(x, s.time_s) and np.array_equal(y, s.free_phase_rad)
            x, y = panel.displayed(s.name, "forecast")
            np.testing.assert_array_equal(y, s.forecast_rad)
            assert math.isnan(y[0]) and np.all(np.isfinite(y[1:]))
            rms_mrad = f"{s.forecast_rms_rad * 1e3:.3g} mrad"
            assert rms_mrad in panel.forecast_text(s.name)
            assert panel.cell_text(i, "forecast RMS") == rms_mrad
            assert "kalman" in panel.forecast_text(s.name)
        else:
            with pytest.raises(KeyError):
                panel.displayed(s.name, "forecast")
    panel.show_loop("alice-phase")
    assert panel.current_loop() == "alice-phase"
    save_artifact(panel, "loops_alice_phase", tmp_path)
    panel.show_loop("ring-temperature")
    save_artifact(panel, "loops_ring_temperature", tmp_path)
    _settle()


def test_a_faulted_loop_shows_its_reason(qtbot, ent_recording) -> None:
    status = ent_recording.statuses[-1]
    row = next(r for r in status.loops if r.name == "pump0-lock")
    reason = "no fresh reading for 1.2 s (wm0 timed out)"
    faulted = LoopRow(row.name, row.kind, row.units, replace(row.status, state="fault",
                      fault_reason=reason))  # fmt: skip
    loops = tuple(faulted if r.name == row.name else r for r in status.loops)
    view = EntanglementView(ent_recording.config)
    feed_frame = view._loops(status.time_s, loops)
    frame = replace(ent_recording.frames[-1], loops=feed_frame)
    panel = LoopsPanel()
    qtbot.addWidget(panel)
    panel.update_frame(frame)
    i = panel.row_of("pump0-lock")
    assert panel.cell_text(i, "state") == "fault"
    assert panel.cell_text(i, "fault") == reason
    assert panel.state_colour("pump0-lock") == LOOP_STATE_COLOURS["fault"]
    assert panel.cell_text(panel.row_of("pump10-lock"), "fault") == ""
    _settle()


def test_interlocks_panel_shows_rules_and_logs_a_trip(qtbot, ent_recording, tmp_path) -> None:
    panel = show_panel(qtbot, InterlocksPanel(), (1200, 500), "control.interlocks")
    for status in ent_recording.statuses:
        panel.update_status(status)
    status = ent_recording.statuses[-1]
    assert panel.rule_names() == list(status.interlocks)
    for name, rule in status.interlocks.items():
        i = panel.row_of(name)
        assert panel.rule_state(name) == rule.state == "armed"
        assert panel.state_colour(name) == RULE_STATE_COLOURS["armed"]
        assert panel.cell_text(i, "reason") == rule.reason
        assert panel.cell_text(i, "since (s)") == "-"
    # the status messages of the run are in the log, newest first
    said = [(f"{s.time_s:.1f} s", "message", m) for s in ent_recording.statuses for m in s.messages]
    assert said and panel.log_entries() == said[::-1]

    # the ring leaves its temperature: the rule trips and drives the pumps safe
    name = "pumps-off-on-ring-temperature"
    rule = status.interlocks[name]
    tripped = replace(
        rule,
        state="tripped",
        since_s=12.5,
        value=0.071,
        reason="tec1 temperature_error_c = 0.071 degC above 0.05 for 2 s",
        actions={"pump0": "done", "pump10": "in progress"},
    )
    later = replace(
        status,
        time_s=status.time_s + 0.5,
        interlocks={**status.interlocks, name: tripped},
        messages=("interlock pumps-off-on-ring-temperature tripped",),
    )
    panel.update_status(later)
    i = panel.row_of(name)
    assert panel.rule_state(name) == "tripped"
    assert panel.state_colour(name) == RULE_STATE_COLOURS["tripped"]
    assert panel.cell_text(i, "since (s)") == "12.5"
    assert panel.cell_text(i, "value") == "0.071"
    assert panel.cell_text(i, "reason") == tripped.reason
    assert panel.cell_text(i, "actions") == "pump0: done, pump10: in progress"
    when = f"{later.time_s:.1f} s"
    new = panel.log_entries()[:4]
    assert new == [
        (when, "message", "interlock pumps-off-on-ring-temperature tripped"),
        (when, name, "pump10: in progress"),
        (when, name, "pump0: done"),
        (when, name, f"armed -> tripped: {tripped.reason}"),
    ]
    # the next update: only what changed is logged, the earlier entries stay
    done = replace(tripped, actions={"pump0": "done", "pump10": "done"})
    last = replace(later, time_s=later.time_s + 0.5, interlocks={**later.interlocks, name: done},
                   messages=())  # fmt: skip
    panel.update_status(last)
    entries = panel.log_entries()
    assert entries[0] == (f"{last.time_s:.1f} s", name, "pump10: done")
    assert entries[1:5] == new and entries[-len(said) :] == said[::-1]
    save_artifact(panel, "interlocks_tripped", tmp_path)


def test_interlock_log_keeps_the_newest_entries(qtbot, ent_recording) -> None:
    panel = InterlocksPanel(max_log=3)
    qtbot.addWidget(panel)
    status = ent_recording.statuses[-1]
    for k in range(5):
        panel.update_status(replace(status, time_s=float(k), messages=(f"note {k}",)))
    assert [e[2] for e in panel.log_entries()] == ["note 4", "note 3", "note 2"]

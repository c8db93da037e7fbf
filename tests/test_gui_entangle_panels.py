"""Entanglement panels (gui/entangle_panels.py) showing a real replay of the simulated bench.

The frames and statuses come from the session's entanglement recording (tests/recordings.py:
the simulated entanglement bench, replayed through ``replay_file`` with the view attached).
Every check reads what the widgets draw (the arrays given to the curves, the shaded window,
the table texts). A PNG of each panel goes to ``$LABCTL_ARTIFACTS`` (else the test's tmp_path).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from recordings import save_artifact, show_panel

from gui.entangle_panels import (
    NAN_TEXT,
    PAIR_COLUMNS,
    SUMMARY_KEYS,
    HistogramPanel,
    PairTablePanel,
)


def test_histograms_show_the_frames_counts_with_the_window(qtbot, ent_recording, tmp_path) -> None:
    panel = HistogramPanel(span_ps=3000.0)
    show_panel(qtbot, panel, (1500, 800), "entanglement.histograms")
    for frame in ent_recording.replay_frames:
        panel.update_frame(frame)
    frame = ent_recording.replay_frames[-1]
    assert panel.pair_names() == [h.name for h in frame.pairs]
    for h in frame.pairs:
        x, y = panel.displayed(h.name)
        keep = np.abs(h.bin_centers_ps - h.delay_ps) <= 3000.0
        assert np.array_equal(x, h.bin_centers_ps[keep])
        assert np.array_equal(y, h.counts_total[keep].astype(np.float64))
        assert y.sum() > 0
        lo, hi = panel.window_region(h.name)
        assert (lo, hi) == (h.window_lo_ps, h.window_hi_ps)
        assert lo <= h.delay_ps < hi
        assert panel.side_peaks(h.name) == pytest.approx(h.side_peaks_ps)
        assert f"{h.delay_ps:.0f} ps" in panel.plot_item(h.name).titleLabel.text
    save_artifact(panel, "entanglement_histograms", tmp_path)

    # last update's counts, whole range, log y: empty bins become gaps
    panel.mode_box.setCurrentText("last update")
    panel.whole_box.setChecked(True)
    panel.log_box.setChecked(True)
    h = frame.pairs[0]
    x, y = panel.displayed(h.name)
    assert np.array_equal(x, h.bin_centers_ps)
    expected = np.where(h.counts_interval > 0, h.counts_interval, np.nan).astype(np.float64)
    np.testing.assert_array_equal(y, expected)
    assert panel.plot_item(h.name).getViewBox().state["logMode"][1]
    save_artifact(panel, "entanglement_histograms_log", tmp_path)


def test_histograms_before_the_peak_is_found_show_everything_unmarked(qtbot, ent_recording) -> None:
    frame = ent_recording.replay_frames[0]
    first = frame.pairs[0]
    lost = replace(
        first,
        delay_ps=math.nan,
        window_lo_ps=math.nan,
        window_hi_ps=math.nan,
        accidental_windows_ps=np.empty((0, 2)),
    )
    panel = HistogramPanel()
    qtbot.addWidget(panel)
    panel.update_frame(replace(frame, pairs=(lost, *frame.pairs[1:])))
    x, y = panel.displayed(lost.name)
    assert np.array_equal(x, first.bin_centers_ps)
    assert np.array_equal(y, first.counts_total.astype(np.float64))
    assert panel.window_region(lost.name) is None and panel.side_peaks(lost.name) is None
    assert panel.window_region(frame.pairs[1].name) is not None


def test_pair_table_shows_the_status(qtbot, ent_recording, tmp_path) -> None:
    panel = show_panel(qtbot, PairTablePanel(), (1300, 400), "entanglement.pairs")
    for status in ent_recording.replay_statuses:
        panel.update_status(status)
    status = ent_recording.replay_statuses[-1]
    assert panel.headers() == [h for h, _ in PAIR_COLUMNS]
    assert panel.table.rowCount() == len(status.pairs)
    for i, row in enumerate(status.pairs):
        assert panel.row_of(f"{row.user_a}-{row.user_b}") == i
        assert panel.cell_text(i, "channels") == f"{row.channel_a}/{row.channel_b}"
        assert float(panel.cell_text(i, "singles a (kHz)")) == pytest.approx(
            row.singles_a_hz / 1e3, abs=0.005
        )
        assert float(panel.cell_text(i, "singles b (kHz)")) == pytest.approx(
            row.singles_b_hz / 1e3, abs=0.005
        )
        assert float(panel.cell_text(i, "coincidences (1/s)")) == pytest.approx(
            row.coincidences_hz, abs=0.05
        )
        assert float(panel.cell_text(i, "accidentals (1/s)")) == pytest.approx(
            row.accidentals_hz, abs=0.005
        )
        car, err = (float(v) for v in panel.cell_text(i, "CAR").split(" ± "))
        assert (car, err) == (
            pytest.approx(row.car, abs=0.05),
            pytest.approx(row.car_err, abs=0.05),
        )
        assert float(panel.cell_text(i, "delay (ps)")) == pytest.approx(row.delay_ps, abs=0.5)
        for col, value in (
            ("visibility (%)", row.visibility),
            ("QBER Z (%)", row.qber_z),
            ("QBER X (%)", row.qber_x),
            ("key rate (bit/s)", row.key_rate_bps),
        ):
            text = panel.cell_text(i, col)
            if math.isnan(value):
                assert text == NAN_TEXT
            else:
                assert float(text.split(" ± ")[0]) == pytest.approx(
                    value * (100.0 if "%" in col else 1.0), abs=0.05
                )
    assert panel.summary_text("lost events") == str(status.lost_events)
    assert panel.summary_text("clock").startswith(status.clock_state)
    assert float(panel.summary_text("clock drift").split()[0]) == pytest.approx(
        status.clock_drift_ppm, abs=5e-5
    )
    assert float(panel.summary_text("clock offset").split()[0]) == pytest.approx(
        status.clock_offset_ps * 1e-6, abs=5e-4
    )
    assert panel.summary_text("time").startswith(f"{status.time_s:.1f} s")
    assert set(SUMMARY_KEYS) == {"time", "total key rate", "clock", "clock offset",
                                 "clock drift", "lost events"}  # fmt: skip
    key = panel.summary_text("total key rate")
    if math.isnan(status.total_key_rate_bps):
        assert key.startswith(NAN_TEXT)
    else:
        assert float(key.split()[0]) == pytest.approx(status.total_key_rate_bps, abs=0.05)
    save_artifact(panel, "entanglement_pairs", tmp_path)


def test_pair_table_shows_figures_once_a_scan_gives_them(qtbot, ent_recording) -> None:
    """A visibility from a finished scan (a real row with its fringe figures filled in)."""
    status = ent_recording.replay_statuses[-1]
    row = replace(
        status.pairs[0], visibility=0.953, visibility_err=0.012, qber_z=0.0235, qber_x=0.0235,
        key_rate_bps=812.4,
    )  # fmt: skip
    panel = PairTablePanel()
    qtbot.addWidget(panel)
    panel.update_status(replace(status, pairs=(row, *status.pairs[1:]), total_key_rate_bps=812.4))
    assert panel.cell_text(0, "visibility (%)") == "95.3 ± 1.2"
    assert panel.cell_text(0, "QBER Z (%)") == "2.35" == panel.cell_text(0, "QBER X (%)")
    assert panel.cell_text(0, "key rate (bit/s)") == "812.4"
    assert panel.summary_text("total key rate") == "812.4 bit/s"

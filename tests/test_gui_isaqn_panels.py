"""gui.isaqn_panels (pytest-qt, offscreen) fed with real frames and statuses.

The frames and statuses come from a real recording of the simulated ISAQN bench replayed
through the live feed with :class:`labctl.isaqn_view.IsaqnView` attached (tests/recordings.py;
the recording is made once per session). Each test asserts on what the panel shows (the
arrays in its plots, its labels and table cells) against the frames, the statuses and the
bench config. A PNG of each panel is saved to ``$LABCTL_ARTIFACTS``
(if set) or the test's tmp_path.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from recordings import (
    IsaqnRecording,
    Replayed,
    replay_with_gap,
    replay_with_view,
    save_artifact,
    show_panel,
)

from dsp.locate import fibre_delay_s, locate_source
from gui.isaqn_panels import (
    VIBRATING_BRUSH,
    WINDOW_CHOICES_S,
    ConstellationPanel,
    LocationPanel,
    PhasePanel,
    SpectrumPanel,
)
from labctl.isaqn_status import EventLocation, NetworkStatus


@pytest.fixture(scope="module")
def replayed(isaqn_recording: IsaqnRecording) -> Replayed:
    return replay_with_view(isaqn_recording.path, every=2)


def shown_and_fed(qtbot, panel, replayed: Replayed, size=(900, 600)):
    """``panel`` shown at ``size`` (px) and given every frame and status of ``replayed``."""
    show_panel(qtbot, panel, size)
    feed(panel, replayed)
    return panel


def feed(panel, replayed: Replayed) -> None:
    """Every frame and status in the order the dashboard gets them."""
    statuses = iter(replayed.statuses)
    pending = next(statuses, None)
    for frame in replayed.frames:
        while pending is not None and pending.t_s <= frame.t_s + 1e-9:
            if hasattr(panel, "update_status"):
                panel.update_status(pending)
            pending = next(statuses, None)
        if hasattr(panel, "update_frame"):
            panel.update_frame(frame)
    panel.refresh()


# -- spectrum -----------------------------------------------------------------------------------
def test_spectrum_panel_shows_the_spectrum_bands_and_vibration_flags(
    qtbot, replayed: Replayed, tmp_path: Path
) -> None:
    cfg = replayed.view.config
    panel = shown_and_fed(qtbot, SpectrumPanel(cfg), replayed)
    frame, status = replayed.frames[-1], replayed.statuses[-1]
    f, p = panel.spectrum()
    assert np.array_equal(f, frame.spectrum_freq_hz)
    assert np.array_equal(p, frame.spectrum_psd_v2_per_hz)
    fd, pd = panel.displayed()
    assert fd.size > 0
    idx = np.searchsorted(frame.spectrum_freq_hz, fd)  # drawn points are the frame's bins
    assert np.array_equal(frame.spectrum_freq_hz[idx], fd)
    assert np.array_equal(frame.spectrum_psd_v2_per_hz[idx], pd)
    for node in cfg.nodes:
        half = 0.5 * (1.0 + cfg.rolloff) * node.symbol_rate_hz
        lo, hi = panel.bands_hz()[node.name]
        assert lo == pytest.approx(node.carrier_hz - half)
        assert hi == pytest.approx(node.carrier_hz + half)
    # the recorded run has a vibrating node (node1's PZT drive): flagged red with its figures
    assert any(n.vibrating for n in status.nodes)
    for n in status.nodes:
        assert panel.band_flagged(n.name) == n.vibrating
        label = panel.band_label(n.name)
        assert label.startswith(n.name)
        if n.vibrating:
            assert panel.band_brush_rgba(n.name) == VIBRATING_BRUSH
            if math.isfinite(n.vibration_freq_hz):
                assert f"{n.vibration_freq_hz:.0f} Hz" in label
            assert f"{n.castdown_db:.1f} dB" in label
        else:
            assert label == n.name
            assert panel.band_brush_rgba(n.name) != VIBRATING_BRUSH
    assert f"{frame.spectrum_averages} averages" in panel.info_text()
    save_artifact(panel, "isaqn_spectrum", tmp_path)


def test_spectrum_panel_flag_follows_the_status(qtbot, replayed: Replayed) -> None:
    panel = SpectrumPanel()  # bands from the first frame
    qtbot.addWidget(panel)
    status = replayed.statuses[-1]
    quiet = dataclasses.replace(
        status, nodes=tuple(dataclasses.replace(n, vibrating=False) for n in status.nodes)
    )
    loud = dataclasses.replace(
        status,
        nodes=tuple(
            dataclasses.replace(n, vibrating=True, vibration_freq_hz=37.2, castdown_db=6.14)
            for n in status.nodes
        ),
    )
    panel.update_status(loud)  # before any band: applied when the bands appear
    panel.update_frame(replayed.frames[0])
    name = status.nodes[1].name
    assert panel.band_label(name) == f"{name}: 37 Hz, 6.1 dB"
    panel.update_status(quiet)
    assert not panel.band_flagged(name) and panel.band_label(name) == name


# -- phase --------------------------------------------------------------------------------------
def test_phase_panel_shows_every_phase_sample_and_the_psd(
    qtbot, replayed: Replayed, tmp_path: Path
) -> None:
    cfg = replayed.view.config
    panel = shown_and_fed(qtbot, PhasePanel(cfg), replayed, (900, 700))
    frame = replayed.frames[-1]
    for b, node in enumerate(cfg.nodes):
        t, p = panel.phase(node.name)
        assert np.array_equal(t, replayed.cat("pilot_t", b))
        assert np.array_equal(p, replayed.cat("pilot_phase", b))
        f, psd = panel.psd(node.name)
        assert np.array_equal(f, frame.nodes[b].psd_freq_hz[1:])
        assert np.array_equal(psd, frame.nodes[b].psd_rad2_per_hz[1:])
        td, pd = panel.displayed_phase(node.name)
        # the trace shows the last window, decimated: drawn samples are the feed's, from the
        # window's start (plus one neighbour) to the newest pixel column
        column_s = panel.window_s / panel.trace.pixel_columns()
        assert td.size > 0 and t[-1] - 2 * column_s <= td[-1] <= t[-1]
        assert t[-1] - panel.window_s - column_s <= td[1] <= t[-1] - panel.window_s + column_s
        idx = np.searchsorted(t, td)
        assert np.array_equal(p[idx], pd)
    save_artifact(panel, "isaqn_phase", tmp_path)


def test_phase_window_choice_reaches_the_view(qtbot, replayed: Replayed) -> None:
    panel = PhasePanel(replayed.view.config)
    qtbot.addWidget(panel)
    panel.windowChanged.connect(replayed.view.set_window_s)  # as the dashboard wires it
    target = WINDOW_CHOICES_S[0]
    with qtbot.waitSignal(panel.windowChanged) as blocker:
        panel.combo.setCurrentIndex(panel.combo.findData(target))
    assert blocker.args == [target]
    assert panel.window_s == target and replayed.view.window_s == target
    with pytest.raises(ValueError, match="window_s"):
        panel.set_window_s(0.0)


def test_phase_panel_draws_a_gap_at_a_resynchronisation(
    isaqn_recording: IsaqnRecording, qtbot
) -> None:
    out = replay_with_gap(isaqn_recording.path)
    panel = PhasePanel(out.view.config)
    qtbot.addWidget(panel)
    feed(panel, out)
    for b, node in enumerate(out.view.config.nodes):
        t, p = panel.phase(node.name)
        gap = np.flatnonzero(np.isnan(p))
        assert gap.size == 1
        ref_t, ref_p = out.cat("pilot_t", b), out.cat("pilot_phase", b)
        # the gap sits at the new stream's first sample; every other sample is the feed's
        assert t[gap[0]] == t[gap[0] + 1]
        assert np.array_equal(np.delete(t, gap), ref_t)
        assert np.array_equal(np.delete(p, gap), ref_p)
        assert t[gap[0]] - t[gap[0] - 1] > 1.5 / out.view.pilot_rate_hz[b]


# -- constellation ------------------------------------------------------------------------------
def test_constellation_panel_shows_points_figures_and_history(
    qtbot, replayed: Replayed, tmp_path: Path
) -> None:
    cfg = replayed.view.config
    panel = shown_and_fed(qtbot, ConstellationPanel(cfg), replayed, (1000, 800))
    frame, statuses = replayed.frames[-1], replayed.statuses
    last = statuses[-1]
    for row, node in enumerate(last.nodes):
        x, p = panel.points(node.name)
        assert np.array_equal(x, frame.nodes[row].constellation_x_snu)
        assert np.array_equal(p, frame.nodes[row].constellation_p_snu)
        assert panel.cell_text(row, 0) == node.name
        assert panel.cell_text(row, 1).startswith(f"{node.transmittance:.4f} [")
        assert f"{node.transmittance_ci[0]:.4f}, {node.transmittance_ci[1]:.4f}]" in (
            panel.cell_text(row, 1)
        )
        assert panel.cell_text(row, 2).startswith(f"{node.xi_snu:.4f} [")
        assert panel.cell_text(row, 3) == f"{node.skr_bps:.4g}"
        assert panel.cell_text(row, 4) == str(node.n_symbols)
        for quantity in ("transmittance", "xi_snu", "skr_bps"):
            t, v = panel.history(quantity, node.name)
            assert np.array_equal(t, [s.t_s for s in statuses])
            ref = [getattr(s.nodes[row], quantity) for s in statuses]
            np.testing.assert_array_equal(v, ref)
        t, lo, hi = panel.history_ci("xi_snu", node.name)
        np.testing.assert_array_equal(lo, [s.nodes[row].xi_ci_snu[0] for s in statuses])
        np.testing.assert_array_equal(hi, [s.nodes[row].xi_ci_snu[1] for s in statuses])
    save_artifact(panel, "isaqn_constellation", tmp_path)


# -- location -----------------------------------------------------------------------------------
def located(cfg, status: NetworkStatus, source_xy_m=(2000.0, 1500.0)) -> NetworkStatus:
    """``status`` with a source located by dsp.locate from the arrival times a burst at
    ``source_xy_m`` gives at the config's nodes (ground travel + fibre delays)."""
    xy = np.array([[n.x_m, n.y_m] for n in cfg.nodes])
    fibre = np.array([n.fibre_m for n in cfg.nodes])
    travel = np.hypot(*(xy - np.array(source_xy_m)).T) / cfg.wave_speed_m_s
    arrival = travel + fibre_delay_s(fibre, cfg.fibre_index)
    loc = locate_source(
        xy, arrival - arrival[0], cfg.wave_speed_m_s, fibre, cfg.fibre_index, timing_sigma_s=1e-3
    )
    event = EventLocation(
        t_s=status.t_s - 1.0,
        x_m=loc.x_m,
        y_m=loc.y_m,
        sigma_x_m=loc.sigma_x_m,
        sigma_y_m=loc.sigma_y_m,
        rms_residual_s=loc.rms_residual_s,
        nodes=tuple(n.name for n in cfg.nodes),
        arrival_s=tuple(float(a) for a in arrival - arrival[0]),
        ambiguous=loc.ambiguous,
    )
    return dataclasses.replace(status, location=event)


def test_location_panel_shows_nodes_and_the_located_source(
    qtbot, replayed: Replayed, tmp_path: Path
) -> None:
    cfg = replayed.view.config
    # positions from the frames; the short run locates no event
    panel = shown_and_fed(qtbot, LocationPanel(), replayed, (700, 700))
    positions = panel.node_positions()
    assert positions.pop("center") == (0.0, 0.0)
    assert positions == {n.name: (n.x_m, n.y_m) for n in cfg.nodes}
    assert panel.source_xy() is None
    status = located(cfg, replayed.statuses[-1])
    loc = status.location
    assert loc is not None and math.isfinite(loc.sigma_x_m)
    panel.update_status(status)
    assert panel.source_xy() == (loc.x_m, loc.y_m)
    ex, ey = panel.ellipse()
    assert np.max(ex) == pytest.approx(loc.x_m + loc.sigma_x_m)
    assert np.min(ey) == pytest.approx(loc.y_m - loc.sigma_y_m)
    assert f"x = {loc.x_m:.0f} m, y = {loc.y_m:.0f} m" in panel.source_text()
    assert len(panel.events_text()) == 1
    panel.update_status(status)  # the same event again (statuses repeat the last one)
    assert len(panel.events_text()) == 1
    again = dataclasses.replace(
        status, location=dataclasses.replace(loc, t_s=loc.t_s + 5.0, ambiguous=True)
    )
    panel.update_status(again)
    assert len(panel.events_text()) == 2 and panel.events_text()[-1].endswith("AMBIGUOUS")
    save_artifact(panel, "isaqn_location", tmp_path)


def test_panels_have_titles_and_stable_names(qtbot, replayed: Replayed) -> None:
    names = set()
    for cls in (SpectrumPanel, PhasePanel, ConstellationPanel, LocationPanel):
        panel = cls(replayed.view.config)
        qtbot.addWidget(panel)
        assert isinstance(cls.title, str) and cls.title
        names.add(panel.objectName())
    assert len(names) == 4 and all(n.startswith("isaqn-") for n in names)

"""NetworkMonitor and EventLocator on synthetic receiver output (no twin): closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.cvqkd import PeSums
from dsp.locate import fibre_delay_s
from labctl.config import CONFIG_DIR, load_bench
from labctl.isaqn_monitor import EventLocator, LocatorConfig
from labctl.isaqn_pipeline import BandRecord, RecordResult

CONFIG = load_bench(CONFIG_DIR / "isaqn_sim.toml").isaqn
F_P = 50e3 / 4
RECORD_S = 0.1
SOURCE = (2000.0, 1500.0)


def burst(u_s: np.ndarray, freq_hz: float = 20.0, cycles: float = 4.0) -> np.ndarray:
    dur = cycles / freq_hz
    inside = (u_s >= 0) & (u_s < dur)
    return np.where(
        inside, 3.0 * np.sin(np.pi * u_s / dur) ** 2 * np.sin(2 * np.pi * freq_hz * u_s), 0.0
    )


def records(event_t_s: list[float], n_records: int, seed: int = 1):
    """Pilot phases of the 3 nodes: drift + noise + bursts from SOURCE leaving at event_t_s."""
    rng = np.random.default_rng(seed)
    xy = np.array([[n.x_m, n.y_m] for n in CONFIG.nodes])
    delays = fibre_delay_s([n.fibre_m for n in CONFIG.nodes])
    travel = np.hypot(*(xy - np.array(SOURCE)).T) / CONFIG.wave_speed_m_s
    drift = [0.0, 0.0, 0.0]
    for r in range(n_records):
        result = RecordResult(t0_s=r * RECORD_S)
        for b in range(3):
            t = r * RECORD_S + (np.arange(int(RECORD_S * F_P)) + 0.3 * b) / F_P
            walk = drift[b] + np.cumsum(rng.normal(0, 0.002, t.size))
            drift[b] = walk[-1]
            phase = walk + rng.normal(0, 0.05, t.size)
            for t_ev in event_t_s:
                phase += burst(t - t_ev - travel[b] - delays[b])
            result.bands[b] = BandRecord(
                pilot_t_s=t,
                pilot_phase_rad=phase,
                pilots_snu=100 * np.exp(1j * phase),
                pilot_power_snu=1e4,
                band_power_snu=1.0,
                pe=PeSums(),
                gain=1.0,
                locked=True,
            )
        yield result


def test_each_event_is_located_once_where_it_happened() -> None:
    loc = EventLocator(CONFIG)
    found = []
    for k, result in enumerate(records([1.0, 9.0], 160)):
        loc.update(result)
        if k % 10 == 9:  # once per update interval
            event = loc.find_event()
            if event is not None:
                found.append(event)
    assert len(found) == 2
    spacing = 2 * 8660.254
    for event in found:
        assert math.hypot(event.x_m - SOURCE[0], event.y_m - SOURCE[1]) < 0.01 * spacing
        assert event.nodes == ("node1", "node2", "node3")
    assert found[0].t_s == pytest.approx(1.0 + 8732 / 6000 + 10000 * 1.468 / 299_792_458, abs=0.05)


def test_quiet_nodes_give_no_event() -> None:
    loc = EventLocator(CONFIG)
    for result in records([], 80):
        loc.update(result)
        assert loc.find_event() is None


def test_a_buffer_shorter_than_the_arrival_spread_is_refused() -> None:
    with pytest.raises(ValueError, match=r"buffer_s = 3\.0 s cannot hold an event"):
        EventLocator(CONFIG, LocatorConfig(buffer_s=3.0))

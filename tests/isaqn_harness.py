"""Shared by the ISAQN twin tests: bench variants and captures through the real instruments.

:func:`bench_variant` changes the shipped bench (configs/isaqn_sim.toml) where a test needs
other physics, keeping what the operator configures ([isaqn]) and the twin's truth
([isaqn.sim]) consistent. :func:`capture` runs the job's own configure / calibrate / acquire
steps (labctl.isaqn_job.IsaqnJob) on a manual clock and returns the raw records, the
receiver synchronised on the first data record (pilot times in the twin's time) and the twin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.sim.clock import VirtualClock
from drivers.sim.isaqn import IsaqnNetwork
from labctl.bench import Bench
from labctl.config import CONFIG_DIR, BenchConfig, load_bench
from labctl.isaqn_config import PztDrive
from labctl.isaqn_job import IsaqnJob
from labctl.isaqn_pipeline import IsaqnReceiver, RecordResult

ISAQN_BENCH = CONFIG_DIR / "isaqn_sim.toml"


#: node fields the operator's config and the twin's truth both hold
SHARED_NODE_FIELDS = {
    "carrier_hz",
    "symbol_rate_hz",
    "quadrature_per_v",
    "fibre_m",
    "x_m",
    "y_m",
    "pzt",
}


def bench_variant(
    *,
    keep_nodes: Sequence[str] | None = None,
    isaqn: Mapping[str, Any] | None = None,
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    sim: Mapping[str, Any] | None = None,
    sim_nodes: Mapping[str, Mapping[str, Any]] | None = None,
) -> BenchConfig:
    """The shipped ISAQN bench with fields replaced.

    ``nodes[name]`` changes a node for the operator and, for the fields both have (carrier,
    symbol rate, fibre, position, PZT port), for the twin; ``sim_nodes[name]`` the twin only
    (truth: xi_snu, drift_rad2_per_s, pzt_rad_per_v, ...). ``isaqn`` fields shared with the
    twin (eta, splitter_ports, ...) are changed in both.
    """
    config = load_bench(ISAQN_BENCH)
    iq = config.isaqn
    assert iq is not None and iq.sim is not None
    nodes = nodes or {}
    sim_nodes = sim_nodes or {}
    keep = list(keep_nodes) if keep_nodes is not None else [n.name for n in iq.nodes]
    op_nodes, twin_nodes = [], []
    for node, phys in zip(iq.nodes, iq.sim.nodes, strict=True):
        if node.name not in keep:
            continue
        change = dict(nodes.get(node.name, {}))
        op_nodes.append(dataclasses.replace(node, **change))
        shared = {k: v for k, v in change.items() if k in SHARED_NODE_FIELDS}
        twin_nodes.append(dataclasses.replace(phys, **shared, **sim_nodes.get(node.name, {})))
    isaqn = dict(isaqn or {})
    sim_change = dict(sim or {})
    for key in ("eta", "splitter_ports", "pulse_span_symbols", "fibre_index", "wave_speed_m_s"):
        if key in isaqn:
            sim_change.setdefault(key, isaqn[key])
    if "rolloff" in isaqn:
        twin_nodes = [dataclasses.replace(n, rolloff=isaqn["rolloff"]) for n in twin_nodes]
    physics = dataclasses.replace(iq.sim, nodes=tuple(twin_nodes), **sim_change)
    new_iq = dataclasses.replace(iq, nodes=tuple(op_nodes), sim=physics, **isaqn)
    return dataclasses.replace(config, isaqn=new_iq)


def pzt(function: str, freq_hz: float, amplitude_vpp: float) -> PztDrive:
    return PztDrive(function=function, freq_hz=freq_hz, amplitude_vpp=amplitude_vpp)


@dataclass
class Capture:
    """Records of one run: ``results`` from the receiver, pilot times in the twin's time."""

    config: BenchConfig
    receiver: IsaqnReceiver
    records: list[np.ndarray]  # data records, complex volts
    results: list[RecordResult]
    net: IsaqnNetwork
    t0_s: float  # twin time of the first data sample
    truth_phase_rad: list[np.ndarray]  # per band, the twin's phase at each pilot time
    truth_vibration_rad: list[np.ndarray]  # per band, its PZT + event phase at those times

    def pilots(self, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t_s, unwrapped phase rad, complex pilots SNU) of a band over the capture."""
        rs = [r.bands[band] for r in self.results]
        return (
            np.concatenate([r.pilot_t_s for r in rs]),
            np.concatenate([r.pilot_phase_rad for r in rs]),
            np.concatenate([r.pilots_snu for r in rs]),
        )


def capture(config: BenchConfig, n_records: int) -> Capture:
    """Configure, calibrate, synchronise and stream ``n_records`` data records."""
    iq = config.isaqn
    assert iq is not None
    with Bench(config, clock=VirtualClock(realtime=False)) as bench:
        bench.connect()
        bench.apply_safe_start()
        job = IsaqnJob(bench, config)
        job.configure()
        job.calibrate()
        rx = job.receiver
        first = job.acquire()
        t0_s = bench.sim_host.sims[iq.scope].last_acquisition[0]
        rx.synchronise(first.samples, t0_s)
        net = bench.sim_host.bench.elements[iq.icr]
        n_bands = len(iq.nodes)
        phase: list[list[np.ndarray]] = [[] for _ in range(n_bands)]
        vibration: list[list[np.ndarray]] = [[] for _ in range(n_bands)]
        records: list[np.ndarray] = []
        results: list[RecordResult] = []
        samples = first.samples
        for k in range(n_records):
            if k:
                samples = job.acquire().samples
            result = rx.process(samples)
            assert not rx.needs_resync, "a band lost lock"
            records.append(samples)
            results.append(result)
            # the truth now: the twin keeps a few seconds of history, and closing the bench
            # turns the drives off
            for b in range(n_bands):
                t = result.bands[b].pilot_t_s
                phase[b].append(net.phase_rad(b, t))
                vibration[b].append(net.vibration_rad(b, t))
        assert job.overloads == 0, "the scope clipped"
    return Capture(
        config,
        rx,
        records,
        results,
        net,
        float(t0_s),
        [np.concatenate(p) for p in phase],
        [np.concatenate(v) for v in vibration],
    )

"""Closed-loop phase compensation and ``labctl bench predictors``: exact schedules, oracle,
equal-QBER tuning, JSON figures. No timing thresholds."""

from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from labctl import bench_predictors
from models import base
from models.base import DriftPredictor
from models.closed_loop import (
    ErrorModel,
    LinkParams,
    LoopResult,
    calibrate_error_model,
    qber_from_phase_error,
    simulate_prediction_driven,
    simulate_scan_and_transmit,
    tune_prediction_driven,
    tune_scan_and_transmit,
)
from models.drift import TELEMETRY_NAMES, DriftParams, DriftTrace, generate_drift
from models.predictors import KalmanPredictor


class OraclePredictor(DriftPredictor):
    """Knows the true phase of the trace it is run on: predicts it exactly."""

    name = "oracle"

    def __init__(self, trace: DriftTrace, horizons_ticks=(1,)) -> None:
        self.horizons_ticks = tuple(horizons_ticks)
        self._phase = trace.phase_rad
        self._i = 0

    def reset(self) -> None:
        self._i = 0

    def step(self, phase_rad: float, telemetry: np.ndarray) -> np.ndarray:
        i = self._i
        self._i += 1
        last = self._phase.size - 1
        return np.array([self._phase[min(i + h, last)] for h in self.horizons_ticks])


def _flat_trace(n: int, phase: float = 0.7) -> DriftTrace:
    tel = np.tile([22.0, 1.0, 0.5], (n, 1))
    ph = np.full(n, phase)
    return DriftTrace(
        np.arange(1.0, n + 1), ph, ph.copy(), tel, TELEMETRY_NAMES, np.zeros(n, dtype=bool)
    )


@pytest.mark.parametrize("v0", [1.0, 0.98, 0.9])
def test_qber_closed_forms(v0: float) -> None:
    d = np.array([0.0, math.pi / 2, math.pi, -math.pi / 3])
    np.testing.assert_allclose(
        qber_from_phase_error(d, v0), [(1 - v0) / 2, 0.5, (1 + v0) / 2, (1 - v0 / 2) / 2]
    )


@pytest.mark.parametrize(("transmit", "scan", "periods"), [(30, 15, 40), (1, 1, 7), (97, 13, 5)])
def test_baseline_duty_cycle_is_exactly_the_period_ratio(
    transmit: int, scan: int, periods: int
) -> None:
    tr = generate_drift(float((transmit + scan) * periods), seed=1)
    r = simulate_scan_and_transmit(tr, transmit_ticks=transmit, link=LinkParams(scan_ticks=scan))
    assert r.duty_cycle == transmit / (transmit + scan)
    assert r.n_scans == periods
    assert np.isnan(r.phase_error_rad[~r.transmitting]).all()
    assert np.isfinite(r.phase_error_rad[r.transmitting]).all()


def test_baseline_compensates_with_the_scan_mean() -> None:
    tr = generate_drift(600.0, seed=2)
    link = LinkParams(scan_ticks=10)
    r = simulate_scan_and_transmit(tr, transmit_ticks=20, link=link)
    # second period: ticks 30..59, scan 30..39, transmit 40..59
    comp = tr.measured_phase_rad[30:40].mean()
    np.testing.assert_allclose(r.phase_error_rad[40:60], tr.phase_rad[40:60] - comp)


def test_constant_phase_gives_the_intrinsic_qber() -> None:
    tr = _flat_trace(3000)
    r = simulate_scan_and_transmit(tr, transmit_ticks=45, link=LinkParams(visibility=0.97))
    assert r.mean_qber == pytest.approx(0.015, abs=1e-15)


def test_oracle_predictor_transmits_all_but_the_scans() -> None:
    """A perfect predictor never spends its budget: it scans only at the start and at the
    calibrated age limit, so duty = 1 - scan ticks / all ticks, at the intrinsic QBER."""
    tr = generate_drift(4 * 3600.0, seed=3)
    oracle = OraclePredictor(tr)
    link = LinkParams(scan_ticks=15, warmup_ticks=600, visibility=0.98)
    model = calibrate_error_model([tr], oracle, link=link, transmit_ticks=1000)
    np.testing.assert_array_equal(model.msq_rad2, 0.0)
    r = simulate_prediction_driven(tr, oracle, model, budget_rad2=1e-9, link=link)
    n = len(tr) - link.warmup_ticks
    assert r.n_scans == math.ceil(n / (link.scan_ticks + model.max_age_ticks))
    assert r.duty_cycle == pytest.approx(1.0 - link.scan_ticks * r.n_scans / n, abs=1e-12)
    assert r.duty_cycle > 0.98
    assert r.mean_qber == pytest.approx(0.01, abs=1e-12)


def test_prediction_driven_rescans_after_a_vibration_burst() -> None:
    """Oracle-free check of the burst rule: with a budget between the clean error and the
    clean error + one burst, every burst that ends while transmitting triggers a scan."""
    params = replace(DriftParams(), burst_rate_per_hour=6.0)
    tr = generate_drift(6 * 3600.0, params, seed=4)
    link = LinkParams(warmup_ticks=0)
    oracle = OraclePredictor(tr)
    model = calibrate_error_model([tr], oracle, link=link, transmit_ticks=600)
    model = replace(model, burst_rad2=1.0)
    quiet = simulate_prediction_driven(
        tr, oracle, replace(model, burst_rad2=0.0), budget_rad2=0.5, link=link
    )
    loud = simulate_prediction_driven(tr, oracle, model, budget_rad2=0.5, link=link)
    assert loud.n_scans > quiet.n_scans
    assert loud.duty_cycle < quiet.duty_cycle


def test_error_model_adds_a_term_per_burst_and_clamps_the_age() -> None:
    model = ErrorModel(np.array([0.1, 0.2, 0.4]), burst_rad2=0.05, vibration_threshold_mg=2.5)
    assert model.predict(0, 0) == 0.1
    assert model.predict(2, 3) == pytest.approx(0.2 + 3 * 0.05)
    assert model.predict(99, 0) == 0.4
    never_seen = replace(model, burst_rad2=math.inf)
    assert never_seen.predict(2, 0) == 0.2
    assert never_seen.predict(2, 1) == math.inf


def test_scan_and_transmit_tuning_brackets_the_target() -> None:
    traces = [generate_drift(3 * 3600.0, seed=s) for s in (5, 6)]
    link = LinkParams()
    ref = LoopResult.concat(
        [simulate_scan_and_transmit(tr, transmit_ticks=60, link=link) for tr in traces]
    )
    t = tune_scan_and_transmit(traces, ref.mean_qber, link=link, max_transmit_ticks=1200)
    assert t.reached
    assert t.train_qber <= ref.mean_qber < t.upper_qber
    assert t.upper == t.parameter + 1  # integer bisection down to adjacent periods


def test_prediction_driven_tuning_hits_the_target_within_tolerance() -> None:
    train = [generate_drift(8 * 3600.0, seed=7)]
    tune = [generate_drift(4 * 3600.0, seed=s, start_s=3600.0 * s) for s in (8, 9)]
    link = LinkParams(warmup_ticks=600)
    kalman = KalmanPredictor((1,), fit_max_ticks=20_000)
    kalman.fit(train)
    model = calibrate_error_model(tune, kalman, link=link, transmit_ticks=600)
    target = LoopResult.concat(
        [simulate_scan_and_transmit(tr, transmit_ticks=30, link=link) for tr in tune]
    ).mean_qber
    steps = 6
    t = tune_prediction_driven(tune, kalman, model, target, link=link, bisection_steps=steps)
    assert t.reached
    assert t.train_qber <= target < t.upper_qber
    grid_ratio = (model.msq_rad2[-1] / model.msq_rad2[0]) ** (1 / 5)
    assert t.upper / t.parameter <= grid_ratio ** (2.0**-steps) * (1 + 1e-9)
    # the QBER excess over the intrinsic floor is met to within a few percent
    floor = (1 - link.visibility) / 2
    assert (target - t.train_qber) / (target - floor) < 0.05
    # and the tuned budget reproduces its training figure
    again = LoopResult.concat(
        [
            simulate_prediction_driven(tr, kalman, model, budget_rad2=t.parameter, link=link)
            for tr in tune
        ]
    )
    assert again.mean_qber == t.train_qber


# ---------------------------------------------------------------------------------------------
# The benchmark command


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_predictors.add_arguments(parser)
    return parser.parse_args(argv)


SMALL = [
    "--train-hours",
    "6",
    "--tune-hours",
    "2",
    "--hours",
    "2",
    "--warmup-hours",
    "0.5",
    "--latency-calls",
    "200",
]


@pytest.fixture(scope="module")
def bench_json() -> dict:
    """One small benchmark run through the CLI entry point, with an LSTM that cannot load."""
    mp = pytest.MonkeyPatch()
    mp.setitem(base.PREDICTORS, "lstm", "models.no_such_module:LstmPredictor")
    out = io.StringIO()
    mp.setattr("sys.stdout", out)
    try:
        args = _parse([*SMALL, "--json", "--predictors", "persistence,kalman,arx,lstm"])
        assert args.func(args) == 0
    finally:
        mp.undo()
    return json.loads(out.getvalue())


def test_bench_json_has_the_figures_for_every_predictor(bench_json: dict) -> None:
    r = bench_json
    names = ["persistence", "kalman", "arx"]
    assert r["predictors"] == names
    horizons = [f"{h:g}" for h in r["parameters"]["horizons_s"]]
    for n in names:
        assert list(r["rmse"][n]) == horizons
        assert all(v > 0 for v in r["rmse"][n].values())
        assert r["latency_us"][n]["median"] > 0
        assert r["latency_us"][n]["p99"] >= r["latency_us"][n]["median"]
        assert r["closed_loop"][n]["parameter"] == "budget_rad2"
        assert n in r["duty_cycle_gain"]
    for key in ("duty_cycle", "qber", "phase_error_rad", "scans_per_hour"):
        assert set(r[key]) == {"scan_and_transmit", *names}
    assert all(0.0 <= v <= 1.0 for v in r["duty_cycle"].values())
    assert r["closed_loop"]["scan_and_transmit"]["parameter"] == "transmit_s"
    assert r["default_predictor"] in (*names, None)
    assert r["default_predictor_criterion"]
    assert r["target_qber"] > (1 - r["parameters"]["visibility"]) / 2
    assert r["parameters"]["seeds"]["test"] != r["parameters"]["seeds"]["tune"]


def test_bench_leaves_out_an_lstm_that_cannot_load_with_a_note(bench_json: dict) -> None:
    assert "lstm" not in bench_json["predictors"]
    assert any(note.startswith("lstm left out") for note in bench_json["notes"])
    assert bench_json["targets_met"]["onnx_p99_us"] is None


def test_bench_rmse_ranks_the_telemetry_model_first_at_the_longest_horizon(
    bench_json: dict,
) -> None:
    h = f"{bench_json['parameters']['horizons_s'][-1]:g}"
    q = bench_json["rmse_quiet"]
    assert q["arx"][h] < q["persistence"][h]


def test_print_table_shows_every_strategy(bench_json: dict) -> None:
    buf = io.StringIO()
    bench_predictors.print_table(bench_json, Console(file=buf, width=200))
    text = buf.getvalue()
    for word in ("persistence", "kalman", "arx", "scan/transmit", "duty cycle", "lstm left out"):
        assert word in text


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--seed", "99999"], "--seed"),
        (["--predictors", "arx,oracle"], "--predictors"),
        (["--hours", "0"], "--hours"),
        (["--target-qber", "0.7"], "--target-qber"),
    ],
)
def test_bench_refuses_bad_options(argv: list[str], flag: str, capsys) -> None:
    args = _parse(argv)
    assert bench_predictors.main(args) == 2
    assert flag in capsys.readouterr().err

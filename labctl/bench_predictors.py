"""``labctl bench predictors``: drift predictors on held-out drift, and what they buy a QKD link.

Registered by the top-level CLI with ``bench_predictors.add_parser(bench_sub)`` (or build a
parser with :func:`add_arguments` and call :func:`main`); the work is done by
:func:`run_predictor_benchmark`, which returns the figures as a dict (the ``--json`` output).

Data (:mod:`models.drift`, default :class:`~models.drift.DriftParams`, tick 1 s), three disjoint
seed ranges derived from ``--seed`` (all below the LSTM's training seeds, >= 7,000,000):

* *fit* traces (``train_hours``, cut into traces of at most 24 h): the predictors' ``fit``;
* *tune* traces (``tune_hours``, two traces): training data for the closed loop -- the error
  model calibration, the target QBER and the equal-QBER bisections;
* *held-out* traces (``test_hours``, two traces): everything reported.

Each tune/held-out trace starts with ``warmup_hours`` during which the predictors see every
measured phase and the telemetry, uncounted (their telemetry filters must settle, as they would
on a running bench); then the evaluation starts with a scan.

Figures:

* ``rmse`` -- predictor -> {horizon_s: rms error, rad} of the predicted phase against the true
  phase on the held-out traces, phase measured every tick (``rmse_quiet``: ticks whose horizon
  window holds no vibration burst);
* ``latency_us`` -- predictor -> median and p99 of one ``step()`` call (``time.perf_counter_ns``,
  garbage collector paused as in ``timeit``), over ``latency_calls`` calls on a held-out trace
  with the closed-loop measurement pattern;
* closed loop (:mod:`models.closed_loop`): the target QBER is the scan-and-transmit QBER on the
  tune traces at the reference schedule (``reference_transmit_s`` transmit, ``scan_s`` scan) or
  ``target_qber``; each strategy's free parameter is bisected on the tune traces to meet it;
  ``duty_cycle``, ``qber``, ``phase_error_rad`` (rms), ``scans_per_hour`` on the held-out traces
  for ``scan_and_transmit`` and each predictor; ``duty_cycle_gain`` = duty / baseline duty - 1.
* ``default_predictor`` -- the predictor with the highest held-out duty cycle among those that
  met the target QBER on the tune traces (criterion stated in ``default_predictor_criterion``).

``lstm`` is included when :mod:`models.lstm` imports and its shipped ONNX file loads; otherwise
it is left out and the reason is in ``notes``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from models.base import DEFAULT_HORIZONS_TICKS, DriftPredictor, make_predictor
from models.closed_loop import (
    LinkParams,
    LoopResult,
    WarmCache,
    calibrate_error_model,
    simulate_prediction_driven,
    simulate_scan_and_transmit,
    tune_prediction_driven,
    tune_scan_and_transmit,
)
from models.drift import DriftParams, DriftTrace, generate_drift

_PROG = "labctl bench predictors"
ALL_PREDICTORS: tuple[str, ...] = ("persistence", "kalman", "arx", "lstm")
BASELINE = "scan_and_transmit"
TARGET_ONNX_P99_US = 100.0
TARGET_DUTY_GAIN = 1.0 / 3.0
#: seeds of the three data sets: SEED_STRIDE * seed + offset + k
SEED_STRIDE = 1000
FIT_SEED_OFFSET, TUNE_SEED_OFFSET, TEST_SEED_OFFSET = 0, 200, 500
MAX_SEED = 6999  # SEED_STRIDE * seed + 999 stays below the LSTM's training seeds (7,000,000)

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``labctl bench predictors`` (sets ``func`` to :func:`main`)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--hours", type=float, default=12.0, help="held-out drift, hours (default 12)"
    )
    parser.add_argument(
        "--train-hours", type=float, default=48.0, help="fit data, hours (default 48)"
    )
    parser.add_argument(
        "--tune-hours",
        type=float,
        default=8.0,
        help="closed-loop calibration/tuning data, hours (default 8)",
    )
    parser.add_argument(
        "--warmup-hours",
        type=float,
        default=3.0,
        help="predictor warm-up before each tune/held-out trace, hours (default 3)",
    )
    parser.add_argument("--seed", type=int, default=1, help=f"data seed, 0..{MAX_SEED}")
    parser.add_argument(
        "--predictors",
        default=",".join(ALL_PREDICTORS),
        help=f"comma-separated subset of {','.join(ALL_PREDICTORS)} (default: all available)",
    )
    parser.add_argument("--scan-s", type=float, default=15.0, help="one phase scan, s")
    parser.add_argument(
        "--reference-transmit-s",
        type=float,
        default=30.0,
        help="scan-and-transmit schedule that sets the target QBER, transmit s (default 30)",
    )
    parser.add_argument(
        "--target-qber", type=float, default=None, help="fixed target QBER instead (e.g. 0.012)"
    )
    parser.add_argument(
        "--visibility", type=float, default=0.98, help="intrinsic visibility V0 (default 0.98)"
    )
    parser.add_argument(
        "--latency-calls",
        type=int,
        default=5000,
        help="step() calls timed per predictor (default 5000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run for smoke tests: 12 h fit, 3 h tune, 3 h held-out, 1 h warm-up",
    )
    parser.set_defaults(func=main)


def add_parser(bench_subparsers: Any) -> None:
    """Register the ``predictors`` sub-command on an argparse sub-parsers object."""
    parser = bench_subparsers.add_parser(
        "predictors",
        help="drift predictors: RMSE, step latency, closed-loop duty cycle at equal QBER",
        description=(
            "Fit persistence, Kalman, ARX (and the shipped LSTM) on simulated interferometer "
            "drift; print held-out RMSE per horizon, step latency, and the QKD link's duty "
            "cycle with scan-and-transmit vs prediction-driven scans at equal QBER."
        ),
    )
    add_arguments(parser)


def _validate(args: argparse.Namespace) -> str | None:
    for name in ("hours", "train_hours", "tune_hours", "scan_s", "reference_transmit_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            return f"--{name.replace('_', '-')}: got {value}, expected > 0"
    if not (math.isfinite(args.warmup_hours) and args.warmup_hours >= 0):
        return f"--warmup-hours: got {args.warmup_hours}, expected >= 0"
    if not 0 <= args.seed <= MAX_SEED:
        return f"--seed: got {args.seed}, expected 0..{MAX_SEED}"
    names = [n.strip() for n in args.predictors.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_PREDICTORS]
    if not names or unknown:
        return f"--predictors: got {args.predictors!r}, expected a subset of {ALL_PREDICTORS}"
    if args.target_qber is not None and not 0.0 < args.target_qber < 0.5:
        return f"--target-qber: got {args.target_qber}, expected in (0, 0.5)"
    if not 0.0 < args.visibility <= 1.0:
        return f"--visibility: got {args.visibility}, expected in (0, 1]"
    if args.latency_calls < 100:
        return f"--latency-calls: got {args.latency_calls}, expected >= 100"
    return None


def main(args: argparse.Namespace) -> int:
    """Execute ``labctl bench predictors``; returns the exit code (0 ok, 2 usage)."""
    problem = _validate(args)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    sizes: dict[str, float] = {
        "train_hours": args.train_hours,
        "tune_hours": args.tune_hours,
        "test_hours": args.hours,
        "warmup_hours": args.warmup_hours,
    }
    if args.quick:
        sizes = {"train_hours": 12.0, "tune_hours": 3.0, "test_hours": 3.0, "warmup_hours": 1.0}
    result = run_predictor_benchmark(
        **sizes,
        seed=args.seed,
        predictors=[n.strip() for n in args.predictors.split(",") if n.strip()],
        scan_s=args.scan_s,
        reference_transmit_s=args.reference_transmit_s,
        target_qber=args.target_qber,
        visibility=args.visibility,
        latency_calls=args.latency_calls,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(_json_safe(result)))
    else:
        print_table(result, Console())
    return 0


# ---------------------------------------------------------------------------------------------
# Benchmark


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _traces(
    hours: float, n: int, seed0: int, params: DriftParams, warmup_s: float, rng: np.random.Generator
) -> list[DriftTrace]:
    """``n`` traces sharing ``hours`` (plus ``warmup_s`` each), random times of day."""
    each_s = hours * 3600.0 / n
    return [
        generate_drift(
            each_s + warmup_s, params, seed=seed0 + k, start_s=float(rng.uniform(0, 86_400.0))
        )
        for k in range(n)
    ]


def _fit_traces(
    hours: float, seed0: int, params: DriftParams, rng: np.random.Generator
) -> list[DriftTrace]:
    n = max(1, math.ceil(hours / 24.0))
    return _traces(hours, n, seed0, params, 0.0, rng)


def available_predictors(
    names: Sequence[str], horizons_ticks: Sequence[int]
) -> tuple[dict[str, DriftPredictor], list[str]]:
    """Build the named predictors; those that cannot be built (e.g. the LSTM without its model
    file) are left out with a note."""
    built: dict[str, DriftPredictor] = {}
    notes: list[str] = []
    for name in names:
        try:
            if name == "lstm":
                p = make_predictor("lstm")  # horizons come from the model's metadata
            else:
                p = make_predictor(name, horizons_ticks=tuple(horizons_ticks))
        except Exception as exc:  # missing module or model file: reported, not fatal
            notes.append(f"{name} left out: {type(exc).__name__}: {exc}")
            continue
        built[name] = p
    return built, notes


def horizon_rmse(
    predictor: DriftPredictor, traces: Sequence[DriftTrace], warmup_ticks: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Rms error per horizon (ticks) against the true phase, every tick measured, after the
    warm-up; and the same over windows without a vibration burst."""
    sq: dict[int, list[np.ndarray]] = {h: [] for h in predictor.horizons_ticks}
    quiet: dict[int, list[np.ndarray]] = {h: [] for h in predictor.horizons_ticks}
    for tr in traces:
        out = predictor.run(tr)
        burst_cum = np.concatenate(([0], np.cumsum(tr.burst)))
        for k, h in enumerate(predictor.horizons_ticks):
            t = np.arange(warmup_ticks, len(tr) - h)
            e = out[t, k] - tr.phase_rad[t + h]
            ok = np.isfinite(e)
            sq[h].append(e[ok] ** 2)
            calm = ok & ((burst_cum[t + h + 1] - burst_cum[t]) == 0)
            quiet[h].append(e[calm] ** 2)

    def rms(parts: list[np.ndarray]) -> float:
        v = np.concatenate(parts)
        return float(np.sqrt(np.mean(v))) if v.size else math.nan

    return {h: rms(v) for h, v in sq.items()}, {h: rms(v) for h, v in quiet.items()}


def step_latency_us(
    predictor: DriftPredictor, trace: DriftTrace, calls: int, scan_ticks: int
) -> dict[str, float]:
    """Median and p99 of one ``step()`` call, us, with the closed-loop pattern (a scan of
    ``scan_ticks`` measured ticks every 300 ticks, NaN otherwise), after 200 warm-up calls."""
    n = min(calls + 200, len(trace))
    z = np.where(np.arange(n) % 300 < scan_ticks, trace.measured_phase_rad[:n], np.nan)
    tel = np.ascontiguousarray(trace.telemetry[:n], dtype=np.float64)
    predictor.reset()
    for i in range(200):
        predictor.step(float(z[i]), tel[i])
    ns = np.empty(n - 200, dtype=np.int64)
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for j, i in enumerate(range(200, n)):
            zi, ti = float(z[i]), tel[i]
            t0 = clock()
            predictor.step(zi, ti)
            ns[j] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    us = ns / 1000.0
    return {
        "median": float(np.median(us)),
        "p99": float(np.percentile(us, 99)),
        "calls": int(us.size),
    }


def run_predictor_benchmark(
    *,
    train_hours: float = 48.0,
    test_hours: float = 12.0,
    seed: int = 1,
    predictors: Sequence[str] | None = None,
    tune_hours: float = 8.0,
    warmup_hours: float = 3.0,
    horizons_ticks: Sequence[int] = DEFAULT_HORIZONS_TICKS,
    scan_s: float = 15.0,
    reference_transmit_s: float = 30.0,
    target_qber: float | None = None,
    visibility: float = 0.98,
    latency_calls: int = 5000,
    calibration_transmit_s: float = 1200.0,
    drift_params: DriftParams | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the figures (module docstring)."""

    def say(msg: str) -> None:
        if progress:
            progress(msg)

    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: got {seed}, expected 0..{MAX_SEED}")
    params = DriftParams() if drift_params is None else drift_params
    tick_s = params.tick_s
    wanted = list(ALL_PREDICTORS if predictors is None else predictors)
    warmup_ticks = round(warmup_hours * 3600.0 / tick_s)
    scan_ticks = max(1, round(scan_s / tick_s))
    link = LinkParams(
        scan_ticks=scan_ticks,
        visibility=visibility,
        warmup_ticks=warmup_ticks,
        max_transmit_ticks=max(2, round(calibration_transmit_s / tick_s)),
    )
    rng = np.random.default_rng(seed)
    base = SEED_STRIDE * seed
    say(
        f"generating drift: fit {train_hours:g} h, tune {tune_hours:g} h, held-out {test_hours:g} h"
    )
    fit_set = _fit_traces(train_hours, base + FIT_SEED_OFFSET, params, rng)
    tune_set = _traces(tune_hours, 2, base + TUNE_SEED_OFFSET, params, warmup_ticks * tick_s, rng)
    test_set = _traces(test_hours, 2, base + TEST_SEED_OFFSET, params, warmup_ticks * tick_s, rng)

    built, notes = available_predictors(wanted, horizons_ticks)
    names = list(built)
    out: dict[str, Any] = {
        "predictors": names,
        "notes": notes,
        "rmse": {},
        "rmse_quiet": {},
        "latency_us": {},
        "fit_s": {},
        "duty_cycle": {},
        "qber": {},
        "phase_error_rad": {},
        "scans_per_hour": {},
        "duty_cycle_gain": {},
        "closed_loop": {},
    }
    for name, p in built.items():
        say(f"{name}: fit on {len(fit_set)} traces")
        t0 = time.perf_counter()
        p.fit(fit_set)
        out["fit_s"][name] = time.perf_counter() - t0
        say(f"{name}: held-out RMSE per horizon")
        rmse, rmse_quiet = horizon_rmse(p, test_set, warmup_ticks)
        out["rmse"][name] = {f"{h * tick_s:g}": v for h, v in rmse.items()}
        out["rmse_quiet"][name] = {f"{h * tick_s:g}": v for h, v in rmse_quiet.items()}
        out["latency_us"][name] = step_latency_us(
            p, test_set[0], latency_calls, scan_ticks=scan_ticks
        )

    # closed loop: target from the baseline at the reference schedule on the tune traces
    ref_ticks = max(1, round(reference_transmit_s / tick_s))
    if target_qber is None:
        target = LoopResult.concat(
            [simulate_scan_and_transmit(tr, transmit_ticks=ref_ticks, link=link) for tr in tune_set]
        ).mean_qber
        target_source = (
            f"scan-and-transmit QBER on the tune traces at {ref_ticks * tick_s:g} s transmit / "
            f"{scan_ticks * tick_s:g} s scan"
        )
    else:
        target = float(target_qber)
        target_source = "given (--target-qber)"
    say(f"closed loop: target QBER {100 * target:.4f} % ({target_source})")
    held_out_hours = sum(len(tr) - warmup_ticks for tr in test_set) * tick_s / 3600.0

    def record(key: str, r: LoopResult) -> None:
        out["duty_cycle"][key] = r.duty_cycle
        out["qber"][key] = r.mean_qber
        out["phase_error_rad"][key] = r.rms_phase_error_rad
        out["scans_per_hour"][key] = r.n_scans / held_out_hours

    tb = tune_scan_and_transmit(
        tune_set, target, link=link, max_transmit_ticks=link.max_transmit_ticks
    )
    base_result = LoopResult.concat(
        [
            simulate_scan_and_transmit(tr, transmit_ticks=int(tb.parameter), link=link)
            for tr in test_set
        ]
    )
    record(BASELINE, base_result)
    out["closed_loop"][BASELINE] = {
        "parameter": "transmit_s",
        "value": tb.parameter * tick_s,
        "train_qber": tb.train_qber,
        "train_duty_cycle": tb.train_duty_cycle,
        "reached": tb.train_qber <= target,
        "evaluations": tb.evaluations,
    }
    cal_ticks = link.max_transmit_ticks
    for name, p in built.items():
        say(f"{name}: closed loop (error model, equal-QBER bisection, held-out run)")
        cache: WarmCache = {}  # the warmed-up state on each tune trace, reused by every run
        model = calibrate_error_model(
            tune_set, p, link=link, transmit_ticks=cal_ticks, warm_cache=cache
        )
        tp = tune_prediction_driven(tune_set, p, model, target, link=link, warm_cache=cache)
        r = LoopResult.concat(
            [
                simulate_prediction_driven(tr, p, model, budget_rad2=tp.parameter, link=link)
                for tr in test_set
            ]
        )
        record(name, r)
        out["duty_cycle_gain"][name] = r.duty_cycle / base_result.duty_cycle - 1.0
        ages = [a for a in (1, 10, 60, 300, 600, 1200) if a <= model.max_age_ticks]
        out["closed_loop"][name] = {
            "parameter": "budget_rad2",
            "value": tp.parameter,
            "train_qber": tp.train_qber,
            "train_duty_cycle": tp.train_duty_cycle,
            "reached": tp.reached,
            "evaluations": tp.evaluations,
            "error_model_msq_rad2": {f"{a * tick_s:g}": float(model.msq_rad2[a - 1]) for a in ages},
            "error_model_burst_rad2": model.burst_rad2,
        }

    reached = [n for n in names if out["closed_loop"][n]["reached"]]
    default = max(reached, key=lambda n: out["duty_cycle"][n]) if reached else None
    lstm_p99 = out["latency_us"].get("lstm", {}).get("p99")
    gain_best = max((out["duty_cycle_gain"][n] for n in reached), default=math.nan)
    out.update(
        {
            "target_qber": target,
            "target_source": target_source,
            "default_predictor": default,
            "default_predictor_criterion": (
                "highest held-out duty cycle at equal QBER, among predictors that met the "
                "target on the tune traces"
            ),
            "targets": {"onnx_p99_us": TARGET_ONNX_P99_US, "duty_cycle_gain": TARGET_DUTY_GAIN},
            "targets_met": {
                "onnx_p99_us": None if lstm_p99 is None else lstm_p99 <= TARGET_ONNX_P99_US,
                "duty_cycle_gain": bool(gain_best >= TARGET_DUTY_GAIN),
            },
            "parameters": {
                "train_hours": train_hours,
                "tune_hours": tune_hours,
                "test_hours": test_hours,
                "warmup_hours": warmup_hours,
                "seed": seed,
                "seeds": {
                    "fit": [base + FIT_SEED_OFFSET + k for k in range(len(fit_set))],
                    "tune": [base + TUNE_SEED_OFFSET + k for k in range(len(tune_set))],
                    "test": [base + TEST_SEED_OFFSET + k for k in range(len(test_set))],
                },
                "tick_s": tick_s,
                "horizons_s": [h * tick_s for h in horizons_ticks],
                "scan_s": scan_ticks * tick_s,
                "reference_transmit_s": ref_ticks * tick_s,
                "calibration_transmit_s": cal_ticks * tick_s,
                "visibility": visibility,
                "latency_calls": latency_calls,
                "drift_params": asdict(params),
            },
        }
    )
    if "lstm" in names and "arx" in names:
        out["lstm_vs_arx"] = _lstm_vs_arx(out)
    return out


def _lstm_vs_arx(r: dict[str, Any]) -> str:
    """One honest sentence: does the LSTM beat ARX on held-out data?"""
    common = [h for h in r["rmse"]["lstm"] if h in r["rmse"]["arx"]]
    better = [h for h in common if r["rmse"]["lstm"][h] < r["rmse"]["arx"][h]]
    duty = r["duty_cycle"]["lstm"] - r["duty_cycle"]["arx"]
    rmse_txt = ", ".join(
        f"{h} s: {r['rmse']['lstm'][h]:.4f} vs {r['rmse']['arx'][h]:.4f} rad" for h in common
    )
    verdict = "beats" if len(better) == len(common) and duty > 0 else "does not beat"
    return (
        f"LSTM {verdict} ARX on held-out data: RMSE (LSTM vs ARX) {rmse_txt}; duty cycle at "
        f"equal QBER {r['duty_cycle']['lstm']:.3f} vs {r['duty_cycle']['arx']:.3f}"
    )


# ---------------------------------------------------------------------------------------------
# Display


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{spec}}"


def print_table(result: dict[str, Any], console: Console) -> None:
    """Side-by-side tables: forecast accuracy and latency, then the closed loop."""
    r = result
    names = list(r["predictors"])
    par = r["parameters"]
    console.print(
        f"{_PROG}: drift model of physics.md section 4 (tick {par['tick_s']:g} s), "
        f"fit {par['train_hours']:g} h, tune {par['tune_hours']:g} h, held-out "
        f"{par['test_hours']:g} h (+{par['warmup_hours']:g} h warm-up per trace), seed "
        f"{par['seed']}",
        markup=False,
        highlight=False,
    )
    for note in r["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)

    t = Table(title="held-out prediction error (rad rms; every tick measured) and step latency")
    t.add_column("")
    for n in names:
        t.add_column(n, justify="right")
    horizons = sorted({h for n in names for h in r["rmse"][n]}, key=float)
    for h in horizons:
        t.add_row(f"RMSE {h} s", *[_fmt(r["rmse"][n].get(h), ".4f") for n in names])
    for h in horizons:
        t.add_row(f"RMSE {h} s, no burst", *[_fmt(r["rmse_quiet"][n].get(h), ".4f") for n in names])
    t.add_row("step median, us", *[_fmt(r["latency_us"][n]["median"], ".1f") for n in names])
    t.add_row("step p99, us", *[_fmt(r["latency_us"][n]["p99"], ".1f") for n in names])
    t.add_row("fit, s", *[_fmt(r["fit_s"][n], ".2f") for n in names])
    console.print(t)

    keys = [BASELINE, *names]
    labels = {BASELINE: "scan/transmit"}
    cl = r["closed_loop"]
    c = Table(
        title=f"closed loop on held-out drift at equal QBER (target {100 * r['target_qber']:.3f} %"
        f": {r['target_source']})"
    )
    c.add_column("strategy", no_wrap=True)
    for col in ("tuned to", "met", "duty", "gain", "QBER %", "err rad", "scans/h"):
        c.add_column(col, justify="right", no_wrap=True)
    for k in keys:
        tuned = (
            f"{cl[k]['value']:g} s"
            if cl[k]["parameter"] == "transmit_s"
            else f"{cl[k]['value']:.1e} rad²"
        )
        gain = r["duty_cycle_gain"].get(k)
        c.add_row(
            labels.get(k, k),
            tuned,
            "yes" if cl[k]["reached"] else "NO",
            _fmt(r["duty_cycle"][k], ".3f"),
            "" if gain is None else _fmt(100 * gain, "+.1f") + " %",
            _fmt(100 * r["qber"][k], ".4f"),
            _fmt(r["phase_error_rad"][k], ".4f"),
            _fmt(r["scans_per_hour"][k], ".1f"),
        )
    console.print(c)
    console.print(
        "tuned to: transmit time per scan (scan/transmit) or predicted-error budget; met: "
        "the tuning met the target QBER on the tune traces; err: rms residual phase while "
        "transmitting; gain: duty cycle vs scan/transmit",
        markup=False,
        highlight=False,
    )

    ok = {True: "ok", False: "MISSED", None: "not measured"}
    met = r["targets_met"]
    lstm_p99 = r["latency_us"].get("lstm", {}).get("p99")
    console.print(
        f"ONNX (lstm) step p99: {_fmt(lstm_p99, '.1f')} us, target <= "
        f"{r['targets']['onnx_p99_us']:g} us: {ok[met['onnx_p99_us']]}",
        markup=False,
        highlight=False,
    )
    console.print(
        f"duty-cycle gain at equal QBER: target >= {100 * r['targets']['duty_cycle_gain']:.1f} %"
        f": {ok[met['duty_cycle_gain']]}",
        markup=False,
        highlight=False,
    )
    console.print(
        f"default predictor: {r['default_predictor']} ({r['default_predictor_criterion']})",
        markup=False,
        highlight=False,
    )
    if "lstm_vs_arx" in r:
        console.print(r["lstm_vs_arx"], markup=False, highlight=False)

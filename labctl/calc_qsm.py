"""``labctl calc qsm``: closed forms and Monte Carlo of quantum secure metrology (QSM).

Registered by the top-level CLI with ``calc_qsm.add_parser(calc_sub)``. The physics and the
meaning of every symbol live in :mod:`dsp.qsm`; this module only parses, validates, formats
and plots.

Mapping of options to symbols: ``--pairs`` l (probe states the eavesdropper touches),
``--encoding-probability`` P_E, ``--n-encodings`` N, ``--repetitions`` nu (Bell pairs per run,
the estimation sample), ``--parties`` K (K > 1: GHZ extension, the source estimates the sum of
the K local phases), ``--phase-rad`` the true phase (sum) used by the Monte Carlo.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dsp import qsm

_PROG = "labctl calc qsm"
_MAX_TRIALS = 10_000_000


class _UsageError(Exception):
    """Invalid option value; the message is one line naming the option and its allowed range."""


def add_parser(calc_subparsers: Any) -> None:
    """Register the ``qsm`` sub-command on an argparse sub-parsers object."""
    parser = calc_subparsers.add_parser(
        "qsm",
        help="quantum secure metrology with Bell pairs: bounds, detection, Monte Carlo",
        description=(
            "Precision bound 1/(P_E nu N^2), eavesdropper detection probability "
            "1 - ((3 + P_E)/4)^l and optional Monte Carlo of the QSM protocol "
            "(physics.md section 3)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--pairs",
        type=int,
        default=10,
        metavar="L",
        help="probe states (pairs) the eavesdropper touches, l >= 1 (default 10)",
    )
    parser.add_argument(
        "--encoding-probability",
        type=float,
        default=0.5,
        metavar="P",
        help="encoding probability P_E in (0, 1]; quantum advantage needs P_E > 1/N",
    )
    parser.add_argument(
        "--n-encodings",
        type=int,
        default=4,
        metavar="N",
        help="sequential encodings U_E^N per encoded pair, N >= 1 (default 4)",
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=1000,
        metavar="NU",
        help="Bell pairs per protocol run nu >= 1 (default 1000)",
    )
    parser.add_argument(
        "--attack",
        choices=qsm.ATTACKS,
        default="none",
        help="eavesdropper: intercept-resend on the way out, random phase on the way back",
    )
    parser.add_argument(
        "--phase-rad",
        type=float,
        default=None,
        metavar="PHI",
        help="true phase [rad] for the Monte Carlo, in [0, pi/N]; default pi/(2N)",
    )
    parser.add_argument(
        "--monte-carlo",
        type=int,
        default=None,
        metavar="TRIALS",
        help="simulate TRIALS protocol runs and report variance and detection rate",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    parser.add_argument(
        "--noise-depolarising",
        type=float,
        default=0.0,
        metavar="P",
        help="depolarising probability per channel pass, in [0, 1]",
    )
    parser.add_argument(
        "--noise-dephasing",
        type=float,
        default=0.0,
        metavar="P",
        help="dephasing probability per channel pass, in [0, 1]",
    )
    parser.add_argument(
        "--parties",
        type=int,
        default=1,
        metavar="K",
        help=f"encoding parties K in [1, {qsm.MAX_PARTIES}] (K > 1: GHZ, estimates the phase sum)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="write the precision-security trade-off curve to this PNG",
    )
    parser.set_defaults(func=run_qsm)


def _validate(args: argparse.Namespace) -> None:
    def positive(option: str, value: int | None) -> None:
        if value is not None and value < 1:
            raise _UsageError(f"{option} must be a positive integer (>= 1), got {value}")

    positive("--pairs", args.pairs)
    positive("--n-encodings", args.n_encodings)
    positive("--repetitions", args.repetitions)
    positive("--monte-carlo", args.monte_carlo)
    p_e = args.encoding_probability
    if not (math.isfinite(p_e) and 0.0 < p_e <= 1.0):
        raise _UsageError(f"--encoding-probability must be in (0, 1], got {p_e}")
    if args.seed is not None and args.seed < 0:
        raise _UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.monte_carlo is not None and args.monte_carlo > _MAX_TRIALS:
        raise _UsageError(f"--monte-carlo must be in [1, {_MAX_TRIALS}], got {args.monte_carlo}")
    if not 1 <= args.parties <= qsm.MAX_PARTIES:
        raise _UsageError(f"--parties must be in [1, {qsm.MAX_PARTIES}], got {args.parties}")
    for option, value in (
        ("--noise-depolarising", args.noise_depolarising),
        ("--noise-dephasing", args.noise_dephasing),
    ):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise _UsageError(f"{option} must be in [0, 1], got {value}")
    if args.phase_rad is not None:
        limit = math.pi / args.n_encodings
        if not (math.isfinite(args.phase_rad) and 0.0 <= args.phase_rad <= limit):
            raise _UsageError(
                f"--phase-rad must be in the identifiable range [0, pi/N] = [0, {limit:.6g}], "
                f"got {args.phase_rad}"
            )
    if args.monte_carlo is not None and args.attack != "none" and args.pairs > args.repetitions:
        raise _UsageError(
            f"--pairs must be in [1, --repetitions={args.repetitions}] for an attacked "
            f"Monte Carlo (the eavesdropper touches l of the nu pairs), got {args.pairs}"
        )


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _closed_forms(args: argparse.Namespace) -> dict[str, Any]:
    p_e = float(args.encoding_probability)
    n_enc = int(args.n_encodings)
    nu = int(args.repetitions)
    l_touch = int(args.pairs)
    bound = qsm.precision_bound(p_e, nu, n_enc)
    low, high = qsm.encoding_probability_range(n_enc)
    advantage = qsm.has_quantum_advantage(p_e, n_enc)
    out: dict[str, Any] = {
        "pairs": l_touch,
        "encoding_probability": p_e,
        "n_encodings": n_enc,
        "repetitions": nu,
        "parties": int(args.parties),
        "attack": args.attack,
        "precision_bound": bound,
        "precision_bound_std_rad": math.sqrt(bound),
        "standard_quantum_limit": qsm.standard_quantum_limit(nu, n_enc),
        "detection_probability": qsm.detection_probability(p_e, l_touch),
        "encoding_probability_range": {"min_exclusive": low, "max_inclusive": high},
        "quantum_advantage": advantage,
    }
    if args.parties > 1:
        out["estimated_quantity"] = "sum of the local phases of all parties"
        out["independent_links_sum_variance"] = qsm.independent_links_sum_variance(
            p_e, nu, n_enc, int(args.parties)
        )
    if args.attack != "none":
        out["attack_detection_probability"] = qsm.attack_detection_probability(
            args.attack, p_e, l_touch
        )
        out["attack_per_round_detection_probability"] = qsm.per_round_detection_probability(
            args.attack, p_e
        )
    p_dep, p_deph = float(args.noise_depolarising), float(args.noise_dephasing)
    if p_dep > 0.0 or p_deph > 0.0:
        err_z, err_x, err_decoy = qsm.noisy_check_error_rates(p_dep, p_deph, int(args.parties))
        out["noise_check_error_rates"] = {
            "verify_z": err_z,
            "verify_x": err_x,
            "decoy": err_decoy,
        }
        out["noise_visibility"] = ((1.0 - p_dep) * (1.0 - p_deph)) ** (2 * int(args.parties))
    if not advantage:
        out["warning"] = (
            f"encoding probability {p_e} <= 1/N = {low:.6g}: the precision bound does not beat "
            "the standard quantum limit 1/(nu N); no quantum advantage"
        )
    return out


def _monte_carlo(args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
    n_enc = int(args.n_encodings)
    k = int(args.parties)
    phase_sum = args.phase_rad if args.phase_rad is not None else math.pi / (2.0 * n_enc)
    config = qsm.QSMConfig(
        n_pairs=int(args.repetitions),
        p_encode=float(args.encoding_probability),
        n_encodings=n_enc,
        phases_rad=tuple([phase_sum / k] * k),
        attack=args.attack,
        n_touched=int(args.pairs) if args.attack != "none" else None,
        p_depolarising=float(args.noise_depolarising),
        p_dephasing=float(args.noise_dephasing),
    )
    result = qsm.monte_carlo(config, int(args.monte_carlo), seed=seed)
    bound = qsm.precision_bound(config.p_encode, config.n_pairs, n_enc)
    variance = result.variance_rad2
    return {
        "monte_carlo_trials": result.n_trials,
        "seed": seed,
        "phase_rad": phase_sum,
        "phases_rad": list(config.phases),
        "simulated_estimate_mean": _finite_or_none(result.mean_estimate_rad),
        "simulated_estimate_mean_se": _finite_or_none(result.mean_estimate_se_rad),
        "simulated_variance": _finite_or_none(variance),
        "simulated_variance_se": _finite_or_none(result.variance_se_rad2),
        "simulated_variance_over_bound": _finite_or_none(variance / bound),
        "expected_variance": qsm.expected_estimator_variance(
            config.p_encode, config.n_pairs, n_enc
        ),
        "simulated_detection_rate": result.detection_rate,
        "simulated_detection_rate_se": result.detection_rate_se,
        "predicted_detection_rate": qsm.predicted_detection_probability(config),
        "runs_without_encoded_pairs": int(np.sum(result.n_encoded == 0)),
    }


def _plot(args: argparse.Namespace, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_enc = int(args.n_encodings)
    nu = int(args.repetitions)
    l_touch = int(args.pairs)
    curve = qsm.tradeoff_curve(n_enc, nu, l_touch)
    p = np.asarray(curve["p_encode"])
    std = np.asarray(curve["precision_std_rad"])
    p_d = np.asarray(curve["detection_probability"])
    adv = np.asarray(curve["quantum_advantage"])
    sql_std = math.sqrt(float(curve["standard_quantum_limit_rad2"]))
    p_sel = float(args.encoding_probability)
    std_sel = math.sqrt(qsm.precision_bound(p_sel, nu, n_enc))
    pd_sel = qsm.detection_probability(p_sel, l_touch)

    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_trade, ax_p = fig.subplots(1, 2)
    ax_trade.plot(std[adv], p_d[adv], "C0-", label="1/N < P_E <= 1 (quantum advantage)")
    ax_trade.plot(std[~adv], p_d[~adv], "C7--", label="P_E <= 1/N (no advantage)")
    ax_trade.axvline(sql_std, color="C3", ls=":", label="standard quantum limit")
    ax_trade.plot([std_sel], [pd_sel], "ko", label=f"P_E = {p_sel:g}")
    ax_trade.set_xscale("log")
    ax_trade.set_xlabel("precision bound std(phi) [rad]")
    ax_trade.set_ylabel(f"detection probability P_D (l = {l_touch})")
    ax_trade.set_title(f"QSM trade-off, N = {n_enc}, nu = {nu}")
    ax_trade.legend(fontsize="small")
    ax_trade.grid(True, which="both", alpha=0.3)

    ax_p.plot(p, std, "C0-", label="std bound [rad]")
    ax_p.axhline(sql_std, color="C3", ls=":", label="SQL std [rad]")
    ax_p.axvline(1.0 / n_enc, color="C7", ls="--", label="P_E = 1/N")
    ax_p.set_yscale("log")
    ax_p.set_xlabel("encoding probability P_E")
    ax_p.set_ylabel("std(phi) [rad]")
    ax_right = ax_p.twinx()
    ax_right.plot(p, p_d, "C1-", label="P_D")
    ax_right.set_ylabel("detection probability P_D", color="C1")
    ax_right.set_ylim(0.0, 1.0)
    ax_p.legend(loc="upper center", fontsize="small")
    ax_p.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=100)


def _summary(out: dict[str, Any]) -> str:
    lines = [
        f"QSM: P_E = {out['encoding_probability']:g}, N = {out['n_encodings']}, "
        f"nu = {out['repetitions']}, l = {out['pairs']}, K = {out['parties']}, "
        f"attack = {out['attack']}",
        f"  precision bound 1/(P_E nu N^2) = {out['precision_bound']:.6g} rad^2 "
        f"(std {out['precision_bound_std_rad']:.6g} rad; SQL {out['standard_quantum_limit']:.6g})",
        f"  detection probability 1 - ((3 + P_E)/4)^l = {out['detection_probability']:.6g}",
    ]
    if "attack_detection_probability" in out:
        lines.append(
            f"  {out['attack']} detection probability (derived) = "
            f"{out['attack_detection_probability']:.6g}"
        )
    lines.append(f"  quantum advantage (1/N < P_E <= 1): {out['quantum_advantage']}")
    if "noise_check_error_rates" in out:
        rates = out["noise_check_error_rates"]
        lines.append(
            f"  noise error rates: sigma_z check {rates['verify_z']:.4g}, sigma_x check "
            f"{rates['verify_x']:.4g}, decoy {rates['decoy']:.4g}; "
            f"visibility {out['noise_visibility']:.4g}"
        )
    if "simulated_variance" in out:
        var, var_se = out["simulated_variance"], out["simulated_variance_se"]
        var_text = "n/a" if var is None else f"{var:.6g} +- {var_se:.2g} rad^2"
        lines.append(f"  Monte Carlo ({out['monte_carlo_trials']} runs): variance {var_text}")
        lines.append(
            f"  Monte Carlo detection rate {out['simulated_detection_rate']:.4g} +- "
            f"{out['simulated_detection_rate_se']:.2g} (predicted "
            f"{out['predicted_detection_rate']:.4g})"
        )
    if "plot" in out:
        lines.append(f"  plot written to {out['plot']}")
    if "warning" in out:
        lines.append(f"  warning: {out['warning']}")
    return "\n".join(lines)


def run_qsm(args: argparse.Namespace) -> int:
    """Execute ``labctl calc qsm``; returns the process exit code (0 ok, 1 I/O, 2 usage)."""
    try:
        _validate(args)
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = _closed_forms(args)
    if args.monte_carlo is not None:
        out.update(_monte_carlo(args))
    if args.plot is not None:
        try:
            _plot(args, args.plot)
        except OSError as exc:
            print(f"{_PROG}: error: cannot write --plot {args.plot}: {exc}", file=sys.stderr)
            return 1
        out["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print(_summary(out))
    return 0

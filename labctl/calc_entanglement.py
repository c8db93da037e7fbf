"""``labctl calc bbm92`` and ``labctl calc plan-channels``: the entanglement network's calculators.

Registered by the top-level CLI with ``calc_entanglement.add_parsers(calc_sub)``. The physics
(physics.md section 2) lives in :mod:`dsp.entanglement`; this module parses, validates and
formats.

``bbm92``: SKR = N_sift [1 - f H2(e_bit) - H2(e_phase)] (asymptotic, clipped at 0). The bit
QBER is given directly (``--qber``) or from a Franson visibility (``--visibility V``:
e = (1 - V) / 2); the phase QBER defaults to the bit QBER. ``--ec-efficiency`` is physics.md's
f, the error-correction inefficiency (>= 1; 1.2 by default): Shannon-limit correction is 1.

``plan-channels``: channel labels for N users so every pair of users shares a correlated pair
(pairs for label sums 2 p1, 2 p2 and p1 + p2 of the two pumps p1, p2), with as few channels as
the search finds, compared with the N (N - 1) of a single-state source.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from dsp import entanglement


class _UsageError(Exception):
    """Invalid option value; the message is one line naming the option."""


def add_parsers(calc_subparsers: Any) -> None:
    """Register ``bbm92`` and ``plan-channels`` on an argparse sub-parsers object."""
    p = calc_subparsers.add_parser(
        "bbm92",
        help="BBM92 asymptotic secret key rate of one user pair",
        description=(
            "SKR = N_sift [1 - f H2(e_bit) - H2(e_phase)] [bit/s], asymptotic, clipped at 0 "
            "(physics.md section 2). Give the bit QBER or the Franson visibility "
            "(QBER = (1 - V) / 2)."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--sifted-hz",
        type=float,
        required=True,
        metavar="N",
        help="sifted coincidence rate N_sift [1/s], >= 0",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--qber", type=float, metavar="E", help="bit QBER in [0, 1]")
    which.add_argument("--visibility", type=float, metavar="V", help="Franson visibility in [0, 1]")
    p.add_argument(
        "--qber-phase",
        type=float,
        default=None,
        metavar="E",
        help="phase QBER in [0, 1] (default: the bit QBER)",
    )
    p.add_argument(
        "--ec-efficiency",
        type=float,
        default=entanglement.DEFAULT_F,
        metavar="F",
        help=f"error-correction inefficiency f >= 1 (default {entanglement.DEFAULT_F:g})",
    )
    p.set_defaults(func=run_bbm92)

    p = calc_subparsers.add_parser(
        "plan-channels",
        help="assign channels to N users so every pair shares a correlated pair",
        description=(
            "Channel labels (ITU-grid offsets) for N users of the dual-pump source: every pair "
            "of users gets a correlated pair (label sums 2 p1, 2 p2, p1 + p2). Prints the "
            "channel count, each user's channels and the pairs, against N (N - 1) for a "
            "single-state source."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--users", type=int, required=True, metavar="N", help="number of users >= 2")
    p.add_argument(
        "--pumps",
        type=int,
        nargs=2,
        default=(0, 10),
        metavar=("A", "B"),
        help="the two pump labels (default 0 10, physics.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="search seed (deterministic)")
    p.set_defaults(func=run_plan_channels)


def _probability(option: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _UsageError(f"{option}: got {value!r}, expected a number in [0, 1]")
    return float(value)


def _bbm92(args: argparse.Namespace) -> dict[str, Any]:
    sifted = args.sifted_hz
    if not (math.isfinite(sifted) and sifted >= 0.0):
        raise _UsageError(f"--sifted-hz: got {sifted!r}, expected a rate >= 0")
    f = args.ec_efficiency
    if not (math.isfinite(f) and f >= 1.0):
        raise _UsageError(
            f"--ec-efficiency: got {f!r}, expected an inefficiency f >= 1 (1 = Shannon limit)"
        )
    if args.qber is not None:
        e_bit = _probability("--qber", args.qber)
        visibility = 1.0 - 2.0 * e_bit
    else:
        visibility = _probability("--visibility", args.visibility)
        e_bit = float(entanglement.qber_from_visibility(visibility))
    e_phase = e_bit if args.qber_phase is None else _probability("--qber-phase", args.qber_phase)
    skr = entanglement.bbm92_key_rate_bps(sifted, e_bit, e_phase, f=f)
    return {
        "sifted_hz": sifted,
        "visibility": visibility,
        "qber_bit": e_bit,
        "qber_phase": e_phase,
        "ec_efficiency": f,
        "bits_per_sifted": skr / sifted if sifted > 0 else 0.0,
        "skr_bps": skr,
        "qber_threshold": entanglement.qber_threshold(f),
    }


def _report(prog: str, args: argparse.Namespace, compute: Any, summary: Any) -> int:
    try:
        out = compute(args)
    except (_UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, allow_nan=False) if args.json else summary(out))
    return 0


def run_bbm92(args: argparse.Namespace) -> int:
    """Execute ``labctl calc bbm92``; exit code 0, or 2 for bad input."""

    def summary(out: dict[str, Any]) -> str:
        return (
            f"BBM92: N_sift {out['sifted_hz']:.6g} /s, QBER bit {out['qber_bit']:.4f} "
            f"phase {out['qber_phase']:.4f} (visibility {out['visibility']:.4f}), "
            f"f {out['ec_efficiency']:g}\n"
            f"  SKR {out['skr_bps']:.6g} bit/s ({out['bits_per_sifted']:.4f} bit per sifted "
            f"coincidence); key vanishes at QBER {out['qber_threshold']:.4f} (both bases)"
        )

    return _report("labctl calc bbm92", args, _bbm92, summary)


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.users < 2:
        raise _UsageError(f"--users: got {args.users}, expected at least 2 users")
    if args.pumps[0] == args.pumps[1]:
        raise _UsageError(f"--pumps: got {args.pumps[0]} twice, expected two different labels")
    plan = entanglement.plan_channels(args.users, tuple(args.pumps), seed=args.seed)
    missing = entanglement.uncovered_user_pairs(plan.assignment, plan.pump_labels)
    return {
        "users": plan.n_users,
        "pumps": list(plan.pump_labels),
        "channels": plan.n_channels,
        "single_state_channels": plan.single_state_channels,
        "label_window": list(plan.label_window),
        "assignment": {str(u): list(labels) for u, labels in enumerate(plan.assignment)},
        "pairs": [
            {
                "user_a": p.user_a,
                "user_b": p.user_b,
                "channel_a": p.label_a,
                "channel_b": p.label_b,
                "process": p.process,
            }
            for p in plan.pairs
        ],
        "uncovered_user_pairs": [list(pair) for pair in missing],
        "_text": entanglement.format_plan(plan),
    }


def run_plan_channels(args: argparse.Namespace) -> int:
    """Execute ``labctl calc plan-channels``; exit code 0, or 2 for bad input."""

    def compute(a: argparse.Namespace) -> dict[str, Any]:
        out = _plan(a)
        text = out.pop("_text")
        if not a.json:
            out["_text"] = text
        return out

    return _report("labctl calc plan-channels", args, compute, lambda out: out["_text"])

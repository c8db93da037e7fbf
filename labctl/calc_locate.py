"""``labctl calc locate``: locate a vibration source from arrival times at the center node.

Registered by the top-level CLI with ``calc_locate.add_parser(calc_sub)``. The model and the
solver live in :mod:`dsp.locate`; this module only parses, validates and formats.

Mapping of options to symbols (physics.md section 1, "Locating the vibration source"):
``--node X,Y`` the node position r_k [m] (repeat once per node, at least 3), ``--fibre-m`` the
fibre length L_k from node k to the center [m] (repeat once per node; omitted: equal fibres,
no correction), ``--arrival-s`` T_k, when node k's waveform reached the center node [s] with
the fibre delay included (any common origin), ``--speed-m-s`` the ground wave speed v,
``--fibre-index`` the fibre group index n (fibre delay L_k n / c), ``--timing-sigma-s`` the
standard deviation of the arrival times (enables the uncertainty estimate).

A value starting with ``-`` must be attached with ``=`` (``--node=-8660,-5000``,
``--arrival-s=-0.5``), otherwise argparse takes it for an option.

Example (reference geometry, source at (2 km, 1 km))::

    labctl calc locate --json --node 0,10000 --node=-8660.254,-5000 --node 8660.254,-5000 \\
        --arrival-s 1.536591 --arrival-s 2.038797 --arrival-s 1.494053 --speed-m-s 6000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from dsp import locate

_PROG = "labctl calc locate"

#: Parameter names of :func:`dsp.locate.locate_source` -> command-line flags.
_FLAGS = {
    "node_xy_m": "--node",
    "arrival_s": "--arrival-s",
    "speed_m_s": "--speed-m-s",
    "fibre_m": "--fibre-m",
    "fibre_index": "--fibre-index",
    "timing_sigma_s": "--timing-sigma-s",
}


class _UsageError(Exception):
    """Invalid option value; the message is one line naming the option."""


def add_parser(calc_subparsers: Any) -> None:
    """Register the ``locate`` sub-command on an argparse sub-parsers object."""
    parser = calc_subparsers.add_parser(
        "locate",
        help="locate a vibration source from node arrival times (TDOA, >= 3 nodes)",
        description=(
            "Solve |r_k - r0| / v + t0 + L_k n / c = T_k for the source (x0, y0) and emission "
            "time t0 by nonlinear least squares (physics.md section 1). With 3 nodes two "
            "solutions can fit exactly: the best is reported and the others are listed."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # Values are parsed in run_locate (not by argparse types) so that every usage error is a
    # single stderr line naming the flag, with exit code 2.
    parser.add_argument(
        "--node",
        action="append",
        default=None,
        metavar="X,Y",
        help="node position in metres, repeated once per node (at least 3); "
        "write --node=X,Y when X is negative",
    )
    parser.add_argument(
        "--fibre-m",
        action="append",
        default=None,
        metavar="L",
        help="fibre length node -> center in metres, repeated once per node "
        "(default: equal fibres, no correction)",
    )
    parser.add_argument(
        "--arrival-s",
        action="append",
        default=None,
        metavar="T",
        help="when the node's waveform reached the center node [s], fibre delay included; "
        "repeated once per node, same order as --node",
    )
    parser.add_argument(
        "--speed-m-s",
        default=None,
        metavar="V",
        help="propagation speed of the vibration [m/s] (required; reference 6000)",
    )
    parser.add_argument(
        "--fibre-index",
        default="1.468",
        metavar="N",
        help="fibre group index n, >= 1 (default 1.468)",
    )
    parser.add_argument(
        "--timing-sigma-s",
        default=None,
        metavar="S",
        help="standard deviation of each arrival time [s]; enables the uncertainty estimate",
    )
    parser.set_defaults(func=run_locate)


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _UsageError(f"{flag} expects a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _UsageError(f"{flag} must be finite, got {text!r}")
    return value


def _positive(flag: str, text: str) -> float:
    value = _number(flag, text)
    if value <= 0.0:
        raise _UsageError(f"{flag} must be positive, got {text!r}")
    return value


def _parse(args: argparse.Namespace) -> dict[str, Any]:
    nodes_text: list[str] = args.node or []
    if len(nodes_text) < 3:
        raise _UsageError(f"--node needs at least 3 nodes (repeat the flag), got {len(nodes_text)}")
    nodes: list[tuple[float, float]] = []
    for text in nodes_text:
        parts = text.split(",")
        if len(parts) != 2:
            raise _UsageError(f"--node expects X,Y in metres, got {text!r}")
        nodes.append((_number("--node", parts[0]), _number("--node", parts[1])))
    arrivals_text: list[str] = args.arrival_s or []
    if len(arrivals_text) != len(nodes):
        raise _UsageError(
            f"--arrival-s needs one value per --node ({len(nodes)}), got {len(arrivals_text)}"
        )
    arrivals = [_number("--arrival-s", t) for t in arrivals_text]
    fibres: list[float] | None = None
    if args.fibre_m is not None:
        if len(args.fibre_m) != len(nodes):
            raise _UsageError(
                f"--fibre-m needs one length per --node ({len(nodes)}), got {len(args.fibre_m)}"
            )
        fibres = [_number("--fibre-m", t) for t in args.fibre_m]
        if any(f < 0.0 for f in fibres):
            raise _UsageError("--fibre-m lengths must be non-negative")
    if args.speed_m_s is None:
        raise _UsageError("--speed-m-s is required (propagation speed of the vibration, m/s)")
    speed = _positive("--speed-m-s", args.speed_m_s)
    index = _number("--fibre-index", args.fibre_index)
    if index < 1.0:
        raise _UsageError(f"--fibre-index must be >= 1, got {args.fibre_index!r}")
    sigma = None
    if args.timing_sigma_s is not None:
        sigma = _positive("--timing-sigma-s", args.timing_sigma_s)
    return {
        "node_xy_m": nodes,
        "arrival_s": arrivals,
        "speed_m_s": speed,
        "fibre_m": fibres,
        "fibre_index": index,
        "timing_sigma_s": sigma,
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _result(inputs: dict[str, Any], loc: locate.Location) -> dict[str, Any]:
    out: dict[str, Any] = {
        "x_m": loc.x_m,
        "y_m": loc.y_m,
        "t0_s": loc.t0_s,
        "rms_residual_s": loc.rms_residual_s,
        "residuals_s": [float(r) for r in loc.residuals_s],
        "distances_m": [float(d) for d in loc.distances_m],
        "fibre_delays_s": [float(d) for d in loc.fibre_delays_s],
        "ambiguous": loc.ambiguous,
        "alternatives": [
            {
                "x_m": alt.x_m,
                "y_m": alt.y_m,
                "t0_s": alt.t0_s,
                "rms_residual_s": alt.rms_residual_s,
            }
            for alt in loc.alternatives
        ],
        "n_nodes": len(inputs["node_xy_m"]),
        "speed_m_s": inputs["speed_m_s"],
        "fibre_index": inputs["fibre_index"],
        "fibre_m": inputs["fibre_m"],
    }
    if loc.covariance is not None:
        out["timing_sigma_s"] = inputs["timing_sigma_s"]
        out["sigma_x_m"] = _finite_or_none(loc.sigma_x_m)
        out["sigma_y_m"] = _finite_or_none(loc.sigma_y_m)
        out["sigma_t0_s"] = _finite_or_none(loc.sigma_t0_s)
        out["covariance"] = [[_finite_or_none(float(c)) for c in row] for row in loc.covariance]
    return out


def _summary(out: dict[str, Any]) -> str:
    lines = [
        f"source: x = {out['x_m']:.3f} m, y = {out['y_m']:.3f} m, t0 = {out['t0_s']:.9g} s "
        f"({out['n_nodes']} nodes, v = {out['speed_m_s']:g} m/s)",
        f"  rms residual {out['rms_residual_s']:.3g} s",
    ]
    if "sigma_x_m" in out:
        sx, sy = out["sigma_x_m"], out["sigma_y_m"]
        lines.append(
            "  uncertainty: "
            + ("n/a" if sx is None or sy is None else f"sigma_x = {sx:.3g} m, sigma_y = {sy:.3g} m")
        )
    if out["ambiguous"]:
        lines.append("  ambiguous: other solutions fit the arrival times as well:")
        lines.extend(
            f"    x = {alt['x_m']:.3f} m, y = {alt['y_m']:.3f} m, t0 = {alt['t0_s']:.9g} s"
            for alt in out["alternatives"]
        )
    return "\n".join(lines)


def run_locate(args: argparse.Namespace) -> int:
    """Execute ``labctl calc locate``; returns the process exit code (0 ok, 2 usage)."""
    try:
        inputs = _parse(args)
        try:
            loc = locate.locate_source(**inputs)
        except locate.LocationInputError as exc:
            flag = _FLAGS.get(exc.argument, exc.argument)
            detail = str(exc).split(": ", 1)[-1]
            raise _UsageError(f"{flag}: {detail}") from None
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = _result(inputs, loc)
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print(_summary(out))
    return 0

"""``labctl calc cv-skr``: asymptotic CV-QKD secret key rate of one ISAQN node.

Registered by the top-level CLI with ``calc_cvqkd.add_parser(calc_sub)``. The physics (the
physics.md section 1 formulas, the measurement model, the meaning of every symbol) lives in
:mod:`dsp.cvqkd`; this module only parses, validates and formats.

The channel is given either directly (``--transmittance T``) or by its geometry
(``--length-km L --alpha-db-km alpha --nodes N``, T = 10^(-alpha L/10) / N); the two forms
exclude each other. Geometry options left out take the physics.md reference values. Every
default is a physics.md reference parameter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from dsp import cvqkd

_PROG = "labctl calc cv-skr"
_GEOMETRY_OPTIONS = ("--length-km", "--alpha-db-km", "--nodes")
_ZERO_KEY_SEARCH_KM = 500.0
#: Largest channel loss accepted: below T = 1e-10 the float64 key-rate formula loses precision.
_MAX_LOSS_DB = 100.0
_MAX_VA_SNU = 1e6
_MAX_NOISE_SNU = 1e3


class _UsageError(Exception):
    """Invalid option value or combination; the message is one line naming the option."""


def add_parser(calc_subparsers: Any) -> None:
    """Register the ``cv-skr`` sub-command on an argparse sub-parsers object."""
    parser = calc_subparsers.add_parser(
        "cv-skr",
        help="CV-QKD secret key rate (heterodyne, reverse reconciliation, asymptotic)",
        description=(
            "Asymptotic secret key rate K = beta I_AB - chi_BE [bit/symbol] and SKR = R K "
            "[bit/s] of Gaussian-modulated coherent states with heterodyne detection and "
            "reverse reconciliation against collective attacks (physics.md section 1). All "
            "defaults are the physics.md reference parameters (eta 0.42, v_el 0.18 SNU, "
            "beta 0.98, V_A 12 SNU, R 50 MHz, alpha 0.2 dB/km, L 10 km, N 8, xi 5 mSNU). "
            "K < 0 means no secret key."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--va-snu",
        type=float,
        default=cvqkd.REFERENCE_VA_SNU,
        metavar="VA",
        help=f"modulation variance V_A [SNU] in (0, 1e6] (default {cvqkd.REFERENCE_VA_SNU:g})",
    )
    parser.add_argument(
        "--eta",
        type=float,
        default=cvqkd.REFERENCE_ETA,
        help=f"detector efficiency in (0, 1] (default {cvqkd.REFERENCE_ETA:g})",
    )
    parser.add_argument(
        "--vel",
        type=float,
        default=cvqkd.REFERENCE_V_EL_SNU,
        metavar="V_EL",
        help=f"electronic noise v_el [SNU] in [0, 1000] (default {cvqkd.REFERENCE_V_EL_SNU:g})",
    )
    parser.add_argument(
        "--beta",
        type=float,
        default=cvqkd.REFERENCE_BETA,
        help=f"reconciliation efficiency in (0, 1] (default {cvqkd.REFERENCE_BETA:g})",
    )
    parser.add_argument(
        "--xi-snu",
        type=float,
        default=cvqkd.REFERENCE_XI_SNU,
        metavar="XI",
        help=(
            "excess noise xi referred to the channel input [SNU] in [0, 1000] "
            f"(default {cvqkd.REFERENCE_XI_SNU:g} = 5 mSNU)"
        ),
    )
    parser.add_argument(
        "--rate-hz",
        type=float,
        default=cvqkd.REFERENCE_SYMBOL_RATE_HZ,
        metavar="R",
        help=f"symbol rate R [Hz], > 0 (default {cvqkd.REFERENCE_SYMBOL_RATE_HZ:g})",
    )
    direct = parser.add_argument_group("channel given directly (excludes the geometry options)")
    direct.add_argument(
        "--transmittance",
        type=float,
        default=None,
        metavar="T",
        help="channel transmittance T in [1e-10, 1], splitter loss included",
    )
    geometry = parser.add_argument_group(
        "channel from geometry, T = 10^(-alpha L/10) / N (default when --transmittance is absent)"
    )
    geometry.add_argument(
        "--length-km",
        type=float,
        default=None,
        metavar="L",
        help=f"fibre length L [km], >= 0 (default {cvqkd.REFERENCE_LENGTH_KM:g})",
    )
    geometry.add_argument(
        "--alpha-db-km",
        type=float,
        default=None,
        metavar="ALPHA",
        help=f"fibre attenuation [dB/km], >= 0 (default {cvqkd.REFERENCE_ALPHA_DB_PER_KM:g})",
    )
    geometry.add_argument(
        "--nodes",
        type=int,
        default=None,
        metavar="N",
        help=f"splitter ports N (network capacity), >= 1 (default {cvqkd.REFERENCE_N_NODES})",
    )
    parser.set_defaults(func=run_cv_skr)


def _finite(option: str, value: float, allowed: str, ok: bool) -> None:
    if not (math.isfinite(value) and ok):
        raise _UsageError(f"{option} must be in {allowed}, got {value}")


def _validate(args: argparse.Namespace) -> None:
    _finite("--va-snu", args.va_snu, f"(0, {_MAX_VA_SNU:g}]", 0.0 < args.va_snu <= _MAX_VA_SNU)
    _finite("--eta", args.eta, "(0, 1]", 0.0 < args.eta <= 1.0)
    _finite("--vel", args.vel, f"[0, {_MAX_NOISE_SNU:g}]", 0.0 <= args.vel <= _MAX_NOISE_SNU)
    _finite("--beta", args.beta, "(0, 1]", 0.0 < args.beta <= 1.0)
    _finite(
        "--xi-snu", args.xi_snu, f"[0, {_MAX_NOISE_SNU:g}]", 0.0 <= args.xi_snu <= _MAX_NOISE_SNU
    )
    _finite("--rate-hz", args.rate_hz, "(0, inf)", args.rate_hz > 0.0)
    given = [
        option
        for option, value in zip(
            _GEOMETRY_OPTIONS, (args.length_km, args.alpha_db_km, args.nodes), strict=True
        )
        if value is not None
    ]
    if args.transmittance is not None:
        if given:
            raise _UsageError(
                f"--transmittance cannot be combined with {', '.join(given)}: give the channel "
                "either as --transmittance or as --length-km/--alpha-db-km/--nodes"
            )
        t = args.transmittance
        t_min = 10.0 ** (-_MAX_LOSS_DB / 10.0)
        _finite("--transmittance", t, f"[{t_min:g}, 1]", t_min <= t <= 1.0)
        return
    if args.length_km is not None:
        _finite("--length-km", args.length_km, "[0, inf)", args.length_km >= 0.0)
    if args.alpha_db_km is not None:
        _finite("--alpha-db-km", args.alpha_db_km, "[0, inf)", args.alpha_db_km >= 0.0)
    if args.nodes is not None and args.nodes < 1:
        raise _UsageError(f"--nodes must be a positive integer (>= 1), got {args.nodes}")
    length, alpha, nodes = _geometry(args)
    loss_db = alpha * length + 10.0 * math.log10(nodes)
    if loss_db > _MAX_LOSS_DB:
        raise _UsageError(
            f"--length-km x --alpha-db-km + 10 log10(--nodes) = {loss_db:g} dB must be in "
            f"[0, {_MAX_LOSS_DB:g}] dB (precision limit of the key-rate formula)"
        )


def _geometry(args: argparse.Namespace) -> tuple[float, float, int]:
    """(length_km, alpha_db_per_km, n_nodes) with the reference values for absent options."""
    length = cvqkd.REFERENCE_LENGTH_KM if args.length_km is None else float(args.length_km)
    alpha = cvqkd.REFERENCE_ALPHA_DB_PER_KM if args.alpha_db_km is None else float(args.alpha_db_km)
    nodes = cvqkd.REFERENCE_N_NODES if args.nodes is None else int(args.nodes)
    return length, alpha, nodes


def _channel(args: argparse.Namespace) -> dict[str, Any]:
    if args.transmittance is not None:
        t = float(args.transmittance)
        return {
            "channel": "transmittance",
            "length_km": None,
            "alpha_db_per_km": None,
            "n_nodes": None,
            "transmittance": t,
        }
    length, alpha, nodes = _geometry(args)
    t = cvqkd.channel_transmittance(length, alpha, nodes)
    return {
        "channel": "geometry",
        "length_km": length,
        "alpha_db_per_km": alpha,
        "n_nodes": nodes,
        "transmittance": t,
    }


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "va_snu": float(args.va_snu),
        "eta": float(args.eta),
        "v_el_snu": float(args.vel),
        "beta": float(args.beta),
        "xi_snu": float(args.xi_snu),
        "symbol_rate_hz": float(args.rate_hz),
    }
    out.update(_channel(args))
    t = out["transmittance"]
    terms = cvqkd.key_rate_terms(
        out["va_snu"], t, out["xi_snu"], out["eta"], out["v_el_snu"], out["beta"]
    )
    k = terms.key_rate_bits_per_symbol
    out.update(
        {
            "channel_loss_db": -10.0 * math.log10(t),
            "mutual_information_bits": terms.mutual_information_bits,
            "holevo_bound_bits": terms.holevo_bound_bits,
            "bits_per_symbol": k,
            "skr_bps": out["symbol_rate_hz"] * k,
            "secure": terms.secure,
        }
    )
    if out["channel"] == "geometry":
        out["zero_key_length_km"] = cvqkd.zero_key_length_km(
            out["va_snu"],
            out["xi_snu"],
            out["eta"],
            out["v_el_snu"],
            out["beta"],
            out["alpha_db_per_km"],
            out["n_nodes"],
            max_length_km=_ZERO_KEY_SEARCH_KM,
        )
        out["zero_key_search_max_km"] = cvqkd.zero_key_search_limit_km(
            out["alpha_db_per_km"], out["n_nodes"], _ZERO_KEY_SEARCH_KM
        )
    if not terms.secure:
        out["warning"] = "K <= 0: no secret key can be distilled at these parameters"
    return out


def _summary(out: dict[str, Any]) -> str:
    if out["channel"] == "geometry":
        channel = (
            f"L = {out['length_km']:g} km at {out['alpha_db_per_km']:g} dB/km, "
            f"1x{out['n_nodes']} splitter -> T = {out['transmittance']:.6g}"
        )
    else:
        channel = f"T = {out['transmittance']:.6g}"
    lines = [
        f"CV-QKD (heterodyne, reverse reconciliation, asymptotic): {channel} "
        f"({out['channel_loss_db']:.3f} dB)",
        f"  V_A = {out['va_snu']:g} SNU, xi = {out['xi_snu'] * 1e3:g} mSNU, "
        f"eta = {out['eta']:g}, v_el = {out['v_el_snu']:g} SNU, beta = {out['beta']:g}, "
        f"R = {out['symbol_rate_hz']:g} Hz",
        f"  I_AB = {out['mutual_information_bits']:.6g} bit, "
        f"chi_BE = {out['holevo_bound_bits']:.6g} bit",
        f"  key rate K = {out['bits_per_symbol']:.6g} bit/symbol, SKR = {out['skr_bps']:.6g} bit/s",
    ]
    if out["channel"] == "geometry":
        zero = out["zero_key_length_km"]
        if zero is None:
            lines.append(
                f"  no zero crossing of K within {out['zero_key_search_max_km']:g} km of fibre"
            )
        elif zero == 0.0:
            lines.append("  no key at any length (K <= 0 already at L = 0)")
        else:
            lines.append(f"  key vanishes beyond L = {zero:.5g} km")
    if "warning" in out:
        lines.append(f"  warning: {out['warning']}")
    return "\n".join(lines)


def run_cv_skr(args: argparse.Namespace) -> int:
    """Execute ``labctl calc cv-skr``; returns the process exit code (0 ok, 2 usage)."""
    try:
        _validate(args)
        try:
            out = _compute(args)
        except ValueError as exc:  # e.g. float overflow at an extreme but in-range --eta
            raise _UsageError(
                f"parameters outside the range of the key-rate formula: {exc}"
            ) from None
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print(_summary(out))
    return 0

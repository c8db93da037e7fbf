"""CV-QKD: secret key rate, shot-noise normalisation and parameter estimation (heterodyne, RR).

Protocol (docs/physics.md section 1, "CV-QKD parameter estimation and secret key rate"):
Gaussian-modulated coherent states, heterodyne detection, reverse reconciliation, asymptotic
key rate against collective attacks. Quadratures and noise are in shot-noise units (SNU): the
vacuum variance of one quadrature is 1.

Key rate (bits per symbol), exactly the formulas of the physics brief
----------------------------------------------------------------------

    V = V_A + 1
    chi_line = 1/T - 1 + xi                       (xi: excess noise referred to the channel input)
    chi_het  = [1 + (1 - eta) + 2 v_el] / eta     (trusted detector noise, heterodyne)
    chi_tot  = chi_line + chi_het / T
    I_AB     = log2[(V + chi_tot) / (1 + chi_tot)]
    A = V^2 (1 - 2T) + 2T + T^2 (V + chi_line)^2
    B = T^2 (V chi_line + 1)^2
    C = [A chi_het^2 + B + 1 + 2 chi_het (V sqrt(B) + T (V + chi_line)) + 2T (V^2 - 1)]
        / (T (V + chi_tot))^2
    D = [(V + sqrt(B) chi_het) / (T (V + chi_tot))]^2
    lambda_{1,2}^2 = (A +- sqrt(A^2 - 4B)) / 2,   lambda_{3,4}^2 = (C +- sqrt(C^2 - 4D)) / 2
    lambda_5 = 1
    G(x) = (x + 1) log2(x + 1) - x log2(x)
    chi_BE = G((l1-1)/2) + G((l2-1)/2) - G((l3-1)/2) - G((l4-1)/2) - G((l5-1)/2)
    K = beta I_AB - chi_BE,      SKR = R K  [bit/s]

Two numerically safe but algebraically identical evaluations are used: the smaller root of each
pair is taken from Vieta's product (lambda_2^2 = B / lambda_1^2, lambda_4^2 = D / lambda_3^2)
instead of the cancelling difference, and discriminants and G arguments that rounding pushes a
few ulp below zero are clipped to 0 (G(0) = 0). **K < 0 is returned as is: it means no secret
key can be distilled** (the rate is not clipped at zero, so callers can see the margin).

Channel: T = 10^(-alpha L / 10) / N (fibre attenuation alpha [dB/km] over L [km], 1/N the loss
of the 1xN splitter on the way back).

Measurement model (one quadrature; p is identical and independent)
-------------------------------------------------------------------
Alice sends the coherent state displaced by (x_A, p_A), x_A, p_A i.i.d. N(0, V_A), so the mode
quadrature is x_A + x_0 with vacuum x_0 (variance 1): V = V_A + 1. With independent standard
normal vacuum/noise variables x_0, x_E, x_exc, x_h, x_l, x_el:

    channel    X_out = sqrt(T) (x_A + x_0) + sqrt(1 - T) x_E + sqrt(T xi) x_exc
               (output variance T V_A + 1 + T xi = T (V + chi_line); xi referred to the input)
    heterodyne 50:50 split with vacuum: (X_out + x_h) / sqrt(2)   (conjugate port measures p)
    detector   efficiency eta: sqrt(eta) (.) + sqrt(1 - eta) x_l; electronic noise sqrt(v_el) x_el

so the normalised output of each of Bob's two homodynes is

    x_B = t x_A + z,   t = sqrt(eta T / 2),
    Var(z) = (eta/2)(T + 1 - T + T xi) + eta/2 + (1 - eta) + v_el = 1 + v_el + eta T xi / 2.

Consistency with the key-rate formula: Var(z) / t^2 = 2 (1 + v_el) / (eta T) + xi = 1 + chi_tot
and Var(x_B) / t^2 = V + chi_tot, so I_AB = 2 * (1/2) log2(Var(x_B) / Var(z)) is the I_AB above
(two quadratures per heterodyne symbol). With the signal off (x_A = 0, T xi = 0) the output
variance is 1 + v_el: one shot-noise unit plus the electronic noise, which is how the
calibration captures below define the unit.

Shot-noise-unit normalisation
-----------------------------
A shot-noise capture (LO on, signal off) has raw variance N0 + v_el_raw, an electronic-noise
capture (LO off) has raw variance v_el_raw. Hence N0 = var(shot) - var(electronic),
v_el = v_el_raw / N0 [SNU], and raw quadratures are normalised as (q - offset) / sqrt(N0), the
offset being the mean of the shot-noise capture (same detector state as the data). Calibrate each
receiver output (I and Q) separately.

Parameter estimation (disclosed fraction, m = 2 n samples pooled over x and p)
-----------------------------------------------------------------------------
    t_hat  = <x_A x_B> / <x_A^2>                          (least squares through the origin)
    s2_hat = sum (x_B - t_hat x_A)^2 / (m - 1)            (noise variance, SNU)
    T_hat  = 2 t_hat^2 / eta
    xi_hat = (s2_hat - 1 - v_el) / t_hat^2                (= 2 (s2 - 1 - v_el) / (eta T_hat))

Confidence intervals use the standard asymptotic (Gaussian) errors of Leverrier, Grosshans and
Grangier, PRA 81, 062343 (2010): sigma(t) = sqrt(s2 / sum x_A^2) (= sqrt(s2 / (m V_A))),
sigma(s2) = s2 sqrt(2 / (m - 1)); t_hat and s2_hat are independent for Gaussian noise. The T
interval is the t interval mapped through T = 2 t^2 / eta; the xi interval is the delta-method
interval xi_hat +- z sigma(xi), sigma(xi)^2 = sigma(s2)^2 / t^4 + (2 (s2 - 1 - v_el) / t^3)^2
sigma(t)^2, z the two-sided normal quantile (scipy.stats). The conservative finite-size value of
Leverrier et al. (worst case of both: s2 at its upper and t at its lower limit) is reported as
``xi_worst_case_snu``. Uncertainty of the shot-noise calibration (N0, v_el, eta) is not included.

Statistical reach: sigma(xi) ~ sqrt(2/m) (1 + v_el) / t^2. At the reference point (T = 0.079,
eta = 0.42, v_el = 0.18) t^2 = 0.0166, so 10^6 symbols give sigma(xi) ~ 70 mSNU; resolving a few
mSNU of excess noise needs ~10^9 to 10^10 disclosed symbols.

This module is pure numpy/scipy and imports nothing from the rest of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

__all__ = [
    "REFERENCE_ALPHA_DB_PER_KM",
    "REFERENCE_BETA",
    "REFERENCE_ETA",
    "REFERENCE_LENGTH_KM",
    "REFERENCE_N_NODES",
    "REFERENCE_SYMBOL_RATE_HZ",
    "REFERENCE_VA_SNU",
    "REFERENCE_V_EL_SNU",
    "REFERENCE_XI_SNU",
    "ZERO_KEY_MAX_LOSS_DB",
    "HeterodyneSymbols",
    "KeyRateTerms",
    "ParameterEstimate",
    "PeSums",
    "ShotNoiseCalibration",
    "calibrate_shot_noise",
    "channel_transmittance",
    "estimate_from_sums",
    "estimate_parameters",
    "holevo_g",
    "key_rate_bits_per_symbol",
    "key_rate_terms",
    "normalise_to_snu",
    "secret_key_rate_bps",
    "simulate_heterodyne",
    "zero_key_length_km",
    "zero_key_search_limit_km",
]

#: Reference parameters of physics.md section 1.
REFERENCE_ETA: Final[float] = 0.42
REFERENCE_V_EL_SNU: Final[float] = 0.18
REFERENCE_BETA: Final[float] = 0.98
REFERENCE_VA_SNU: Final[float] = 12.0
REFERENCE_SYMBOL_RATE_HZ: Final[float] = 50e6
REFERENCE_ALPHA_DB_PER_KM: Final[float] = 0.2
REFERENCE_LENGTH_KM: Final[float] = 10.0
REFERENCE_N_NODES: Final[int] = 8
#: "A few mSNU per node": 5 mSNU is the reference working point used by tests and the CLI.
REFERENCE_XI_SNU: Final[float] = 0.005

#: Channel loss [dB] up to which :func:`zero_key_length_km` searches for the zero crossing.
ZERO_KEY_MAX_LOSS_DB: Final[float] = 100.0

_MIN_SAMPLES: Final[int] = 2


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_range(
    name: str,
    value: float,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` or raise ValueError naming the parameter and its allowed range."""
    v = float(value)
    ok = math.isfinite(v)
    ok = ok and (v > low if low_open else v >= low)
    ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or math.isinf(high) else "]"
        high_text = "inf" if math.isinf(high) else f"{high:g}"
        raise ValueError(
            f"{name} must be finite and in {left}{low:g}, {high_text}{right}, got {value}"
        )
    return v


# --------------------------------------------------------------------------------------------
# Key rate
# --------------------------------------------------------------------------------------------


def holevo_g(x: float) -> float:
    """G(x) = (x + 1) log2(x + 1) - x log2(x) [bit], von Neumann entropy of a thermal state.

    x is the mean photon number (l - 1)/2 of a mode with symplectic eigenvalue l; G(0) = 0 and
    arguments below 0 (rounding of l = 1) are treated as 0.
    """
    xv = float(x)
    if xv <= 0.0:
        return 0.0
    return (xv + 1.0) * math.log2(xv + 1.0) - xv * math.log2(xv)


def _root_pair(s: float, p: float) -> tuple[float, float]:
    """Roots (r+, r-) of r^2 - s r + p = 0, i.e. (s +- sqrt(s^2 - 4p)) / 2, without cancellation."""
    r_plus = 0.5 * (s + math.sqrt(max(s * s - 4.0 * p, 0.0)))
    r_minus = p / r_plus if r_plus > 0.0 else 0.0
    return r_plus, r_minus


@dataclass(frozen=True)
class KeyRateTerms:
    """Every intermediate quantity of the key-rate formula (physics.md section 1).

    Attributes:
        va_snu, transmittance, xi_snu, eta, v_el_snu, beta: the inputs (V_A [SNU], T, xi [SNU,
            channel input], detector efficiency, electronic noise [SNU], reconciliation
            efficiency).
        v: V = V_A + 1 [SNU].
        chi_line: 1/T - 1 + xi [SNU, channel input].
        chi_het: [1 + (1 - eta) + 2 v_el] / eta [SNU, detector input].
        chi_tot: chi_line + chi_het / T [SNU, channel input].
        mutual_information_bits: I_AB [bit/symbol].
        a, b, c, d: A, B, C, D of the symplectic-eigenvalue formulas.
        symplectic_eigenvalues: (lambda_1, ..., lambda_5), lambda_5 = 1.
        holevo_bound_bits: chi_BE [bit/symbol].
        key_rate_bits_per_symbol: K = beta I_AB - chi_BE; negative means no key.
    """

    va_snu: float
    transmittance: float
    xi_snu: float
    eta: float
    v_el_snu: float
    beta: float
    v: float
    chi_line: float
    chi_het: float
    chi_tot: float
    mutual_information_bits: float
    a: float
    b: float
    c: float
    d: float
    symplectic_eigenvalues: tuple[float, float, float, float, float]
    holevo_bound_bits: float
    key_rate_bits_per_symbol: float

    @property
    def secure(self) -> bool:
        """True iff K > 0 (a secret key can be distilled)."""
        return self.key_rate_bits_per_symbol > 0.0


def key_rate_terms(
    va_snu: float,
    transmittance: float,
    xi_snu: float,
    eta: float,
    v_el_snu: float,
    beta: float,
) -> KeyRateTerms:
    """Evaluate the physics.md key-rate formula and return all its intermediate terms.

    Args:
        va_snu: modulation variance V_A [SNU], > 0.
        transmittance: channel transmittance T in (0, 1].
        xi_snu: excess noise xi referred to the channel input [SNU], >= 0 (use the upper
            confidence bound of an estimate, not a negative point estimate).
        eta: detector efficiency in (0, 1].
        v_el_snu: electronic noise v_el [SNU], >= 0.
        beta: reconciliation efficiency in (0, 1].

    Precision: the float64 evaluation agrees with a 60-digit evaluation to ~1e-10 relative at
    T >= 1e-4 and ~1e-7 at T = 1e-8 (80 dB); below that 1/T - 1 + xi loses the digits of xi.
    Raises ValueError if the formula overflows.
    """
    va = _check_range("va_snu", va_snu, 0.0, low_open=True)
    t = _check_range("transmittance", transmittance, 0.0, 1.0, low_open=True)
    xi = _check_range("xi_snu", xi_snu, 0.0)
    eta_f = _check_range("eta", eta, 0.0, 1.0, low_open=True)
    v_el = _check_range("v_el_snu", v_el_snu, 0.0)
    beta_f = _check_range("beta", beta, 0.0, 1.0, low_open=True)
    try:
        terms = _key_rate_terms_unchecked(va, t, xi, eta_f, v_el, beta_f)
    except (OverflowError, ZeroDivisionError):
        terms = None
    if terms is None or not math.isfinite(terms.key_rate_bits_per_symbol):
        raise ValueError(
            f"the key-rate formula is not finite at va_snu={va:g}, transmittance={t:g}, "
            f"xi_snu={xi:g}, eta={eta_f:g}, v_el_snu={v_el:g} (float64 overflow: an input at "
            "the edge of its range, e.g. a tiny transmittance or eta or a huge va_snu)"
        )
    return terms


def _key_rate_terms_unchecked(
    va: float, t: float, xi: float, eta_f: float, v_el: float, beta_f: float
) -> KeyRateTerms:
    v = va + 1.0
    chi_line = 1.0 / t - 1.0 + xi
    chi_het = (1.0 + (1.0 - eta_f) + 2.0 * v_el) / eta_f
    chi_tot = chi_line + chi_het / t
    i_ab = math.log2((v + chi_tot) / (1.0 + chi_tot))

    a = v**2 * (1.0 - 2.0 * t) + 2.0 * t + t**2 * (v + chi_line) ** 2
    b = t**2 * (v * chi_line + 1.0) ** 2
    sqrt_b = math.sqrt(b)
    norm = (t * (v + chi_tot)) ** 2
    c = (
        a * chi_het**2
        + b
        + 1.0
        + 2.0 * chi_het * (v * sqrt_b + t * (v + chi_line))
        + 2.0 * t * (v**2 - 1.0)
    ) / norm
    d = (v + sqrt_b * chi_het) ** 2 / norm

    l1_sq, l2_sq = _root_pair(a, b)
    l3_sq, l4_sq = _root_pair(c, d)
    lambdas = (
        math.sqrt(l1_sq),
        math.sqrt(l2_sq),
        math.sqrt(l3_sq),
        math.sqrt(l4_sq),
        1.0,
    )
    chi_be = (
        holevo_g((lambdas[0] - 1.0) / 2.0)
        + holevo_g((lambdas[1] - 1.0) / 2.0)
        - holevo_g((lambdas[2] - 1.0) / 2.0)
        - holevo_g((lambdas[3] - 1.0) / 2.0)
        - holevo_g((lambdas[4] - 1.0) / 2.0)
    )
    return KeyRateTerms(
        va_snu=va,
        transmittance=t,
        xi_snu=xi,
        eta=eta_f,
        v_el_snu=v_el,
        beta=beta_f,
        v=v,
        chi_line=chi_line,
        chi_het=chi_het,
        chi_tot=chi_tot,
        mutual_information_bits=i_ab,
        a=a,
        b=b,
        c=c,
        d=d,
        symplectic_eigenvalues=lambdas,
        holevo_bound_bits=chi_be,
        key_rate_bits_per_symbol=beta_f * i_ab - chi_be,
    )


def key_rate_bits_per_symbol(
    va_snu: float,
    transmittance: float,
    xi_snu: float,
    eta: float,
    v_el_snu: float,
    beta: float,
) -> float:
    """Asymptotic secret key K = beta I_AB - chi_BE [bit/symbol]; K < 0 means no key.

    Parameters as in :func:`key_rate_terms`.
    """
    return key_rate_terms(
        va_snu, transmittance, xi_snu, eta, v_el_snu, beta
    ).key_rate_bits_per_symbol


def secret_key_rate_bps(
    va_snu: float,
    transmittance: float,
    xi_snu: float,
    eta: float,
    v_el_snu: float,
    beta: float,
    symbol_rate_hz: float,
) -> float:
    """SKR = R K [bit/s] with R = ``symbol_rate_hz`` > 0; negative means no key."""
    rate = _check_range("symbol_rate_hz", symbol_rate_hz, 0.0, low_open=True)
    return rate * key_rate_bits_per_symbol(va_snu, transmittance, xi_snu, eta, v_el_snu, beta)


def channel_transmittance(length_km: float, alpha_db_per_km: float, n_nodes: int) -> float:
    """T = 10^(-alpha L / 10) / N: fibre of ``length_km`` >= 0 at ``alpha_db_per_km`` >= 0
    followed by the 1xN splitter (``n_nodes`` = N >= 1). Result in (0, 1]."""
    length = _check_range("length_km", length_km, 0.0)
    alpha = _check_range("alpha_db_per_km", alpha_db_per_km, 0.0)
    if isinstance(n_nodes, bool) or int(n_nodes) != n_nodes or int(n_nodes) < 1:
        raise ValueError(f"n_nodes must be a positive integer (>= 1), got {n_nodes}")
    t = 10.0 ** (-alpha * length / 10.0) / int(n_nodes)
    if not t > 0.0:
        raise ValueError(
            f"channel loss alpha_db_per_km * length_km = {alpha * length:g} dB underflows "
            "the transmittance to 0"
        )
    return t


def zero_key_search_limit_km(
    alpha_db_per_km: float, n_nodes: int, max_length_km: float = 500.0
) -> float:
    """Longest fibre [km] :func:`zero_key_length_km` searches: ``max_length_km`` or the length
    at which the channel loss alpha L + 10 log10(N) reaches ``ZERO_KEY_MAX_LOSS_DB``, whichever
    is shorter (0 if the splitter alone exceeds it). Beyond 100 dB (T < 1e-10) the float64
    formula loses its precision."""
    max_len = _check_range("max_length_km", max_length_km, 0.0, low_open=True)
    alpha = _check_range("alpha_db_per_km", alpha_db_per_km, 0.0)
    splitter_db = -10.0 * math.log10(channel_transmittance(0.0, alpha, n_nodes))  # 10 log10 N
    if alpha == 0.0:
        return max_len
    return max(0.0, min(max_len, (ZERO_KEY_MAX_LOSS_DB - splitter_db) / alpha))


def zero_key_length_km(
    va_snu: float,
    xi_snu: float,
    eta: float,
    v_el_snu: float,
    beta: float,
    alpha_db_per_km: float,
    n_nodes: int,
    max_length_km: float = 500.0,
) -> float | None:
    """Fibre length [km] at which K crosses zero (K > 0 below it), by Brent's method.

    The search runs over [0, :func:`zero_key_search_limit_km`] (``max_length_km`` or 100 dB of
    total channel loss, whichever is shorter). Returns 0.0 if K <= 0 already at L = 0 and
    ``None`` if K stays positive over the whole search range (always when ``alpha_db_per_km``
    is 0: the length does not matter).
    """
    upper = zero_key_search_limit_km(alpha_db_per_km, n_nodes, max_length_km)

    def k_of_length(length_km: float) -> float:
        t = channel_transmittance(length_km, alpha_db_per_km, n_nodes)
        return key_rate_bits_per_symbol(va_snu, t, xi_snu, eta, v_el_snu, beta)

    if k_of_length(0.0) <= 0.0:
        return 0.0
    if float(alpha_db_per_km) == 0.0 or upper == 0.0 or k_of_length(upper) > 0.0:
        return None
    return float(optimize.brentq(k_of_length, 0.0, upper, xtol=1e-9, rtol=1e-12))


# --------------------------------------------------------------------------------------------
# Shot-noise-unit normalisation
# --------------------------------------------------------------------------------------------


def _real_samples(name: str, samples: ArrayLike, min_size: int = _MIN_SAMPLES) -> NDArray:
    arr = np.asarray(samples)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real (calibrate the I and Q outputs separately)")
    arr = arr.astype(np.float64, copy=False).ravel()
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} samples, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite samples (NaN or inf)")
    return arr


@dataclass(frozen=True)
class ShotNoiseCalibration:
    """Shot-noise unit of one receiver output, from a shot-noise and an electronic-noise capture.

    Attributes:
        n0_raw: shot-noise variance N0 [raw unit^2] (one SNU).
        v_el_raw: electronic-noise variance [raw unit^2] (LO-off capture).
        v_el_snu: electronic noise v_el = v_el_raw / N0 [SNU].
        offset_raw: mean of the shot-noise capture [raw unit], subtracted on normalisation.
        n_shot_samples, n_electronic_samples: capture lengths.
    """

    n0_raw: float
    v_el_raw: float
    v_el_snu: float
    offset_raw: float
    n_shot_samples: int
    n_electronic_samples: int

    @property
    def n0_se_raw(self) -> float:
        """Asymptotic standard error of :attr:`n0_raw` (Gaussian captures) [raw unit^2]."""
        shot = self.n0_raw + self.v_el_raw
        return math.sqrt(
            2.0 * shot**2 / (self.n_shot_samples - 1)
            + 2.0 * self.v_el_raw**2 / (self.n_electronic_samples - 1)
        )


def calibrate_shot_noise(
    shot_noise_samples: ArrayLike, electronic_noise_samples: ArrayLike
) -> ShotNoiseCalibration:
    """Shot-noise unit from a signal-off capture (variance N0 + v_el_raw) and an LO-off capture
    (variance v_el_raw), both in the same raw unit of one receiver output (real samples).

    N0 = var(shot) - var(electronic) (unbiased variances), v_el = v_el_raw / N0 [SNU].
    Raises ValueError if the shot-noise capture is not noisier than the electronic-noise one.
    """
    shot = _real_samples("shot_noise_samples", shot_noise_samples)
    elec = _real_samples("electronic_noise_samples", electronic_noise_samples)
    var_shot = float(np.var(shot, ddof=1))
    var_el = float(np.var(elec, ddof=1))
    n0 = var_shot - var_el
    if not n0 > 0.0:
        raise ValueError(
            f"shot-noise capture variance {var_shot:.6g} does not exceed the electronic-noise "
            f"capture variance {var_el:.6g}: no shot noise detected (LO off or captures swapped?)"
        )
    return ShotNoiseCalibration(
        n0_raw=n0,
        v_el_raw=var_el,
        v_el_snu=var_el / n0,
        offset_raw=float(np.mean(shot)),
        n_shot_samples=int(shot.size),
        n_electronic_samples=int(elec.size),
    )


def normalise_to_snu(samples: ArrayLike, calibration: ShotNoiseCalibration) -> NDArray[np.float64]:
    """Raw quadrature samples -> SNU: (q - offset_raw) / sqrt(N0). Returns a new float64 array
    of the input shape (real input only)."""
    arr = np.asarray(samples)
    if np.iscomplexobj(arr):
        raise ValueError("samples must be real (normalise the I and Q outputs separately)")
    out = arr.astype(np.float64, copy=True)
    out -= calibration.offset_raw
    out *= 1.0 / math.sqrt(calibration.n0_raw)
    return out


# --------------------------------------------------------------------------------------------
# Synthetic heterodyne data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeterodyneSymbols:
    """Alice's symbols and Bob's normalised heterodyne outputs [SNU], each shape (n_symbols,)."""

    x_a: NDArray[np.float64]
    p_a: NDArray[np.float64]
    x_b: NDArray[np.float64]
    p_b: NDArray[np.float64]

    @property
    def n_symbols(self) -> int:
        """Number of symbols."""
        return int(self.x_a.size)


def simulate_heterodyne(
    n_symbols: int,
    va_snu: float,
    transmittance: float,
    xi_snu: float,
    eta: float,
    v_el_snu: float,
    rng: np.random.Generator | int | None = None,
) -> HeterodyneSymbols:
    """Draw ``n_symbols`` Gaussian-modulated symbols and Bob's heterodyne outputs in SNU.

    Each quadrature follows the measurement model of the module docstring, drawn term by term
    (signal vacuum, Eve's vacuum, excess noise, heterodyne vacuum, detector loss, electronics):

        x_B = sqrt(eta/2) [sqrt(T) (x_A + x_0) + sqrt(1 - T) x_E + sqrt(T xi) x_exc + x_h]
              + sqrt(1 - eta) x_l + sqrt(v_el) x_el

    i.e. x_B = sqrt(eta T / 2) x_A + z with Var(z) = 1 + v_el + eta T xi / 2, the model that
    :func:`estimate_parameters` inverts. ``rng`` is a Generator or a seed.
    """
    if isinstance(n_symbols, bool) or int(n_symbols) != n_symbols or int(n_symbols) < 1:
        raise ValueError(f"n_symbols must be a positive integer (>= 1), got {n_symbols}")
    n = int(n_symbols)
    va = _check_range("va_snu", va_snu, 0.0, low_open=True)
    t = _check_range("transmittance", transmittance, 0.0, 1.0, low_open=True)
    xi = _check_range("xi_snu", xi_snu, 0.0)
    eta_f = _check_range("eta", eta, 0.0, 1.0, low_open=True)
    v_el = _check_range("v_el_snu", v_el_snu, 0.0)
    gen = np.random.default_rng(rng)

    def quadrature() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        a = gen.normal(0.0, math.sqrt(va), n)
        # Channel output mode, then the heterodyne vacuum port; all terms accumulated in place.
        mode = a + gen.standard_normal(n)  # x_A + x_0
        mode *= math.sqrt(t)
        mode += math.sqrt(1.0 - t) * gen.standard_normal(n)  # Eve's vacuum (loss)
        mode += math.sqrt(t * xi) * gen.standard_normal(n)  # excess noise, xi at the input
        mode += gen.standard_normal(n)  # heterodyne 50:50 vacuum port
        mode *= math.sqrt(eta_f / 2.0)
        mode += math.sqrt(1.0 - eta_f) * gen.standard_normal(n)  # detector inefficiency
        mode += math.sqrt(v_el) * gen.standard_normal(n)  # electronic noise
        return a, mode

    x_a, x_b = quadrature()
    p_a, p_b = quadrature()
    return HeterodyneSymbols(x_a=x_a, p_a=p_a, x_b=x_b, p_b=p_b)


# --------------------------------------------------------------------------------------------
# Parameter estimation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterEstimate:
    """Channel parameters from the disclosed symbols (heterodyne, reverse reconciliation).

    Attributes:
        transmittance: T_hat = 2 t^2 / eta (may exceed 1 by statistical fluctuation).
        transmittance_ci: (low, high) confidence interval of T at ``confidence``.
        xi_snu: xi_hat [SNU, channel input] (may be negative by statistical fluctuation).
        xi_ci_snu: (low, high) confidence interval of xi [SNU].
        n_symbols: disclosed symbols used (2 samples each: x and p).
        confidence: two-sided confidence level of the intervals.
        gain: t_hat = <x_A x_B> / <x_A^2> (pooled over x and p).
        gain_se: asymptotic standard error of t_hat.
        noise_var_snu: s2_hat, variance of x_B - t_hat x_A [SNU].
        noise_var_se_snu: asymptotic standard error of s2_hat [SNU].
        xi_se_snu: delta-method standard error of xi_hat [SNU].
        xi_worst_case_snu: (s2_high - 1 - v_el) / t_low^2, the conservative finite-size value
            (Leverrier et al. 2010) built from the interval ends of s2 and t [SNU].
        va_snu: empirical <x_A^2> over the disclosed symbols [SNU].
    """

    transmittance: float
    transmittance_ci: tuple[float, float]
    xi_snu: float
    xi_ci_snu: tuple[float, float]
    n_symbols: int
    confidence: float
    gain: float
    gain_se: float
    noise_var_snu: float
    noise_var_se_snu: float
    xi_se_snu: float
    xi_worst_case_snu: float
    va_snu: float


def estimate_parameters(
    x_a: ArrayLike,
    p_a: ArrayLike,
    x_b: ArrayLike,
    p_b: ArrayLike,
    eta: float,
    v_el_snu: float,
    confidence: float = 0.95,
) -> ParameterEstimate:
    """Estimate T and xi from Alice's symbols and Bob's SNU-normalised heterodyne outputs.

    Model (module docstring): x_B = t x_A + z, t = sqrt(eta T / 2),
    Var(z) = 1 + v_el + eta T xi / 2, identical for the p quadrature, so both are pooled
    (m = 2 n samples). Estimators: t_hat = sum(x_A x_B) / sum(x_A^2),
    s2_hat = sum((x_B - t_hat x_A)^2) / (m - 1), T_hat = 2 t_hat^2 / eta,
    xi_hat = (s2_hat - 1 - v_el) / t_hat^2. Intervals: asymptotic normal errors
    sigma(t) = sqrt(s2 / sum x_A^2), sigma(s2) = s2 sqrt(2 / (m - 1)) (Leverrier et al.,
    PRA 81, 062343 (2010)); T interval mapped from the t interval, xi interval by the delta
    method. Bob's data must already be phase-corrected (t > 0) and normalised to SNU.

    Args:
        x_a, p_a: Alice's disclosed symbols [SNU], 1-D, same length n >= 2.
        x_b, p_b: Bob's normalised outputs for the same symbols [SNU].
        eta: detector efficiency in (0, 1] (calibrated).
        v_el_snu: electronic noise [SNU], >= 0 (from :func:`calibrate_shot_noise`).
        confidence: two-sided confidence level in (0, 1).
    """
    eta_f = _check_range("eta", eta, 0.0, 1.0, low_open=True)
    v_el = _check_range("v_el_snu", v_el_snu, 0.0)
    conf = _check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    arrays = [
        _real_samples(name, arr)
        for name, arr in zip(("x_a", "p_a", "x_b", "p_b"), (x_a, p_a, x_b, p_b), strict=True)
    ]
    n = arrays[0].size
    sizes = [arr.size for arr in arrays]
    if any(size != n for size in sizes):
        raise ValueError(f"x_a, p_a, x_b, p_b must have the same length, got {sizes}")
    a = np.concatenate(arrays[:2])
    b = np.concatenate(arrays[2:])
    sums = PeSums(
        n_symbols=int(n),
        s_aa=float(np.dot(a, a)),
        s_ab=float(np.dot(a, b)),
        s_bb=float(np.dot(b, b)),
    )
    return estimate_from_sums(sums, eta_f, v_el, conf)


@dataclass(frozen=True)
class PeSums:
    """Sufficient statistics of the disclosed symbols, pooled over x and p (m = 2 n samples).

    Streams accumulate them block by block (``+``) instead of keeping the symbols;
    :func:`estimate_from_sums` gives exactly what :func:`estimate_parameters` gives on the
    concatenated symbols (up to the summation order).
    """

    n_symbols: int = 0
    s_aa: float = 0.0
    s_ab: float = 0.0
    s_bb: float = 0.0

    @classmethod
    def of(cls, a: ArrayLike, b: ArrayLike) -> PeSums:
        """Sums of complex symbols a = x_A + j p_A and outputs b = x_B + j p_B [SNU]."""
        za = np.asarray(a, dtype=np.complex128).ravel()
        zb = np.asarray(b, dtype=np.complex128).ravel()
        if za.shape != zb.shape:
            raise ValueError(f"a and b must have the same length, got {za.size} and {zb.size}")
        return cls(
            n_symbols=int(za.size),
            s_aa=float(np.vdot(za, za).real),
            s_ab=float(np.vdot(za, zb).real),
            s_bb=float(np.vdot(zb, zb).real),
        )

    def __add__(self, other: PeSums) -> PeSums:
        return PeSums(
            self.n_symbols + other.n_symbols,
            self.s_aa + other.s_aa,
            self.s_ab + other.s_ab,
            self.s_bb + other.s_bb,
        )


def estimate_from_sums(
    sums: PeSums, eta: float, v_el_snu: float, confidence: float = 0.95
) -> ParameterEstimate:
    """:func:`estimate_parameters` from accumulated :class:`PeSums` (same model and intervals)."""
    eta_f = _check_range("eta", eta, 0.0, 1.0, low_open=True)
    v_el = _check_range("v_el_snu", v_el_snu, 0.0)
    conf = _check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    n = sums.n_symbols
    if n < _MIN_SAMPLES:
        raise ValueError(f"parameter estimation needs at least {_MIN_SAMPLES} symbols, got {n}")
    m = 2 * n
    s_aa = sums.s_aa
    if not s_aa > 0.0:
        raise ValueError("Alice's symbols are all zero: no modulation to estimate from")
    gain = sums.s_ab / s_aa
    if not gain > 0.0:
        raise ValueError(
            f"correlation <x_A x_B> / <x_A^2> = {gain:.3g} is not positive: Bob's data is not "
            "phase-corrected or not matched to Alice's symbols"
        )
    noise_var = max(sums.s_bb - 2.0 * gain * sums.s_ab + gain**2 * s_aa, 0.0) / (m - 1)

    gain_se = math.sqrt(noise_var / s_aa)
    noise_var_se = noise_var * math.sqrt(2.0 / (m - 1))
    z = float(stats.norm.ppf(0.5 + 0.5 * conf))

    transmittance = 2.0 * gain**2 / eta_f
    gain_low = max(gain - z * gain_se, 0.0)
    gain_high = gain + z * gain_se
    t_ci = (2.0 * gain_low**2 / eta_f, 2.0 * gain_high**2 / eta_f)

    excess = noise_var - 1.0 - v_el
    xi = excess / gain**2
    xi_se = math.sqrt((noise_var_se / gain**2) ** 2 + (2.0 * excess / gain**3 * gain_se) ** 2)
    xi_ci = (xi - z * xi_se, xi + z * xi_se)
    worst = (
        (noise_var + z * noise_var_se - 1.0 - v_el) / gain_low**2 if gain_low > 0.0 else math.inf
    )
    return ParameterEstimate(
        transmittance=transmittance,
        transmittance_ci=t_ci,
        xi_snu=xi,
        xi_ci_snu=xi_ci,
        n_symbols=int(n),
        confidence=conf,
        gain=gain,
        gain_se=gain_se,
        noise_var_snu=noise_var,
        noise_var_se_snu=noise_var_se,
        xi_se_snu=xi_se,
        xi_worst_case_snu=worst,
        va_snu=s_aa / m,
    )

"""Tests of dsp.cvqkd against independent references.

* Key rate: (1) an EPR-equivalent route that never uses the A, B, C, D closed forms: the
  covariance matrix of Alice's EPR mode and Bob's mode, the trusted detector noise as an EPR pair
  mixed on a beam splitter of transmittance eta, the heterodyne as a projection on coherent
  states (conditional covariance gamma_R - C (gamma_B + I)^-1 C^T), symplectic eigenvalues from
  numpy eigenvalues of i Omega gamma, and I_AB from the prepare-and-measure variances of the
  measurement model; (2) a literal 60-digit ``decimal`` transcription of physics.md (both roots
  with +-, no Vieta), which checks the transcription and the float64 precision.
* Limits: T = 1, xi = 0 (Eve learns nothing, K = beta I_AB, log2(1 + V_A/2) for an ideal
  detector), monotonicity in xi, length and beta, the zero-key distance.
* Estimator: accuracy with >= 10^6 symbols, interval coverage over repeated seeds within the
  binomial error, and the shot-noise-unit calibration.

Statistical checks use fixed seeds; tolerances are stated in units of the relevant standard
error so that each check is meaningful (the premise is asserted where it is not obvious).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp import cvqkd

REF = {
    "va_snu": cvqkd.REFERENCE_VA_SNU,
    "xi_snu": cvqkd.REFERENCE_XI_SNU,
    "eta": cvqkd.REFERENCE_ETA,
    "v_el_snu": cvqkd.REFERENCE_V_EL_SNU,
    "beta": cvqkd.REFERENCE_BETA,
}
REF_T = 10.0 ** (-0.2 * 10.0 / 10.0) / 8.0  # 10 km at 0.2 dB/km, 1x8 splitter

#: Pinned reference values (physics.md reference parameters, L = 10 km, N = 8, xi = 5 mSNU);
#: agree with both independent routes below.
REF_K_BITS = 0.0140084125377822
REF_SKR_BPS = 700420.626889


# --------------------------------------------------------------------------------------------
# Independent route 1: EPR-equivalent covariance matrices
# --------------------------------------------------------------------------------------------

_I2 = np.eye(2)
_Z2 = np.diag([1.0, -1.0])


def _symplectic_eigenvalues(gamma: np.ndarray) -> np.ndarray:
    """Sorted symplectic eigenvalues: moduli of the eigenvalues of i Omega gamma (pairs)."""
    n_modes = gamma.shape[0] // 2
    omega = np.kron(np.eye(n_modes), np.array([[0.0, 1.0], [-1.0, 0.0]]))
    moduli = np.sort(np.abs(np.linalg.eigvals(1j * omega @ gamma)))
    return moduli[::2]


def _entropy_bits(nus: np.ndarray) -> float:
    total = 0.0
    for nu in nus:
        if nu > 1.0 + 1e-15:
            hi, lo = (nu + 1.0) / 2.0, (nu - 1.0) / 2.0
            total += hi * math.log2(hi) - lo * math.log2(lo)
    return total


def _epr_route(
    va_snu: float, t: float, xi_snu: float, eta: float, v_el_snu: float, beta: float
) -> dict[str, object]:
    v = va_snu + 1.0
    # Modes (A, B, F0, G): Alice's EPR half, Bob's mode after the channel, the trusted-noise
    # EPR pair of variance nu (Bob's heterodyne noise = [(1 - eta) nu + 1] / eta = chi_het).
    nu = 1.0 if eta == 1.0 else 1.0 + 2.0 * v_el_snu / (1.0 - eta)
    g = np.zeros((8, 8))
    g[0:2, 0:2] = v * _I2
    g[2:4, 2:4] = (t * (v - 1.0) + 1.0 + t * xi_snu) * _I2
    g[0:2, 2:4] = g[2:4, 0:2] = math.sqrt(t * (v * v - 1.0)) * _Z2
    g[4:6, 4:6] = g[6:8, 6:8] = nu * _I2
    g[4:6, 6:8] = g[6:8, 4:6] = math.sqrt(nu * nu - 1.0) * _Z2
    nus_ab = _symplectic_eigenvalues(g[0:4, 0:4])
    # Beam splitter of transmittance eta between B and F0: B' = sqrt(eta) B + sqrt(1-eta) F0.
    s = np.eye(8)
    se, sr = math.sqrt(eta), math.sqrt(1.0 - eta)
    s[2:4, 2:4], s[2:4, 4:6], s[4:6, 2:4], s[4:6, 4:6] = se * _I2, sr * _I2, -sr * _I2, se * _I2
    g = s @ g @ s.T
    keep = [0, 1, 4, 5, 6, 7]
    gm = g[np.ix_([2, 3], [2, 3])]
    cross = g[np.ix_(keep, [2, 3])]
    g_cond = g[np.ix_(keep, keep)] - cross @ np.linalg.inv(gm + _I2) @ cross.T
    nus_cond = _symplectic_eigenvalues(g_cond)
    chi_be = _entropy_bits(nus_ab) - _entropy_bits(nus_cond)
    # I_AB from the prepare-and-measure model: x_B = sqrt(eta T/2) x_A + z per quadrature.
    gain2 = eta * t / 2.0
    noise = 1.0 + v_el_snu + gain2 * xi_snu
    i_ab = math.log2((gain2 * va_snu + noise) / noise)
    return {
        "i_ab": i_ab,
        "chi_be": chi_be,
        "k": beta * i_ab - chi_be,
        "nus_ab": nus_ab,
        "nus_cond": nus_cond,
    }


# --------------------------------------------------------------------------------------------
# Independent route 2: literal high-precision transcription of physics.md
# --------------------------------------------------------------------------------------------


def _decimal_key_rate(
    va_snu: float, t: float, xi_snu: float, eta: float, v_el_snu: float, beta: float
) -> float:
    with localcontext() as ctx:
        ctx.prec = 60
        va, tt, xi, e, vel, b = (Decimal(repr(x)) for x in (va_snu, t, xi_snu, eta, v_el_snu, beta))
        ln2 = Decimal(2).ln()

        def log2(x: Decimal) -> Decimal:
            return x.ln() / ln2

        def g_fun(x: Decimal) -> Decimal:
            return Decimal(0) if x <= 0 else (x + 1) * log2(x + 1) - x * log2(x)

        def sqrt0(x: Decimal) -> Decimal:
            return Decimal(0) if x <= 0 else x.sqrt()

        v = va + 1
        chi_line = 1 / tt - 1 + xi
        chi_het = (1 + (1 - e) + 2 * vel) / e
        chi_tot = chi_line + chi_het / tt
        i_ab = log2((v + chi_tot) / (1 + chi_tot))
        a = v**2 * (1 - 2 * tt) + 2 * tt + tt**2 * (v + chi_line) ** 2
        bb = tt**2 * (v * chi_line + 1) ** 2
        c = (
            a * chi_het**2
            + bb
            + 1
            + 2 * chi_het * (v * bb.sqrt() + tt * (v + chi_line))
            + 2 * tt * (v**2 - 1)
        ) / (tt * (v + chi_tot)) ** 2
        d = ((v + bb.sqrt() * chi_het) / (tt * (v + chi_tot))) ** 2
        lam = [
            sqrt0((a + sqrt0(a * a - 4 * bb)) / 2),
            sqrt0((a - sqrt0(a * a - 4 * bb)) / 2),
            sqrt0((c + sqrt0(c * c - 4 * d)) / 2),
            sqrt0((c - sqrt0(c * c - 4 * d)) / 2),
            Decimal(1),
        ]
        chi_be = (
            g_fun((lam[0] - 1) / 2)
            + g_fun((lam[1] - 1) / 2)
            - g_fun((lam[2] - 1) / 2)
            - g_fun((lam[3] - 1) / 2)
            - g_fun((lam[4] - 1) / 2)
        )
        return float(b * i_ab - chi_be)


POINTS = [
    (12.0, REF_T, 0.005, 0.42, 0.18, 0.98),
    (12.0, 10 ** (-0.2 * 50 / 10) / 8, 0.005, 0.42, 0.18, 0.98),
    (4.0, 0.5, 0.02, 0.6, 0.05, 0.95),
    (30.0, 0.9, 0.0, 0.9, 0.01, 0.99),
    (2.0, 0.01, 0.1, 0.3, 0.3, 0.9),
    (12.0, 1.0, 0.05, 0.42, 0.18, 0.98),
]


@pytest.mark.parametrize("point", POINTS)
def test_key_rate_matches_epr_covariance_route(point: tuple[float, ...]) -> None:
    terms = cvqkd.key_rate_terms(*point)
    ref = _epr_route(*point)
    assert terms.mutual_information_bits == pytest.approx(ref["i_ab"], abs=1e-12)
    assert terms.holevo_bound_bits == pytest.approx(ref["chi_be"], abs=1e-9)
    assert terms.key_rate_bits_per_symbol == pytest.approx(ref["k"], abs=1e-9)
    lam = terms.symplectic_eigenvalues
    assert sorted(lam[:2]) == pytest.approx(list(ref["nus_ab"]), abs=1e-9)
    assert sorted(lam[2:]) == pytest.approx(list(ref["nus_cond"]), abs=1e-9)


@pytest.mark.parametrize("point", POINTS)
def test_key_rate_matches_literal_high_precision_transcription(point: tuple[float, ...]) -> None:
    assert cvqkd.key_rate_bits_per_symbol(*point) == pytest.approx(
        _decimal_key_rate(*point), rel=1e-10, abs=1e-13
    )


def test_reference_point_values() -> None:
    assert cvqkd.channel_transmittance(10.0, 0.2, 8) == pytest.approx(REF_T, rel=1e-15)
    terms = cvqkd.key_rate_terms(transmittance=REF_T, **REF)
    assert terms.v == 13.0
    assert terms.chi_line == pytest.approx(1.0 / REF_T - 1.0 + 0.005, rel=1e-15)
    assert terms.chi_het == pytest.approx((2.0 - 0.42 + 0.36) / 0.42, rel=1e-15)
    assert terms.chi_tot == pytest.approx(terms.chi_line + terms.chi_het / REF_T, rel=1e-15)
    assert terms.symplectic_eigenvalues[4] == 1.0
    assert terms.key_rate_bits_per_symbol == pytest.approx(REF_K_BITS, rel=1e-9)
    assert terms.key_rate_bits_per_symbol == pytest.approx(
        _epr_route(12.0, REF_T, **{k: REF[k] for k in ("xi_snu", "eta", "v_el_snu", "beta")})["k"],
        abs=1e-9,
    )
    assert terms.secure
    skr = cvqkd.secret_key_rate_bps(transmittance=REF_T, symbol_rate_hz=50e6, **REF)
    assert skr == pytest.approx(REF_SKR_BPS, rel=1e-9)
    assert skr == pytest.approx(50e6 * terms.key_rate_bits_per_symbol, rel=1e-15)


# --------------------------------------------------------------------------------------------
# Limits and monotonicity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("va_snu", [1.0, 4.0, 12.0, 40.0])
def test_ideal_channel_and_detector_give_heterodyne_capacity(va_snu: float) -> None:
    terms = cvqkd.key_rate_terms(va_snu, 1.0, 0.0, 1.0, 0.0, 1.0)
    assert abs(terms.holevo_bound_bits) < 1e-12  # Eve learns nothing
    assert terms.key_rate_bits_per_symbol == pytest.approx(math.log2(1.0 + va_snu / 2.0), 1e-12)
    near = cvqkd.key_rate_bits_per_symbol(va_snu, 1.0 - 1e-9, 1e-12, 1.0, 0.0, 1.0)
    assert near == pytest.approx(math.log2(1.0 + va_snu / 2.0), rel=1e-6)


def test_lossless_noiseless_channel_with_reference_detector() -> None:
    """T = 1, xi = 0: chi_BE = 0, so K = beta log2[(V + chi_het) / (1 + chi_het)] > 0."""
    terms = cvqkd.key_rate_terms(12.0, 1.0, 0.0, 0.42, 0.18, 0.98)
    chi_het = (2.0 - 0.42 + 0.36) / 0.42
    assert abs(terms.holevo_bound_bits) < 1e-12
    expected = 0.98 * math.log2((13.0 + chi_het) / (1.0 + chi_het))
    assert terms.key_rate_bits_per_symbol == pytest.approx(expected, rel=1e-12)
    assert terms.key_rate_bits_per_symbol > 1.0


def test_key_rate_decreases_with_excess_noise_length_and_increases_with_beta() -> None:
    ks_xi = [
        cvqkd.key_rate_bits_per_symbol(12, REF_T, xi, 0.42, 0.18, 0.98)
        for xi in np.linspace(0.0, 0.3, 31)
    ]
    assert np.all(np.diff(ks_xi) < 0)
    assert ks_xi[-1] < 0 < ks_xi[0]  # K < 0 is returned as is (no key), not clipped
    lengths = np.linspace(0.0, 200.0, 41)
    ks_len = [
        cvqkd.key_rate_bits_per_symbol(
            transmittance=cvqkd.channel_transmittance(length, 0.2, 8), **REF
        )
        for length in lengths
    ]
    assert np.all(np.diff(ks_len) < 0)
    ks_beta = [
        cvqkd.key_rate_bits_per_symbol(12, REF_T, 0.005, 0.42, 0.18, b)
        for b in (0.9, 0.95, 0.98, 1.0)
    ]
    assert np.all(np.diff(ks_beta) > 0)


def test_zero_key_distance() -> None:
    """Reference parameters: no zero crossing over the whole search range (100 dB of channel
    loss = 454.8 km at 0.2 dB/km behind a 1x8 splitter); K ~ 0.14 T even at 500 km, since with
    beta = 0.98 and xi = 5 mSNU referred to the input the output excess noise T xi vanishes with
    T. With xi = 50 mSNU the key vanishes at ~157.45 km, confirmed by the independent EPR route
    on both sides of the crossing."""
    ref_args = {k: REF[k] for k in ("va_snu", "eta", "v_el_snu", "beta")}
    assert cvqkd.zero_key_search_limit_km(0.2, 8) == pytest.approx((100 - 10 * math.log10(8)) / 0.2)
    assert cvqkd.zero_key_search_limit_km(0.2, 1, max_length_km=100.0) == 100.0
    assert cvqkd.zero_key_search_limit_km(0.2, 10**11) == 0.0
    assert (
        cvqkd.zero_key_length_km(xi_snu=0.005, alpha_db_per_km=0.2, n_nodes=8, **ref_args) is None
    )
    assert (
        cvqkd.zero_key_length_km(xi_snu=0.005, alpha_db_per_km=0.0, n_nodes=8, **ref_args) is None
    )
    t_500 = cvqkd.channel_transmittance(500.0, 0.2, 8)
    k_500 = cvqkd.key_rate_bits_per_symbol(transmittance=t_500, **REF)
    assert 0.1 * t_500 < k_500 < 0.2 * t_500
    assert k_500 == pytest.approx(_decimal_key_rate(12.0, t_500, 0.005, 0.42, 0.18, 0.98), 1e-3)

    l_zero = cvqkd.zero_key_length_km(xi_snu=0.05, alpha_db_per_km=0.2, n_nodes=8, **ref_args)
    assert l_zero == pytest.approx(157.454, abs=0.01)
    for length, sign in ((l_zero - 0.05, 1.0), (l_zero + 0.05, -1.0)):
        t = cvqkd.channel_transmittance(length, 0.2, 8)
        assert sign * _epr_route(12.0, t, 0.05, 0.42, 0.18, 0.98)["k"] > 0
    # Already no key at the splitter alone with beta = 0.9.
    args_09 = {**ref_args, "beta": 0.9}
    assert cvqkd.zero_key_length_km(xi_snu=0.005, alpha_db_per_km=0.2, n_nodes=8, **args_09) == 0


def test_channel_transmittance_values_and_errors() -> None:
    assert cvqkd.channel_transmittance(0.0, 0.2, 1) == 1.0
    assert cvqkd.channel_transmittance(50.0, 0.2, 1) == pytest.approx(0.1, rel=1e-14)
    assert cvqkd.channel_transmittance(10.0, 0.2, 8) == pytest.approx(10**-0.2 / 8, rel=1e-15)
    with pytest.raises(ValueError, match="length_km"):
        cvqkd.channel_transmittance(-1.0, 0.2, 8)
    with pytest.raises(ValueError, match="alpha_db_per_km"):
        cvqkd.channel_transmittance(10.0, math.nan, 8)
    with pytest.raises(ValueError, match="n_nodes"):
        cvqkd.channel_transmittance(10.0, 0.2, 0)
    with pytest.raises(ValueError, match="underflows"):
        cvqkd.channel_transmittance(1e5, 1.0, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("va_snu", 0.0),
        ("transmittance", 0.0),
        ("transmittance", 1.01),
        ("xi_snu", -1e-3),
        ("eta", 0.0),
        ("eta", 1.2),
        ("v_el_snu", -0.1),
        ("beta", 0.0),
        ("beta", 1.1),
        ("beta", math.inf),
    ],
)
def test_key_rate_rejects_out_of_range_inputs(name: str, value: float) -> None:
    args = {"transmittance": REF_T, **REF, name: value}
    with pytest.raises(ValueError, match=name):
        cvqkd.key_rate_terms(**args)


def test_secret_key_rate_rejects_bad_symbol_rate() -> None:
    with pytest.raises(ValueError, match="symbol_rate_hz"):
        cvqkd.secret_key_rate_bps(transmittance=REF_T, symbol_rate_hz=0.0, **REF)


@settings(max_examples=150, deadline=None)
@given(
    va_snu=st.floats(1.0, 40.0),
    transmittance=st.floats(1e-3, 1.0),
    xi_pair=st.tuples(st.floats(0.0, 0.3), st.floats(0.0, 0.3)),
    eta=st.floats(0.3, 0.99),
    v_el_snu=st.floats(0.0, 0.3),
    beta=st.floats(0.85, 1.0),
)
def test_property_key_rate_decreases_in_excess_noise(
    va_snu: float,
    transmittance: float,
    xi_pair: tuple[float, float],
    eta: float,
    v_el_snu: float,
    beta: float,
) -> None:
    lo, hi = sorted(xi_pair)
    k_lo = cvqkd.key_rate_bits_per_symbol(va_snu, transmittance, lo, eta, v_el_snu, beta)
    k_hi = cvqkd.key_rate_bits_per_symbol(va_snu, transmittance, hi, eta, v_el_snu, beta)
    assert k_hi <= k_lo + 1e-9  # at T = 1 the rate is flat in xi to rounding (~1e-11)


@settings(max_examples=200, deadline=None)
@given(
    length_km=st.floats(0.0, 1000.0),
    alpha_db_per_km=st.floats(0.0, 1.0),
    n_nodes=st.integers(1, 64),
)
def test_property_transmittance_in_unit_interval(
    length_km: float, alpha_db_per_km: float, n_nodes: int
) -> None:
    t = cvqkd.channel_transmittance(length_km, alpha_db_per_km, n_nodes)
    assert 0.0 < t <= 1.0
    assert t <= 1.0 / n_nodes


# --------------------------------------------------------------------------------------------
# Measurement model and estimator
# --------------------------------------------------------------------------------------------


def test_measurement_model_reproduces_mutual_information() -> None:
    """Var(x_B)/Var(z) of the simulator's model equals (V + chi_tot)/(1 + chi_tot), and the
    simulated moments match the model within 4 standard errors."""
    va, t, xi, eta, v_el = 12.0, 0.3, 0.2, 0.6, 0.1
    gain2 = eta * t / 2.0
    noise = 1.0 + v_el + gain2 * xi
    terms = cvqkd.key_rate_terms(va, t, xi, eta, v_el, 1.0)
    assert math.log2((gain2 * va + noise) / noise) == pytest.approx(
        terms.mutual_information_bits, rel=1e-13
    )
    assert noise / gain2 == pytest.approx(1.0 + terms.chi_tot, rel=1e-13)
    n = 400_000
    data = cvqkd.simulate_heterodyne(n, va, t, xi, eta, v_el, np.random.default_rng(7))
    assert data.n_symbols == n
    for a, b in ((data.x_a, data.x_b), (data.p_a, data.p_b)):
        var_b = gain2 * va + noise
        assert abs(np.var(a) - va) < 4 * va * math.sqrt(2 / n)
        assert abs(np.var(b) - var_b) < 4 * var_b * math.sqrt(2 / n)
        cov = float(np.mean(a * b))
        assert abs(cov - math.sqrt(gain2) * va) < 4 * math.sqrt(va * var_b / n)
    assert abs(float(np.mean(data.x_b * data.p_b))) < 4 * (gain2 * va + noise) / math.sqrt(n)


def test_estimator_at_reference_point_million_symbols() -> None:
    """10^6 symbols at the reference channel: T within 2 % (~6 sigma); xi is statistically
    unresolvable here (sigma ~ 70 mSNU, see the module docstring), so xi is checked against
    its own standard error, which must match the predicted sqrt(2/m) s2 / t^2."""
    data = cvqkd.simulate_heterodyne(1_000_000, 12.0, REF_T, 0.005, 0.42, 0.18, 2024)
    est = cvqkd.estimate_parameters(data.x_a, data.p_a, data.x_b, data.p_b, 0.42, 0.18)
    assert est.n_symbols == 1_000_000
    assert est.transmittance == pytest.approx(REF_T, rel=0.02)
    assert est.transmittance_ci[0] < REF_T < est.transmittance_ci[1]
    gain2 = 0.42 * REF_T / 2
    predicted_se = math.sqrt(2 / 2e6) * (1.18 + gain2 * 0.005) / gain2
    assert est.xi_se_snu == pytest.approx(predicted_se, rel=0.02)
    assert 0.06 < est.xi_se_snu < 0.08
    assert abs(est.xi_snu - 0.005) < 4 * est.xi_se_snu
    assert est.va_snu == pytest.approx(12.0, rel=0.01)


def test_estimator_accuracy_where_excess_noise_is_resolvable() -> None:
    """2x10^6 symbols on a short, clean link: xi within 10 % (or 0.5 mSNU) and T within 2 %."""
    va, t, xi, eta, v_el = 12.0, 0.95, 0.1, 0.9, 0.01
    data = cvqkd.simulate_heterodyne(2_000_000, va, t, xi, eta, v_el, 11)
    est = cvqkd.estimate_parameters(data.x_a, data.p_a, data.x_b, data.p_b, eta, v_el)
    tol_xi = max(0.1 * xi, 0.5e-3)
    assert est.xi_se_snu < tol_xi / 4  # the 10 % check is a >= 4 sigma check
    assert abs(est.xi_snu - xi) < tol_xi
    assert est.transmittance == pytest.approx(t, rel=0.02)
    assert est.xi_ci_snu[0] < xi < est.xi_ci_snu[1]
    assert est.xi_worst_case_snu >= est.xi_ci_snu[1] - 1e-12


@pytest.mark.parametrize(
    ("va", "t", "xi", "eta", "v_el"),
    [(12.0, REF_T, 0.005, 0.42, 0.18), (12.0, 0.95, 0.1, 0.9, 0.01)],
    ids=["reference", "clean-link"],
)
def test_interval_coverage_over_repeated_seeds(
    va: float, t: float, xi: float, eta: float, v_el: float
) -> None:
    """200 repetitions of 2x10^4 symbols: the 95 % and 80 % intervals of T and xi cover the
    truth at the nominal rate within 3 binomial standard errors."""
    n_rep, n_sym = 200, 20_000
    seeds = np.random.SeedSequence(12345).spawn(n_rep)
    hits = {(name, conf): 0 for name in ("T", "xi") for conf in (0.95, 0.8)}
    for seed in seeds:
        data = cvqkd.simulate_heterodyne(n_sym, va, t, xi, eta, v_el, np.random.default_rng(seed))
        for conf in (0.95, 0.8):
            est = cvqkd.estimate_parameters(
                data.x_a, data.p_a, data.x_b, data.p_b, eta, v_el, confidence=conf
            )
            hits["T", conf] += est.transmittance_ci[0] <= t <= est.transmittance_ci[1]
            hits["xi", conf] += est.xi_ci_snu[0] <= xi <= est.xi_ci_snu[1]
    for (name, conf), count in hits.items():
        sigma = math.sqrt(n_rep * conf * (1 - conf))
        assert abs(count - n_rep * conf) <= 3 * sigma, (name, conf, count)


def test_estimator_rejects_bad_inputs() -> None:
    data = cvqkd.simulate_heterodyne(1000, 12.0, 0.5, 0.01, 0.6, 0.1, 3)
    args = (data.x_a, data.p_a, data.x_b, data.p_b)
    with pytest.raises(ValueError, match="not positive"):
        cvqkd.estimate_parameters(data.x_a, data.p_a, -data.x_b, -data.p_b, 0.6, 0.1)
    with pytest.raises(ValueError, match="same length"):
        cvqkd.estimate_parameters(data.x_a, data.p_a, data.x_b[:-1], data.p_b, 0.6, 0.1)
    with pytest.raises(ValueError, match="confidence"):
        cvqkd.estimate_parameters(*args, 0.6, 0.1, confidence=1.0)
    with pytest.raises(ValueError, match="eta"):
        cvqkd.estimate_parameters(*args, 0.0, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        bad = data.x_b.copy()
        bad[5] = np.nan
        cvqkd.estimate_parameters(data.x_a, data.p_a, bad, data.p_b, 0.6, 0.1)
    with pytest.raises(ValueError, match="n_symbols"):
        cvqkd.simulate_heterodyne(0, 12.0, 0.5, 0.01, 0.6, 0.1, 3)


# --------------------------------------------------------------------------------------------
# Shot-noise-unit normalisation
# --------------------------------------------------------------------------------------------


def _raw_captures(
    rng: np.random.Generator, n: int, n0_raw: float, v_el_snu: float, offset_raw: float
) -> tuple[np.ndarray, np.ndarray]:
    """Signal-off capture (shot + electronic noise) and LO-off capture (electronic only)."""
    shot = offset_raw + math.sqrt(n0_raw) * (
        rng.standard_normal(n) + math.sqrt(v_el_snu) * rng.standard_normal(n)
    )
    elec = offset_raw + math.sqrt(n0_raw * v_el_snu) * rng.standard_normal(n)
    return shot, elec


def test_shot_noise_calibration_recovers_n0_and_v_el() -> None:
    n0_raw, v_el, offset = 3.7e-4, 0.18, 0.012  # e.g. V^2 and V at the scope
    n = 1_000_000
    shot, elec = _raw_captures(np.random.default_rng(5), n, n0_raw, v_el, offset)
    cal = cvqkd.calibrate_shot_noise(shot, elec)
    assert cal.n_shot_samples == cal.n_electronic_samples == n
    assert abs(cal.n0_raw - n0_raw) < 4 * cal.n0_se_raw
    assert cal.n0_se_raw == pytest.approx(
        math.sqrt(2 * (n0_raw * 1.18) ** 2 / n + 2 * (n0_raw * v_el) ** 2 / n), rel=0.01
    )
    assert cal.v_el_snu == pytest.approx(v_el, rel=0.02)
    assert cal.offset_raw == pytest.approx(offset, abs=4 * math.sqrt(n0_raw * 1.18 / n))
    snu = cvqkd.normalise_to_snu(shot, cal)
    assert snu.shape == shot.shape
    assert float(np.var(snu, ddof=1)) == pytest.approx(1.0 + cal.v_el_snu, rel=1e-12)
    assert abs(float(np.mean(snu))) < 1e-12


def test_raw_to_snu_to_estimate_end_to_end() -> None:
    """Raw scope units -> calibration -> SNU -> estimator recovers T and the model variance."""
    rng = np.random.default_rng(8)
    n0_raw, v_el, offset, eta, t = 2.5e-3, 0.18, -0.03, 0.42, REF_T
    shot, elec = _raw_captures(rng, 2_000_000, n0_raw, v_el, offset)
    cal = cvqkd.calibrate_shot_noise(shot, elec)
    data = cvqkd.simulate_heterodyne(1_000_000, 12.0, t, 0.005, eta, v_el, rng)
    raw_x = offset + math.sqrt(n0_raw) * data.x_b
    raw_p = offset + math.sqrt(n0_raw) * data.p_b
    x_b, p_b = cvqkd.normalise_to_snu(raw_x, cal), cvqkd.normalise_to_snu(raw_p, cal)
    est = cvqkd.estimate_parameters(data.x_a, data.p_a, x_b, p_b, eta, cal.v_el_snu)
    assert est.transmittance == pytest.approx(t, rel=0.02)
    expected_noise = 1.0 + v_el + eta * t * 0.005 / 2
    assert est.noise_var_snu == pytest.approx(expected_noise, rel=0.01)


def test_calibration_errors() -> None:
    rng = np.random.default_rng(1)
    shot, elec = _raw_captures(rng, 1000, 1.0, 0.2, 0.0)
    with pytest.raises(ValueError, match="no shot noise"):
        cvqkd.calibrate_shot_noise(elec, shot)
    with pytest.raises(ValueError, match="real"):
        cvqkd.calibrate_shot_noise(shot + 0j, elec)
    with pytest.raises(ValueError, match="at least 2"):
        cvqkd.calibrate_shot_noise(shot[:1], elec)
    cal = cvqkd.calibrate_shot_noise(shot, elec)
    with pytest.raises(ValueError, match="real"):
        cvqkd.normalise_to_snu(shot + 1j * shot, cal)

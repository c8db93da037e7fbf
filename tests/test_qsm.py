"""Tests of dsp.qsm: explicit-state simulator against the closed forms of physics.md section 3.

Statistical comparisons use fixed seeds and a 4-sigma tolerance, sigma being the standard error
of the Monte Carlo statistic (binomial for rates, moment-based for variances).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp import qsm

N_SIGMA = 4.0


def _rate_sigma(p: float, n_trials: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 1e-12) / n_trials)


def _assert_check_error_rates(res: qsm.MonteCarloResult, expected: np.ndarray) -> None:
    """Pooled error rate of each check type within N_SIGMA binomial errors of ``expected``."""
    n_checks = res.role_counts[:, :3].sum(axis=0)
    assert np.all(n_checks > 1000)
    sigma = np.sqrt(np.maximum(expected * (1 - expected), 1e-12) / n_checks)
    deviation = np.abs(res.check_error_rates - expected)
    assert np.all(deviation < N_SIGMA * sigma), (res.check_error_rates, expected)


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------


def test_precision_bound_and_standard_quantum_limit_values() -> None:
    assert qsm.precision_bound(0.5, 1000, 4) == pytest.approx(1.0 / (0.5 * 1000 * 16))
    assert qsm.standard_quantum_limit(1000, 4) == pytest.approx(1.0 / 4000)
    # Quantum advantage exactly when the bound beats the SQL, i.e. P_E N > 1.
    for n_enc in (1, 2, 5, 10):
        for p_e in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
            beats_sql = qsm.precision_bound(p_e, 100, n_enc) < qsm.standard_quantum_limit(
                100, n_enc
            )
            assert qsm.has_quantum_advantage(p_e, n_enc) == beats_sql


def test_encoding_probability_range_edges() -> None:
    assert qsm.encoding_probability_range(4) == (0.25, 1.0)
    assert not qsm.has_quantum_advantage(0.25, 4)
    assert qsm.has_quantum_advantage(0.2501, 4)
    assert qsm.has_quantum_advantage(1.0, 4)
    assert not qsm.has_quantum_advantage(1.0, 1)  # N = 1: the range (1, 1] is empty
    for bad in (0.0, -0.1, 1.01, math.nan):
        with pytest.raises(ValueError, match="p_encode"):
            qsm.precision_bound(bad, 10, 2)


def test_headline_detection_probability_formula() -> None:
    assert qsm.detection_probability(0.5, 0) == 0.0
    assert qsm.detection_probability(1.0, 50) == pytest.approx(0.0)  # no checks at P_E = 1
    assert qsm.detection_probability(0.2, 3) == pytest.approx(1.0 - 0.8**3)
    p_d = [qsm.detection_probability(0.5, n) for n in range(20)]
    assert all(b > a for a, b in itertools.pairwise(p_d))


@pytest.mark.parametrize("p_e", [0.05, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("n_touched", [1, 5, 40])
def test_attack_closed_forms(p_e: float, n_touched: int) -> None:
    headline = qsm.detection_probability(p_e, n_touched)
    # Random phase uniform on the circle is the attack the headline formula describes.
    assert qsm.attack_detection_probability("random-phase", p_e, n_touched) == pytest.approx(
        headline, abs=1e-15
    )
    # Intercept-resend is seen by both check sets: 1 - ((5 + 3 P_E)/8)^l >= headline.
    ir = qsm.attack_detection_probability("intercept-resend", p_e, n_touched)
    assert ir == pytest.approx(1.0 - ((5.0 + 3.0 * p_e) / 8.0) ** n_touched, abs=1e-15)
    assert ir >= headline
    if p_e < 1.0:
        assert ir > headline
    assert qsm.attack_detection_probability("none", p_e, n_touched) == 0.0
    # A narrower phase spread is harder to detect.
    narrow = qsm.attack_detection_probability("random-phase", p_e, n_touched, 1, 0.5)
    assert narrow <= headline


def test_intercept_resend_error_rates_single_link() -> None:
    assert qsm.intercept_resend_error_rates(1) == pytest.approx((0.25, 0.25, 0.5))


def test_expected_variance_tends_to_bound() -> None:
    for p_e, nu in ((0.5, 100), (0.2, 1000), (0.9, 5000)):
        expected = qsm.expected_estimator_variance(p_e, nu, 3)
        bound = qsm.precision_bound(p_e, nu, 3)
        assert expected > bound
        assert expected / bound - 1.0 == pytest.approx((1 - p_e) / (p_e * nu), rel=0.2)
    assert qsm.expected_estimator_variance(1.0, 77, 2) == pytest.approx(1.0 / (77 * 4))
    # Series branch for huge samples joins the exact sum smoothly.
    big = qsm.expected_estimator_variance(0.5, 10**12, 2)
    assert big == pytest.approx(qsm.precision_bound(0.5, 10**12, 2) * (1 + 1e-12), rel=1e-15)
    exact = qsm.expected_estimator_variance(0.5, 1_999_000, 2)
    assert exact / qsm.precision_bound(0.5, 1_999_000, 2) - 1 == pytest.approx(0.5e-6, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Explicit states against the closed forms (exact, no sampling)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_parties", [1, 2, 3])
def test_noiseless_round_statistics(n_parties: int) -> None:
    phases = tuple(0.1 * (k + 1) for k in range(n_parties))
    cfg = qsm.QSMConfig(n_pairs=10, p_encode=0.4, n_encodings=3, phases_rad=phases)
    stats = qsm.round_statistics(cfg)
    np.testing.assert_allclose(stats.role_probabilities, [0.15, 0.15, 0.3, 0.4])
    np.testing.assert_array_equal(stats.check_error_probabilities, [0.0, 0.0, 0.0])
    c = math.cos(3 * sum(phases))
    np.testing.assert_allclose(
        stats.encoded_outcome_probabilities, [(1 + c) / 2, (1 - c) / 2, 0.0], atol=1e-12
    )
    assert stats.detection_probability == 0.0


@pytest.mark.parametrize("n_parties", [1, 2, 3])
@pytest.mark.parametrize("attack", ["intercept-resend", "random-phase"])
def test_touched_round_statistics_match_derivation(n_parties: int, attack: str) -> None:
    for n_links in range(1, n_parties + 1):
        cfg = qsm.QSMConfig(
            n_pairs=10,
            p_encode=0.3,
            n_encodings=2,
            phases_rad=(0.2,) * n_parties,
            attack=attack,  # type: ignore[arg-type]
            attacked_parties=tuple(range(n_links)),
        )
        stats = qsm.round_statistics(cfg, touched=True)
        if attack == "intercept-resend":
            expected = qsm.intercept_resend_error_rates(n_links)
        else:
            expected = (0.0, 0.0, 0.5)  # only decoys see a uniformly random phase
        np.testing.assert_allclose(stats.check_error_probabilities, expected, atol=1e-12)
        assert stats.detection_probability == pytest.approx(
            qsm.per_round_detection_probability(attack, 0.3, n_links),
            abs=1e-12,  # type: ignore[arg-type]
        )
        # Untouched rounds of the same run are clean.
        assert qsm.round_statistics(cfg, touched=False).detection_probability == 0.0


def test_random_phase_partial_spread_matches_sinc() -> None:
    spread = 1.2
    cfg = qsm.QSMConfig(
        n_pairs=5, p_encode=0.5, n_encodings=1, attack="random-phase", phase_spread_rad=spread
    )
    stats = qsm.round_statistics(cfg, touched=True)
    expected_decoy = 0.5 * (1.0 - math.sin(spread) / spread)
    assert stats.check_error_probabilities[2] == pytest.approx(expected_decoy, abs=1e-12)


@pytest.mark.parametrize("n_parties", [1, 2, 3])
@pytest.mark.parametrize(("p_dep", "p_deph"), [(0.0, 0.2), (0.1, 0.0), (0.07, 0.13)])
def test_noisy_round_statistics_match_closed_forms(
    n_parties: int, p_dep: float, p_deph: float
) -> None:
    phases = tuple(0.15 for _ in range(n_parties))
    cfg = qsm.QSMConfig(
        n_pairs=10,
        p_encode=0.5,
        n_encodings=2,
        phases_rad=phases,
        p_depolarising=p_dep,
        p_dephasing=p_deph,
    )
    stats = qsm.round_statistics(cfg)
    np.testing.assert_allclose(
        stats.check_error_probabilities,
        qsm.noisy_check_error_rates(p_dep, p_deph, n_parties),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        stats.encoded_outcome_probabilities,
        qsm.noisy_encoded_outcome_probabilities(sum(phases), 2, p_dep, p_deph, n_parties),
        atol=1e-12,
    )
    if p_dep == 0.0:
        assert stats.check_error_probabilities[0] == 0.0  # dephasing never flips z


def test_noise_error_rates_increase_and_contrast_decreases() -> None:
    levels = np.linspace(0.0, 0.5, 6)
    for kind in ("dep", "deph"):
        rates = np.array(
            [
                qsm.noisy_check_error_rates(
                    p if kind == "dep" else 0.0, p if kind == "deph" else 0.0
                )
                for p in levels
            ]
        )
        # x checks and decoys get strictly worse with noise; z checks only under depolarising.
        assert np.all(np.diff(rates[:, 1]) > 0)
        assert np.all(np.diff(rates[:, 2]) > 0)
        assert np.all(np.diff(rates[:, 0]) > 0) if kind == "dep" else np.all(rates[:, 0] == 0)
        contrast = [
            np.dot(
                qsm.B_OUTCOME_VALUES,
                qsm.noisy_encoded_outcome_probabilities(
                    0.0, 1, p if kind == "dep" else 0.0, p if kind == "deph" else 0.0
                ),
            )
            for p in levels
        ]
        assert contrast[0] == pytest.approx(1.0)
        assert np.all(np.diff(contrast) < 0)


# --------------------------------------------------------------------------------------------
# Monte Carlo against the closed forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p_e", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n_encodings", [1, 4])
@pytest.mark.parametrize("n_touched", [1, 4, 12])
def test_monte_carlo_detection_rates_grid(p_e: float, n_encodings: int, n_touched: int) -> None:
    n_trials = 20_000
    seed = int(1000 * p_e) + 10 * n_encodings + n_touched
    for attack in ("random-phase", "intercept-resend"):
        cfg = qsm.QSMConfig(
            n_pairs=40,
            p_encode=p_e,
            n_encodings=n_encodings,
            phases_rad=math.pi / (2 * n_encodings),
            attack=attack,  # type: ignore[arg-type]
            n_touched=n_touched,
        )
        res = qsm.monte_carlo(cfg, n_trials, seed=seed)
        predicted = qsm.attack_detection_probability(attack, p_e, n_touched)  # type: ignore[arg-type]
        assert qsm.predicted_detection_probability(cfg) == pytest.approx(predicted, abs=1e-12)
        sigma = _rate_sigma(predicted, n_trials)
        assert abs(res.detection_rate - predicted) < N_SIGMA * sigma, (attack, res.detection_rate)
        if attack == "random-phase":
            headline = qsm.detection_probability(p_e, n_touched)
            assert abs(res.detection_rate - headline) < N_SIGMA * sigma


@pytest.mark.parametrize("attack", ["random-phase", "intercept-resend"])
def test_monte_carlo_per_check_error_rates_under_attack(attack: str) -> None:
    """Every round touched: sigma_z, sigma_x and decoy checks fail at the derived rates."""
    cfg = qsm.QSMConfig(
        n_pairs=20,
        p_encode=0.2,
        n_encodings=2,
        attack=attack,  # type: ignore[arg-type]
    )
    res = qsm.monte_carlo(cfg, 5000, seed=31)
    if attack == "intercept-resend":
        expected = np.array(qsm.intercept_resend_error_rates(1))
    else:
        expected = np.array([0.0, 0.0, 0.5])
    _assert_check_error_rates(res, expected)
    # role frequencies follow ((1-P_E)/4, (1-P_E)/4, (1-P_E)/2, P_E)
    freq = res.role_counts.sum(axis=0) / (20 * 5000)
    sigma = np.sqrt(cfg.role_probabilities * (1 - cfg.role_probabilities) / (20 * 5000))
    assert np.all(np.abs(freq - cfg.role_probabilities) < N_SIGMA * sigma)


def test_intercept_resend_deviates_from_headline() -> None:
    """Intercept-resend is caught measurably more often than 1 - ((3 + P_E)/4)^l."""
    n_trials = 20_000
    cfg = qsm.QSMConfig(
        n_pairs=10, p_encode=0.5, n_encodings=2, attack="intercept-resend", n_touched=3
    )
    res = qsm.monte_carlo(cfg, n_trials, seed=7)
    headline = qsm.detection_probability(0.5, 3)  # 0.330
    derived = qsm.attack_detection_probability("intercept-resend", 0.5, 3)  # 0.479
    assert abs(res.detection_rate - derived) < N_SIGMA * _rate_sigma(derived, n_trials)
    assert res.detection_rate - headline > 20 * _rate_sigma(headline, n_trials)


def test_no_attack_no_noise_never_aborts() -> None:
    cfg = qsm.QSMConfig(n_pairs=500, p_encode=0.5, n_encodings=3, phases_rad=0.3)
    res = qsm.monte_carlo(cfg, 5000, seed=1)
    assert res.detection_rate == 0.0
    assert np.all(res.n_check_errors == 0)
    assert np.all(res.n_encoded + res.n_checks == 500)


@pytest.mark.parametrize("p_e", [0.3, 0.7, 1.0])
@pytest.mark.parametrize("n_encodings", [1, 3, 8])
def test_monte_carlo_variance_attains_bound_at_optimal_phase(p_e: float, n_encodings: int) -> None:
    """At N phi = pi/2 Var(phi_hat) = 1/(n_enc N^2); with P_E nu ~ 4000 it equals the bound."""
    nu = math.ceil(4000 / p_e)
    phi = math.pi / (2 * n_encodings)
    cfg = qsm.QSMConfig(n_pairs=nu, p_encode=p_e, n_encodings=n_encodings, phases_rad=phi)
    res = qsm.monte_carlo(cfg, 10_000, seed=n_encodings * 100 + int(10 * p_e))
    bound = qsm.precision_bound(p_e, nu, n_encodings)
    expected = qsm.expected_estimator_variance(p_e, nu, n_encodings)
    assert abs(expected / bound - 1.0) < 1e-3  # finite-sample excess negligible here
    assert abs(res.variance_rad2 - bound) < N_SIGMA * res.variance_se_rad2
    assert res.variance_se_rad2 < 0.02 * bound  # the test has resolving power


@pytest.mark.parametrize("n_phi_fraction", [0.25, 0.4, 0.6, 0.75])
def test_variance_attains_bound_inside_the_range_for_large_samples(n_phi_fraction: float) -> None:
    """Delta method: (1 - cos^2) / (n N^2 sin^2) = 1/(n N^2) wherever n sin^2(N phi) >> 1."""
    n_enc, p_e, nu = 3, 0.5, 40_000
    phi = n_phi_fraction * math.pi / n_enc
    cfg = qsm.QSMConfig(n_pairs=nu, p_encode=p_e, n_encodings=n_enc, phases_rad=phi)
    res = qsm.monte_carlo(cfg, 10_000, seed=int(100 * n_phi_fraction))
    bound = qsm.precision_bound(p_e, nu, n_enc)
    assert abs(res.variance_rad2 - bound) < N_SIGMA * res.variance_se_rad2


def test_bound_not_attained_at_range_edge() -> None:
    """For n sin^2(N phi) << 1 the estimator is biased and its spread is not 1/(n N^2)."""
    n_enc, p_e, nu = 2, 1.0, 100
    phi = 0.02  # N phi = 0.04, n sin^2 = 0.16
    cfg = qsm.QSMConfig(n_pairs=nu, p_encode=p_e, n_encodings=n_enc, phases_rad=phi)
    res = qsm.monte_carlo(cfg, 5000, seed=3)
    assert res.variance_rad2 < 0.5 * qsm.precision_bound(p_e, nu, n_enc)
    assert abs(res.mean_estimate_rad - phi) > 10 * res.mean_estimate_se_rad


@pytest.mark.parametrize("n_encodings", [1, 4])
def test_estimator_unbiased_over_identifiable_range(n_encodings: int) -> None:
    """Bias -cot(N phi)/(2 N n) stays far below the Monte Carlo error for n ~ 20000."""
    n_trials = 2000
    for k, frac in enumerate(np.linspace(0.15, 0.85, 6)):
        phi = float(frac) * math.pi / n_encodings
        cfg = qsm.QSMConfig(n_pairs=40_000, p_encode=0.5, n_encodings=n_encodings, phases_rad=phi)
        res = qsm.monte_carlo(cfg, n_trials, seed=500 + k + 10 * n_encodings)
        assert np.all((res.estimates_rad >= 0) & (res.estimates_rad <= math.pi / n_encodings))
        assert abs(res.mean_estimate_rad - phi) < N_SIGMA * res.mean_estimate_se_rad, frac


def test_noise_monte_carlo_error_rates_and_visibility_correction() -> None:
    p_dep, p_deph, n_enc, nu, p_e = 0.04, 0.06, 2, 2000, 0.5
    theta = math.pi / (2 * n_enc) * 0.8
    cfg = qsm.QSMConfig(
        n_pairs=nu,
        p_encode=p_e,
        n_encodings=n_enc,
        phases_rad=theta,
        p_depolarising=p_dep,
        p_dephasing=p_deph,
    )
    res = qsm.monte_carlo(cfg, 4000, seed=11)
    _assert_check_error_rates(res, np.array(qsm.noisy_check_error_rates(p_dep, p_deph)))
    # Noise shrinks E[B] by the round-trip visibility V; dividing by V removes the bias.
    probs = qsm.noisy_encoded_outcome_probabilities(theta, n_enc, p_dep, p_deph)
    visibility = (1 - p_dep) ** 2 * (1 - p_deph) ** 2
    assert float(np.dot(qsm.B_OUTCOME_VALUES, probs)) == pytest.approx(
        visibility * math.cos(n_enc * theta)
    )
    mean_b_se = float(np.std(res.mean_b, ddof=1) / math.sqrt(res.n_trials))
    assert abs(float(np.mean(res.mean_b)) - visibility * math.cos(n_enc * theta)) < (
        N_SIGMA * mean_b_se
    )
    naive = qsm.estimate_phase(res.mean_b, n_enc)
    corrected = qsm.estimate_phase(res.mean_b, n_enc, visibility=visibility)
    corrected_se = float(np.std(corrected, ddof=1) / math.sqrt(res.n_trials))
    assert abs(float(np.mean(corrected)) - theta) < N_SIGMA * corrected_se
    assert float(np.mean(naive)) - theta > 10 * corrected_se  # uncorrected estimate is biased
    # With abort-on-any-error a noisy link of 2000 pairs always aborts.
    assert res.detection_rate == 1.0


def test_monte_carlo_is_reproducible_with_seed() -> None:
    cfg = qsm.QSMConfig(
        n_pairs=300, p_encode=0.6, n_encodings=2, phases_rad=0.5, attack="random-phase", n_touched=5
    )
    a = qsm.monte_carlo(cfg, 500, seed=42)
    b = qsm.monte_carlo(cfg, 500, seed=42)
    c = qsm.monte_carlo(cfg, 500, seed=43)
    np.testing.assert_array_equal(a.estimates_rad, b.estimates_rad)
    np.testing.assert_array_equal(a.detected, b.detected)
    assert not np.array_equal(a.estimates_rad, c.estimates_rad)


# --------------------------------------------------------------------------------------------
# Multi-party (GHZ) extension
# --------------------------------------------------------------------------------------------


def test_multiparty_sum_estimate_beats_independent_links() -> None:
    k_parties, n_enc, p_e, nu, n_trials = 3, 2, 0.5, 8000, 4000
    phases = (0.1, 0.3, math.pi / (2 * n_enc) - 0.4)  # sum at the optimal point N theta = pi/2
    theta = sum(phases)
    cfg = qsm.QSMConfig(n_pairs=nu, p_encode=p_e, n_encodings=n_enc, phases_rad=phases)
    ghz = qsm.monte_carlo(cfg, n_trials, seed=21)
    bound = qsm.precision_bound(p_e, nu, n_enc)
    assert abs(ghz.mean_estimate_rad - theta) < N_SIGMA * ghz.mean_estimate_se_rad
    assert abs(ghz.variance_rad2 - bound) < N_SIGMA * ghz.variance_se_rad2

    # K separate Bell links, each estimating its own phase with nu rounds, then summed.
    # Each local phase is shifted to pi/(2N) so every link works at its optimal point.
    summed = np.zeros(n_trials)
    for k in range(k_parties):
        link = qsm.QSMConfig(
            n_pairs=nu, p_encode=p_e, n_encodings=n_enc, phases_rad=math.pi / (2 * n_enc)
        )
        summed += qsm.monte_carlo(link, n_trials, seed=100 + k).estimates_rad
    var_sum = float(np.var(summed, ddof=1))
    reference = qsm.independent_links_sum_variance(p_e, nu, n_enc, k_parties)
    assert reference == pytest.approx(k_parties * bound)
    assert abs(var_sum - reference) < N_SIGMA * reference * math.sqrt(2.0 / (n_trials - 1))
    assert var_sum / ghz.variance_rad2 == pytest.approx(k_parties, rel=0.15)


@pytest.mark.parametrize("attack", ["random-phase", "intercept-resend"])
def test_multiparty_single_link_attack_detected_at_bipartite_rate(attack: str) -> None:
    n_trials, p_e, n_touched = 20_000, 0.4, 5
    cfg = qsm.QSMConfig(
        n_pairs=50,
        p_encode=p_e,
        n_encodings=2,
        phases_rad=(0.2, 0.1, 0.05),
        attack=attack,  # type: ignore[arg-type]
        n_touched=n_touched,
        attacked_parties=(1,),
    )
    res = qsm.monte_carlo(cfg, n_trials, seed=5)
    predicted = qsm.attack_detection_probability(attack, p_e, n_touched)  # type: ignore[arg-type]
    assert abs(res.detection_rate - predicted) < N_SIGMA * _rate_sigma(predicted, n_trials)


# --------------------------------------------------------------------------------------------
# Trajectory simulator (per-pair state vectors, explicit collapse) against the closed forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "n_parties", "attacked"),
    [
        ("intercept-resend", 1, (0,)),
        ("random-phase", 1, (0,)),
        ("intercept-resend", 2, (0, 1)),
    ],
)
def test_trajectories_detection_matches_closed_form(
    attack: str, n_parties: int, attacked: tuple[int, ...]
) -> None:
    n_trials, p_e, n_touched = 10_000, 0.3, 3
    cfg = qsm.QSMConfig(
        n_pairs=n_touched,
        p_encode=p_e,
        n_encodings=2,
        phases_rad=(0.3,) * n_parties,
        attack=attack,  # type: ignore[arg-type]
        attacked_parties=attacked,
    )
    res = qsm.simulate_trajectories(cfg, n_trials, seed=9)
    if attack == "intercept-resend":
        expected = np.array(qsm.intercept_resend_error_rates(len(attacked)))
    else:
        expected = np.array([0.0, 0.0, 0.5])
    _assert_check_error_rates(res, expected)
    predicted = qsm.attack_detection_probability(
        attack,  # type: ignore[arg-type]
        p_e,
        n_touched,
        n_attacked_links=len(attacked),
    )
    assert abs(res.detection_rate - predicted) < N_SIGMA * _rate_sigma(predicted, n_trials)


def test_trajectories_variance_and_bias_match_density_matrix_path() -> None:
    n_enc, p_e, nu, n_trials = 2, 0.8, 400, 1500
    phi = math.pi / (2 * n_enc)
    cfg = qsm.QSMConfig(n_pairs=nu, p_encode=p_e, n_encodings=n_enc, phases_rad=phi)
    res = qsm.simulate_trajectories(cfg, n_trials, seed=4)
    expected = qsm.expected_estimator_variance(p_e, nu, n_enc)
    assert abs(res.variance_rad2 - expected) < N_SIGMA * res.variance_se_rad2
    assert abs(res.mean_estimate_rad - phi) < N_SIGMA * res.mean_estimate_se_rad
    assert np.all(res.n_encoded + res.n_checks == nu)
    assert res.detection_rate == 0.0


def test_trajectories_noise_matches_closed_form() -> None:
    p_dep, p_deph, nu, n_trials, k_parties = 0.1, 0.05, 50, 2000, 2
    cfg = qsm.QSMConfig(
        n_pairs=nu,
        p_encode=0.4,
        n_encodings=1,
        phases_rad=(0.2, 0.3),
        p_depolarising=p_dep,
        p_dephasing=p_deph,
    )
    res = qsm.simulate_trajectories(cfg, n_trials, seed=8)
    _assert_check_error_rates(res, np.array(qsm.noisy_check_error_rates(p_dep, p_deph, k_parties)))
    probs = qsm.noisy_encoded_outcome_probabilities(0.5, 1, p_dep, p_deph, k_parties)
    mean_b = float(np.dot(qsm.B_OUTCOME_VALUES, probs))
    valid = res.mean_b[np.isfinite(res.mean_b)]
    # Pool the B outcomes: the weighted mean over runs is the per-pair mean.
    pooled = float(np.sum(valid * res.n_encoded[np.isfinite(res.mean_b)]) / res.n_encoded.sum())
    pooled_se = math.sqrt((probs[0] + probs[1] - mean_b**2) / res.n_encoded.sum())
    assert abs(pooled - mean_b) < N_SIGMA * pooled_se


# --------------------------------------------------------------------------------------------
# Properties and validation
# --------------------------------------------------------------------------------------------

_channel = st.one_of(
    st.tuples(st.just("dep"), st.floats(0.0, 1.0)),
    st.tuples(st.just("deph"), st.floats(0.0, 1.0)),
    st.tuples(st.just("ir"), st.just(0.0)),
    st.tuples(st.just("phase"), st.floats(1e-3, math.pi)),
    st.tuples(st.just("enc"), st.floats(-10.0, 10.0)),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    n_parties=st.integers(1, 3),
    ops=st.lists(st.tuples(_channel, st.integers(0, 3)), min_size=1, max_size=6),
)
def test_channels_keep_density_matrix_physical(
    n_parties: int, ops: list[tuple[tuple[str, float], int]]
) -> None:
    n_qubits = n_parties + 1
    rho = qsm.density_matrix(qsm.ghz_state(n_parties))
    for (kind, value), qubit_raw in ops:
        qubit = qubit_raw % n_qubits
        kraus = {
            "dep": lambda v: qsm.depolarising_kraus(v),
            "deph": lambda v: qsm.dephasing_kraus(v),
            "ir": lambda v: qsm.intercept_resend_kraus(),
            "phase": lambda v: qsm.random_phase_kraus(v),
            "enc": lambda v: qsm.encoding_unitary(v, 3)[np.newaxis],
        }[kind](value)
        completeness = np.einsum("kji,kjl->il", kraus.conj(), kraus)
        np.testing.assert_allclose(completeness, np.eye(2), atol=1e-12)
        rho = qsm.apply_single_qubit_channel(rho, kraus, qubit, n_qubits)
    assert np.trace(rho).real == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(rho, rho.conj().T, atol=1e-12)
    assert np.linalg.eigvalsh(rho).min() > -1e-12
    for probs in (
        qsm.computational_basis_probabilities(rho),
        qsm.x_basis_probabilities(rho),
        qsm.ghz_basis_probabilities(rho),
    ):
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    p_e=st.floats(1e-3, 1.0),
    n_enc=st.integers(1, 12),
    n_parties=st.integers(1, 3),
    phase=st.floats(-4.0, 4.0),
    attack=st.sampled_from(qsm.ATTACKS),
    p_dep=st.floats(0.0, 1.0),
    p_deph=st.floats(0.0, 1.0),
    touched=st.booleans(),
)
def test_round_statistics_are_probabilities(
    p_e: float,
    n_enc: int,
    n_parties: int,
    phase: float,
    attack: str,
    p_dep: float,
    p_deph: float,
    touched: bool,
) -> None:
    cfg = qsm.QSMConfig(
        n_pairs=10,
        p_encode=p_e,
        n_encodings=n_enc,
        phases_rad=(phase,) * n_parties,
        attack=attack,  # type: ignore[arg-type]
        p_depolarising=p_dep,
        p_dephasing=p_deph,
    )
    stats = qsm.round_statistics(cfg, touched=touched)
    assert stats.role_probabilities.sum() == pytest.approx(1.0)
    assert stats.encoded_outcome_probabilities.sum() == pytest.approx(1.0)
    for arr in (stats.check_error_probabilities, stats.encoded_outcome_probabilities):
        assert np.all((arr >= 0.0) & (arr <= 1.0))
    assert 0.0 <= stats.detection_probability <= 1.0 - p_e + 1e-12


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(mean_b=st.floats(-1.5, 1.5), n_enc=st.integers(1, 20))
def test_estimate_stays_in_identifiable_range(mean_b: float, n_enc: int) -> None:
    est = float(qsm.estimate_phase(mean_b, n_enc))
    assert 0.0 <= est <= math.pi / n_enc + 1e-15
    if abs(mean_b) <= 1.0:
        assert math.cos(n_enc * est) == pytest.approx(mean_b, abs=1e-9)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="p_encode"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.0, n_encodings=2)
    with pytest.raises(ValueError, match="n_pairs"):
        qsm.QSMConfig(n_pairs=0, p_encode=0.5, n_encodings=2)
    with pytest.raises(ValueError, match="n_encodings"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=0)
    with pytest.raises(ValueError, match="n_touched"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=2, attack="random-phase", n_touched=11)
    with pytest.raises(ValueError, match="attacked_parties"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=2, attacked_parties=(1,))
    with pytest.raises(ValueError, match="attack"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=2, attack="mitm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_parties"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=2, phases_rad=(0.0,) * 9)
    with pytest.raises(ValueError, match="p_depolarising"):
        qsm.QSMConfig(n_pairs=10, p_encode=0.5, n_encodings=2, p_depolarising=1.5)


def test_tradeoff_curve_is_monotone() -> None:
    curve = qsm.tradeoff_curve(n_encodings=4, n_repetitions=1000, n_touched=10)
    p = np.asarray(curve["p_encode"])
    assert np.all(np.diff(np.asarray(curve["precision_bound_rad2"])) < 0)  # precision improves
    assert np.all(np.diff(np.asarray(curve["detection_probability"])) < 0)  # security drops
    np.testing.assert_array_equal(curve["quantum_advantage"], p > 0.25)

"""Franson visibility, QBER, BBM92 key rate and the channel planner (dsp/entanglement.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from dsp.entanglement import (
    PairMeasurement,
    bbm92_key_rate_bps,
    binary_entropy,
    correlated_partners,
    fit_visibility,
    format_network_table,
    format_plan,
    network_report,
    pair_process,
    plan_channels,
    qber_from_visibility,
    qber_threshold,
    uncovered_user_pairs,
)

PHASES = np.linspace(0, 2 * np.pi, 16, endpoint=False)


def franson(phase, c0, v, phi0):
    return c0 * (1 + v * np.cos(phase + phi0))


# ---------------------------------------------------------------------------------------------
# Visibility


@pytest.mark.parametrize(("v", "phi0"), [(0.95, 0.3), (0.5, -2.0), (0.02, 1.0), (1.0, np.pi)])
def test_visibility_of_noiseless_fringes_is_exact(v, phi0):
    fit = fit_visibility(PHASES, franson(PHASES, 800.0, v, phi0))
    assert fit.visibility == pytest.approx(v, abs=1e-9)
    assert fit.mean_counts == pytest.approx(800.0, rel=1e-12)
    assert math.cos(fit.phase0_rad - phi0) == pytest.approx(1.0, abs=1e-9)
    assert fit.qber == pytest.approx((1 - v) / 2, abs=1e-9)
    np.testing.assert_allclose(fit.model(PHASES), franson(PHASES, 800.0, v, phi0), atol=1e-7)


def test_visibility_agrees_with_curve_fit_and_its_error_is_calibrated():
    rng = np.random.default_rng(0)
    v_true, c0 = 0.9, 400.0
    fits = [
        fit_visibility(PHASES, rng.poisson(franson(PHASES, c0, v_true, 0.7))) for _ in range(300)
    ]
    v = np.array([f.visibility for f in fits])
    err = np.array([f.visibility_err for f in fits])
    # Monte Carlo scatter vs the reported 1-sigma (chi^2-inflated) error
    assert np.std(v) == pytest.approx(np.mean(err), rel=0.15)
    assert abs(np.mean(v) - v_true) < 3 * np.std(v) / math.sqrt(v.size)
    # same data, scipy's nonlinear least squares with Poisson sigmas
    counts = rng.poisson(franson(PHASES, c0, v_true, 0.7))
    ours = fit_visibility(PHASES, counts)
    popt, pcov = curve_fit(
        franson, PHASES, counts, p0=(counts.mean(), 0.5, 0.0), sigma=np.sqrt(np.maximum(counts, 1))
    )
    assert ours.visibility == pytest.approx(abs(popt[1]), abs=0.5 * ours.visibility_err)
    assert ours.visibility_err == pytest.approx(math.sqrt(pcov[1, 1]), rel=0.3)


def test_extra_scatter_inflates_the_error():
    rng = np.random.default_rng(1)
    clean = rng.poisson(franson(PHASES, 5_000.0, 0.9, 0.0))
    noisy = rng.poisson(franson(PHASES + rng.normal(0, 0.15, PHASES.size), 5_000.0, 0.9, 0.0))
    a, b = fit_visibility(PHASES, clean), fit_visibility(PHASES, noisy)
    assert b.chi2_reduced > 5 * max(a.chi2_reduced, 1.0)
    assert b.visibility_err > 2 * a.visibility_err


def test_visibility_bad_input():
    with pytest.raises(ValueError, match=r"phase_rad: expected at least 3 distinct phases"):
        fit_visibility([0, 0, np.pi, 3 * np.pi], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"counts: expected one count per phase"):
        fit_visibility(PHASES, [1, 2])
    with pytest.raises(ValueError, match=r"counts: expected non-negative"):
        fit_visibility(PHASES[:4], [1, -2, 3, 4])


# ---------------------------------------------------------------------------------------------
# QBER and key rate


def h2(e):
    return 0.0 if e in (0.0, 1.0) else -e * math.log2(e) - (1 - e) * math.log2(1 - e)


def test_qber_and_binary_entropy():
    assert qber_from_visibility(0.9) == pytest.approx(0.05)
    np.testing.assert_allclose(qber_from_visibility([1.0, 0.0]), [0.0, 0.5])
    for e in (0.0, 0.01, 0.11, 0.5, 0.9, 1.0):
        assert binary_entropy(e) == pytest.approx(h2(e), abs=1e-15)
    with pytest.raises(ValueError, match=r"e: expected probabilities in \[0, 1\]"):
        binary_entropy(1.5)


def test_key_rate_formula_and_threshold():
    rate = bbm92_key_rate_bps(1_000.0, 0.02, 0.03)
    assert rate == pytest.approx(1_000.0 * (1 - 1.2 * h2(0.02) - h2(0.03)), rel=1e-12)
    assert bbm92_key_rate_bps(1_000.0, 0.02, 0.03, f=1.0) > rate
    e = qber_threshold()
    assert e == pytest.approx(0.0955, abs=2e-4)  # physics.md: about 9.5 %
    assert 1 - 2 * e == pytest.approx(0.809, abs=1e-3)  # visibility about 80.9 %
    assert bbm92_key_rate_bps(1e4, e - 1e-4, e - 1e-4) > 0
    assert bbm92_key_rate_bps(1e4, e + 1e-4, e + 1e-4) == 0.0
    with pytest.raises(ValueError, match=r"qber_bit: expected a QBER"):
        bbm92_key_rate_bps(1.0, 1.2, 0.0)
    with pytest.raises(ValueError, match=r"f: expected an error-correction"):
        bbm92_key_rate_bps(1.0, 0.0, 0.0, f=0.5)


def test_network_table_per_pair_and_total():
    rows = [
        PairMeasurement(0, 1, 4, 6, 2_000.0, 0.96, 0.94),
        PairMeasurement(0, 2, 4, -4, 1_000.0, 0.95),
        PairMeasurement(1, 2, 6, -6, 500.0, 0.75, 0.70),  # both below 80.9 %: no key
    ]
    rep = network_report(rows)
    assert [r.qber_z for r in rep.rows] == pytest.approx([0.02, 0.025, 0.125])
    assert rep.rows[1].visibility_x == 0.95
    assert rep.rows[0].key_rate_bps == pytest.approx(2_000 * (1 - 1.2 * h2(0.02) - h2(0.03)))
    assert rep.rows[2].key_rate_bps == 0.0
    assert rep.total_key_rate_bps == pytest.approx(sum(r.key_rate_bps for r in rep.rows))
    assert rep.n_users == 3
    # key from X instead: bit and phase errors swap
    rep_x = network_report(rows, key_basis="X")
    assert rep_x.rows[0].key_rate_bps == pytest.approx(2_000 * (1 - 1.2 * h2(0.03) - h2(0.02)))
    text = format_network_table(rep)
    assert "0-1" in text and "4/6" in text and "network total" in text
    assert f"{rep.total_key_rate_bps:.1f}" in text
    with pytest.raises(ValueError, match=r"key_basis: expected 'Z' or 'X'"):
        network_report(rows, key_basis="Y")


# ---------------------------------------------------------------------------------------------
# Channel planner


def brute_check(plan):
    """Independent check: labels unique, no pump, every user pair linked, pair list complete."""
    pa, pb = plan.pump_labels
    sums = {
        2 * pa: f"degenerate pump {pa}",
        2 * pb: f"degenerate pump {pb}",
        pa + pb: "nondegenerate",
    }
    labels = [x for s in plan.assignment for x in s]
    assert len(labels) == len(set(labels)) == plan.n_channels
    assert not set(labels) & {pa, pb}
    expect = set()
    for u, v in itertools.combinations(range(plan.n_users), 2):
        links = [
            (u, v, x, y, sums[x + y])
            for x, y in itertools.product(plan.assignment[u], plan.assignment[v])
            if x + y in sums and x != y
        ]
        assert links, f"users {u} and {v} share no correlated pair"
        expect.update(links)
    got = {(p.user_a, p.user_b, p.label_a, p.label_b, p.process) for p in plan.pairs}
    assert got == expect
    assert uncovered_user_pairs(plan.assignment, plan.pump_labels) == []


@pytest.fixture(scope="module")
def plan10():
    return plan_channels(10)


def test_reference_build_four_users_on_six_channels():
    plan = plan_channels(4)
    assert plan.n_channels == 6
    assert plan.single_state_channels == 12
    brute_check(plan)
    assert all(plan.pairs_between(u, v) for u, v in itertools.combinations(range(4), 2))
    text = format_plan(plan)
    assert "4 users" in text and "6 channels" in text and "needs 12" in text
    assert len(text.splitlines()) == 1 + 4 + 1 + len(plan.pairs)


def test_ten_users_on_34_channels(plan10):
    """physics.md: the scheme connects 10 users with 34 channels (90 for a single-state source)."""
    assert plan10.n_channels <= 34
    assert plan10.single_state_channels == 90
    brute_check(plan10)
    lo, hi = plan10.label_window
    assert all(lo <= x <= hi for s in plan10.assignment for x in s)
    # every user needs ceil(9 / 3) = 3 channels at least: each channel has 3 partners
    assert min(len(s) for s in plan10.assignment) >= 3


def _connected_subsets(adj, size):
    """All connected vertex sets of ``size`` (grown one neighbour at a time)."""
    sets = {frozenset([v]) for v in adj}
    for _ in range(size - 1):
        sets = {s | {w} for s in sets for v in s for w in adj[v] if w not in s}
    return sets


def test_six_channels_are_optimal_for_four_users():
    """Exhaustive over the default window: no 5 labels carry the 6 links of 4 users.

    Such a plan needs >= 6 edges among its 5 labels; with <= 3 partners per label a 5-vertex
    graph with 6 edges is connected or a K4 plus a vertex, and the graph has no K4.
    """
    window = range(-30, 41)
    labels = [x for x in window if x not in (0, 10)]
    adj = {x: [y for y in correlated_partners(x) if y in labels] for x in labels}
    for x in labels:  # no K4
        for a, b, c in itertools.combinations(adj[x], 3):
            assert not (b in adj[a] and c in adj[a] and c in adj[b])
    colourings = np.array(list(itertools.product(range(4), repeat=5)))
    bit = {(a, b): 1 << k for k, (a, b) in enumerate(itertools.combinations(range(4), 2))}
    checked = 0
    for subset in _connected_subsets(adj, 5):
        nodes = sorted(subset)
        edges = [
            (i, j) for i, j in itertools.combinations(range(5), 2) if nodes[j] in adj[nodes[i]]
        ]
        if len(edges) < 6:
            continue
        checked += 1
        mask = np.zeros(len(colourings), np.int64)
        for i, j in edges:
            ci, cj = colourings[:, i], colourings[:, j]
            lo, hi = np.minimum(ci, cj), np.maximum(ci, cj)
            for (a, b), m in bit.items():
                mask |= np.where((lo == a) & (hi == b), m, 0)
        assert not np.any(mask == 63), f"5-channel plan on {nodes}"
    assert checked > 0  # there are dense 5-label sets (e.g. 5, -5, 15, -15, 25): all fail


def test_three_users_share_a_triangle():
    plan = plan_channels(3)
    assert plan.n_channels == 3
    brute_check(plan)
    # the only triangle of the graph: 5 + -5 = 0, 5 + 15 = 20, -5 + 15 = 10
    assert sorted(x for s in plan.assignment for x in s) == [-5, 5, 15]


@pytest.mark.parametrize(
    ("n", "pumps", "bound"), [(2, (0, 10), 2), (6, (3, 7), 12), (7, (0, 10), 18)]
)
def test_other_sizes_and_pumps_give_valid_plans(n, pumps, bound):
    plan = plan_channels(n, pumps)
    brute_check(plan)
    assert plan.n_channels <= bound
    assert n == 2 or bound < plan.single_state_channels


def test_plan_restricted_to_given_labels():
    ports = list(range(-55, 66, 10))  # only labels = 5 mod 10
    plan = plan_channels(5, labels=ports)
    brute_check(plan)
    assert {x for s in plan.assignment for x in s} <= set(ports)


def test_partners_and_processes():
    assert correlated_partners(2) == (-2, 8, 18)  # physics.md's example
    assert correlated_partners(5) == (-5, 15)  # 5 + 5 = 10 would be the same channel
    assert correlated_partners(20) == (-20, -10)  # its sum-20 partner would be pump 0
    assert correlated_partners(0) == ()
    assert pair_process(2, -2) == "degenerate pump 0"
    assert pair_process(2, 18) == "degenerate pump 10"
    assert pair_process(2, 8) == "nondegenerate"
    assert pair_process(2, 3) is None and pair_process(0, 10) is None


def test_planner_bad_input():
    with pytest.raises(ValueError, match=r"n_users: expected an integer >= 1"):
        plan_channels(0)
    with pytest.raises(ValueError, match=r"pump_labels: the two pumps must differ"):
        plan_channels(3, (5, 5))
    with pytest.raises(ValueError, match=r"label_window: expected \(lowest, highest\)"):
        plan_channels(3, label_window=(10, -10))
    with pytest.raises(ValueError, match=r"label_window/labels: 4 labels .* too few"):
        plan_channels(6, labels=[1, 9, 2, 8])
    with pytest.raises(ValueError, match=r"assignment: channel 4 given to users 0 and 1"):
        uncovered_user_pairs([[4], [4, 6]])

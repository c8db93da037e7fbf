"""Entanglement-network analysis: Franson visibility, QBER, BBM92 key rate, channel planner.

physics.md section 2.

Franson visibility
------------------
Coincidences of two users measuring with unbalanced interferometers at phases alpha and beta
follow ``C(phi) = C0 [1 + V cos(phi + phi0)]`` with ``phi = alpha + beta``. Writing
``C = a + b cos(phi) + c sin(phi)`` makes the fit linear: a = C0, b = C0 V cos(phi0),
c = -C0 V sin(phi0), so

    V = sqrt(b^2 + c^2) / a,      phi0 = atan2(-c, b).

:func:`fit_visibility` solves it by weighted least squares with Poisson weights 1/C_model
(two re-weighting passes), takes the parameter covariance (A^T W A)^-1, inflates it by the
reduced chi^2 when that exceeds 1 (extra scatter, e.g. phase noise) and propagates it to V and
phi0 to first order. V is the raw visibility (accidentals not subtracted).

QBER and key rate
-----------------
QBER = (1 - V) / 2 per basis (Z: phases 0/pi, X: pi/2, 3pi/2). The asymptotic BBM92 key rate
(key from the Z basis, phase error from X) is

    SKR = N_sift [1 - f H2(e_bit) - H2(e_phase)],     H2(e) = -e log2 e - (1 - e) log2(1 - e)

with f = 1.2 (error-correction inefficiency), clipped at 0. With e_bit = e_phase = e it vanishes
at H2(e) = 1 / (1 + f): e = 9.55 % for f = 1.2, i.e. V = 80.90 % (:func:`qber_threshold`).

Channel planner
---------------
Pumps at labels p_a, p_b; a channel x is correlated with y != x when
x + y in {2 p_a, 2 p_b, p_a + p_b} (degenerate SFWM of either pump, or non-degenerate), so
each channel has at most three partners; pump labels are not channels. Each channel goes to
one user, and every pair of users must share a correlated pair of channels. Equivalently:
choose a vertex set of the correlation graph and colour it with the N users so that every pair
of colours is joined by an edge (a complete, not necessarily proper, colouring); minimise the
number of vertices. A user needs at least ceil((N - 1) / 3) channels, and K channels give at
most 3K/2 edges for N(N - 1)/2 user pairs.

:func:`plan_channels` searches labels in ``label_window`` (default
[min(p) - 3 d, max(p) + 3 d], d = |p_b - p_a|: 7 pump spacings of spectrum) or in an explicit
``labels`` list:

1. Constructive start: for each uncovered user pair, give one user a free partner of a channel
   the other already holds (one new channel) or else a fresh correlated pair (two).
2. Descent: try K - 1 channels, first by dropping the channel whose loss uncovers the fewest
   user pairs, then from random placements, each repaired by a tabu search (Numba kernel). A
   state is a set of (label, user) tokens and its cost the number of uncovered user pairs;
   a move recolours a token or relocates it to any free label; the best non-tabu move is
   taken (ties broken towards more edges between different users, then at random;
   aspiration on a new best), and a token may not go back to the (label, user) it left for
   10-20 moves. On success K drops by one; when every attempt fails (or K reaches the
   counting bound max(N ceil((N-1)/3), ceil(N(N-1)/3))) the last feasible plan is returned.

The search is a heuristic, not a proof of optimality. It reproduces physics.md's 6 channels
for 4 users (optimal: no 5 labels carry 4 users' 6 distinct pairs, checked exhaustively in
the tests) and 34 for 10 users in the default window (N(N - 1) = 12 and 90 for a
single-state source). More spectrum buys fewer channels: within [-60, 70] some seeds find 33
for 10 users, and with only the labels = 5 (mod 10) from -155 to 165 (one chain of the graph,
31 pump spacings wide) it finds 32.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

__all__ = [
    "ChannelPlan",
    "NetworkReport",
    "PairMeasurement",
    "PairReport",
    "PlanPair",
    "VisibilityFit",
    "bbm92_key_rate_bps",
    "binary_entropy",
    "correlated_partners",
    "fit_visibility",
    "format_network_table",
    "format_plan",
    "network_report",
    "pair_process",
    "plan_channels",
    "qber_from_visibility",
    "qber_threshold",
    "uncovered_user_pairs",
]

F64 = npt.NDArray[np.float64]

DEFAULT_F = 1.2


# ---------------------------------------------------------------------------------------------
# Franson visibility


@dataclass(frozen=True)
class VisibilityFit:
    """Fit of C(phi) = C0 [1 + V cos(phi + phi0)]."""

    visibility: float
    visibility_err: float
    phase0_rad: float
    phase0_err_rad: float
    mean_counts: float  #: C0
    chi2_reduced: float
    n_points: int

    @property
    def qber(self) -> float:
        """(1 - V) / 2."""
        return qber_from_visibility(self.visibility)

    def model(self, phase_rad: npt.ArrayLike) -> F64:
        """Fitted counts at ``phase_rad``."""
        phi = np.asarray(phase_rad, dtype=np.float64)
        return self.mean_counts * (1.0 + self.visibility * np.cos(phi + self.phase0_rad))


def fit_visibility(phase_rad: npt.ArrayLike, counts: npt.ArrayLike) -> VisibilityFit:
    """Franson visibility from coincidence counts vs the phase sum alpha + beta (rad).

    Weighted linear least squares on (1, cos phi, sin phi) with Poisson weights; needs at
    least 3 distinct phases (4 for a chi^2).
    """
    phi = np.asarray(phase_rad, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    if phi.ndim != 1 or y.shape != phi.shape:
        raise ValueError(f"counts: expected one count per phase ({phi.shape}), got shape {y.shape}")
    if not (np.all(np.isfinite(phi)) and np.all(np.isfinite(y))):
        raise ValueError("phase_rad/counts: expected finite values")
    if np.any(y < 0):
        raise ValueError("counts: expected non-negative coincidence counts")
    if np.unique(np.round(np.mod(phi, 2 * np.pi), 12)).size < 3:
        raise ValueError("phase_rad: expected at least 3 distinct phases (mod 2 pi)")
    design = np.stack([np.ones_like(phi), np.cos(phi), np.sin(phi)], axis=1)
    var = np.maximum(y, 1.0)
    p = np.zeros(3)
    for _ in range(3):
        w = 1.0 / var
        normal = design.T @ (design * w[:, None])
        p = np.linalg.solve(normal, design.T @ (w * y))
        var = np.maximum(design @ p, 1.0)
    w = 1.0 / var
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.inv(normal)
    dof = phi.size - 3
    chi2 = float(np.sum(w * (y - design @ p) ** 2))
    chi2_red = chi2 / dof if dof > 0 else math.nan
    if dof > 0 and chi2_red > 1.0:
        cov = cov * chi2_red
    a, b, c = (float(v) for v in p)
    if a <= 0:
        raise ValueError("counts: the fitted mean is not positive; no coincidences?")
    amp = math.hypot(b, c)
    v = amp / a
    if amp > 0:
        g_v = np.array([-v / a, b / (a * amp), c / (a * amp)])
        g_p = np.array([0.0, c / amp**2, -b / amp**2])
        v_err = float(math.sqrt(max(g_v @ cov @ g_v, 0.0)))
        p_err = float(math.sqrt(max(g_p @ cov @ g_p, 0.0)))
    else:
        v_err = float(math.sqrt(cov[1, 1] + cov[2, 2]) / a)
        p_err = math.pi
    return VisibilityFit(v, v_err, math.atan2(-c, b), p_err, a, chi2_red, int(phi.size))


# ---------------------------------------------------------------------------------------------
# QBER and key rate


def qber_from_visibility(visibility: float | npt.ArrayLike) -> float | F64:
    """QBER = (1 - V) / 2 (V raw visibility in [0, 1])."""
    v = np.asarray(visibility, dtype=np.float64)
    out = (1.0 - v) / 2.0
    return float(out) if out.ndim == 0 else out


def binary_entropy(e: float | npt.ArrayLike) -> float | F64:
    """H2(e) = -e log2 e - (1 - e) log2(1 - e), with H2(0) = H2(1) = 0."""
    x = np.asarray(e, dtype=np.float64)
    if np.any((x < 0) | (x > 1)):
        raise ValueError(f"e: expected probabilities in [0, 1], got {e!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -x * np.log2(x) - (1.0 - x) * np.log2(1.0 - x)
    h = np.where((x == 0) | (x == 1), 0.0, h)
    return float(h) if h.ndim == 0 else h


def bbm92_key_rate_bps(
    sifted_rate_hz: float, qber_bit: float, qber_phase: float, *, f: float = DEFAULT_F
) -> float:
    """Asymptotic BBM92 secret key rate N_sift [1 - f H2(e_bit) - H2(e_phase)], clipped at 0."""
    if not sifted_rate_hz >= 0:
        raise ValueError(f"sifted_rate_hz: expected >= 0, got {sifted_rate_hz}")
    if not f >= 1.0:
        raise ValueError(f"f: expected an error-correction inefficiency >= 1, got {f}")
    for name, e in (("qber_bit", qber_bit), ("qber_phase", qber_phase)):
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"{name}: expected a QBER in [0, 1], got {e}")
    fraction = 1.0 - f * float(binary_entropy(qber_bit)) - float(binary_entropy(qber_phase))
    return max(0.0, sifted_rate_hz * fraction)


def qber_threshold(f: float = DEFAULT_F) -> float:
    """QBER (both bases equal) at which the BBM92 key rate reaches zero."""
    if not f >= 1.0:
        raise ValueError(f"f: expected >= 1, got {f}")
    return float(brentq(lambda e: 1.0 - (1.0 + f) * float(binary_entropy(e)), 1e-9, 0.5))


@dataclass(frozen=True)
class PairMeasurement:
    """What was measured for one pair of users.

    ``sifted_rate_hz``: coincidences per second kept after basis sifting (central Franson
    peak, matching bases). ``visibility_x`` defaults to ``visibility_z``.
    """

    user_a: int
    user_b: int
    channel_a: int
    channel_b: int
    sifted_rate_hz: float
    visibility_z: float
    visibility_x: float | None = None


@dataclass(frozen=True)
class PairReport:
    """One row of the network table."""

    user_a: int
    user_b: int
    channel_a: int
    channel_b: int
    sifted_rate_hz: float
    visibility_z: float
    visibility_x: float
    qber_z: float
    qber_x: float
    key_rate_bps: float


@dataclass(frozen=True)
class NetworkReport:
    """Per-pair table and network total."""

    rows: tuple[PairReport, ...]
    total_key_rate_bps: float
    f: float

    @property
    def n_users(self) -> int:
        return len({u for r in self.rows for u in (r.user_a, r.user_b)})


def network_report(
    measurements: Iterable[PairMeasurement], *, f: float = DEFAULT_F, key_basis: str = "Z"
) -> NetworkReport:
    """QBER per basis and BBM92 key rate per user pair, and the network total.

    The key comes from ``key_basis`` ("Z" or "X"; its QBER is e_bit), the other basis gives
    the phase error.
    """
    if key_basis not in ("Z", "X"):
        raise ValueError(f"key_basis: expected 'Z' or 'X', got {key_basis!r}")
    rows = []
    for m in measurements:
        vz = float(m.visibility_z)
        vx = vz if m.visibility_x is None else float(m.visibility_x)
        for name, v in (("visibility_z", vz), ("visibility_x", vx)):
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"{name}: expected a visibility in [-1, 1], got {v}")
        qz = float(qber_from_visibility(vz))
        qx = float(qber_from_visibility(vx))
        e_bit, e_phase = (qz, qx) if key_basis == "Z" else (qx, qz)
        key = bbm92_key_rate_bps(
            float(m.sifted_rate_hz), min(max(e_bit, 0.0), 1.0), min(max(e_phase, 0.0), 1.0), f=f
        )
        rows.append(
            PairReport(
                int(m.user_a),
                int(m.user_b),
                int(m.channel_a),
                int(m.channel_b),
                float(m.sifted_rate_hz),
                vz,
                vx,
                qz,
                qx,
                key,
            )
        )
    return NetworkReport(tuple(rows), float(sum(r.key_rate_bps for r in rows)), f)


def format_network_table(report: NetworkReport) -> str:
    """The per-pair table as text, with the network total."""
    head = (
        f"{'users':>7s} {'channels':>10s} {'sifted/s':>10s} {'V_Z':>7s} {'V_X':>7s} "
        f"{'QBER_Z':>7s} {'QBER_X':>7s} {'key bit/s':>10s}"
    )
    lines = [head]
    for r in report.rows:
        lines.append(
            f"{f'{r.user_a}-{r.user_b}':>7s} {f'{r.channel_a}/{r.channel_b}':>10s} "
            f"{r.sifted_rate_hz:10.1f} {100 * r.visibility_z:6.2f}% {100 * r.visibility_x:6.2f}% "
            f"{100 * r.qber_z:6.2f}% {100 * r.qber_x:6.2f}% {r.key_rate_bps:10.1f}"
        )
    lines.append(
        f"network total: {report.total_key_rate_bps:.1f} bit/s over {len(report.rows)} pairs "
        f"(f = {report.f:g})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Channel planner


def _pumps(pump_labels: Sequence[int]) -> tuple[int, int]:
    if len(pump_labels) != 2:
        raise ValueError(f"pump_labels: expected two labels, got {pump_labels!r}")
    pa, pb = (int(p) for p in pump_labels)
    if pa == pb:
        raise ValueError(f"pump_labels: the two pumps must differ, got {pa} and {pb}")
    return pa, pb


def _sums(pumps: tuple[int, int]) -> dict[int, str]:
    pa, pb = pumps
    return {
        2 * pa: f"degenerate pump {pa}",
        2 * pb: f"degenerate pump {pb}",
        pa + pb: "nondegenerate",
    }


def pair_process(x: int, y: int, pump_labels: Sequence[int] = (0, 10)) -> str | None:
    """Which SFWM process correlates channels x and y, or None if none does."""
    pumps = _pumps(pump_labels)
    if x == y or x in pumps or y in pumps:
        return None
    return _sums(pumps).get(int(x) + int(y))


def correlated_partners(label: int, pump_labels: Sequence[int] = (0, 10)) -> tuple[int, ...]:
    """The (at most three) channels correlated with ``label`` (pump labels excluded)."""
    pumps = _pumps(pump_labels)
    if label in pumps:
        return ()
    return tuple(
        sorted({s - label for s in _sums(pumps) if s - label != label and s - label not in pumps})
    )


@dataclass(frozen=True)
class PlanPair:
    """A correlated channel pair shared by two users."""

    user_a: int
    user_b: int
    label_a: int  #: user_a's channel
    label_b: int  #: user_b's channel
    process: str  #: "degenerate pump p" or "nondegenerate"


@dataclass(frozen=True)
class ChannelPlan:
    """Channels of every user and the correlated pairs that connect them."""

    n_users: int
    pump_labels: tuple[int, int]
    label_window: tuple[int, int]
    assignment: tuple[tuple[int, ...], ...]  #: assignment[u] = user u's channel labels
    pairs: tuple[PlanPair, ...]  #: every correlated pair between two different users

    @property
    def n_channels(self) -> int:
        return sum(len(s) for s in self.assignment)

    @property
    def single_state_channels(self) -> int:
        """N (N - 1): channels a conventional single-state source needs."""
        return self.n_users * (self.n_users - 1)

    def pairs_between(self, u: int, v: int) -> tuple[PlanPair, ...]:
        """The correlated pairs shared by users u and v."""
        a, b = min(u, v), max(u, v)
        return tuple(p for p in self.pairs if (p.user_a, p.user_b) == (a, b))


def uncovered_user_pairs(
    assignment: Sequence[Iterable[int]], pump_labels: Sequence[int] = (0, 10)
) -> list[tuple[int, int]]:
    """User pairs (u < v) that share no correlated channel pair (empty for a valid plan)."""
    pumps = _pumps(pump_labels)
    sets = [set(int(x) for x in s) for s in assignment]
    seen: dict[int, int] = {}
    for u, s in enumerate(sets):
        for x in s:
            if x in pumps:
                raise ValueError(f"assignment: user {u} holds pump label {x}")
            if x in seen:
                raise ValueError(f"assignment: channel {x} given to users {seen[x]} and {u}")
            seen[x] = u
    sums = _sums(pumps)
    out = []
    for u, v in itertools.combinations(range(len(sets)), 2):
        if not any((x + y) in sums and x != y for x in sets[u] for y in sets[v]):
            out.append((u, v))
    return out


@nb.njit(cache=True, nogil=True)
def _remove_token(adj, occ, cnt, v, user):
    """Take the edges of label v (held by ``user``) out of ``cnt``.

    Returns (newly uncovered user pairs, edges removed). Mutates ``cnt`` only.
    """
    d = 0
    e = 0
    for k in range(adj.shape[1]):
        w = adj[v, k]
        if w < 0:
            continue
        other = occ[w]
        if other < 0 or other == user:
            continue
        e += 1
        cnt[user, other] -= 1
        cnt[other, user] -= 1
        if cnt[user, other] == 0:
            d += 1
    return d, e


@nb.njit(cache=True, nogil=True)
def _add_token(adj, occ, cnt, v, user):
    """Put the edges of label v (held by ``user``) into ``cnt``."""
    for k in range(adj.shape[1]):
        w = adj[v, k]
        if w < 0:
            continue
        other = occ[w]
        if other < 0 or other == user:
            continue
        cnt[user, other] += 1
        cnt[other, user] += 1


@nb.njit(cache=True, nogil=True)
def _add_gain(adj, occ, cnt, t, user):
    """(Change in uncovered pairs, edges gained) if free label t went to ``user``."""
    d = 0
    e = 0
    seen0 = -1
    seen1 = -1
    for k in range(adj.shape[1]):
        w = adj[t, k]
        if w < 0:
            continue
        other = occ[w]
        if other < 0 or other == user:
            continue
        e += 1
        if other in (seen0, seen1):
            continue
        if cnt[user, other] == 0:
            d -= 1
        if seen0 < 0:
            seen0 = other
        else:
            seen1 = other
    return d, e


@nb.njit(cache=True, nogil=True)
def _tabu_kernel(adj, n_users, occ, max_iters, seed, tenure):
    """Tabu search for a complete colouring; mutates ``occ`` (label -> user or -1).

    Move cost: change in uncovered user pairs, ties broken towards more edges between
    different users (denser placements leave fewer channels with unused partners).
    Returns (uncovered user pairs at the end, iterations used). Stops at 0 uncovered.
    """
    np.random.seed(seed)
    n_labels = adj.shape[0]
    cnt = np.zeros((n_users, n_users), np.int64)
    for v in range(n_labels):
        for k in range(adj.shape[1]):
            w = adj[v, k]
            if w > v and occ[v] >= 0 and occ[w] >= 0 and occ[w] != occ[v]:
                cnt[occ[v], occ[w]] += 1
                cnt[occ[w], occ[v]] += 1
    unc = 0
    for a in range(n_users):
        for b in range(a + 1, n_users):
            if cnt[a, b] == 0:
                unc += 1
    best = unc
    tabu_until = np.zeros((n_labels, n_users), np.int64)
    for it in range(max_iters):
        if unc == 0:
            return 0, it
        best_cost = 1 << 30
        best_d = 0
        bv = -1
        bt = -1
        bu = -1
        ties = 0
        for v in range(n_labels):
            a = occ[v]
            if a < 0:
                continue
            d0, e0 = _remove_token(adj, occ, cnt, v, a)
            occ[v] = -1
            for t in range(n_labels):
                if occ[t] >= 0:
                    continue
                for u in range(n_users):
                    if t == v:
                        if u == a:
                            continue
                    elif u != a:
                        continue
                    d1, e1 = _add_gain(adj, occ, cnt, t, u)
                    d = d0 + d1
                    if tabu_until[t, u] > it and unc + d >= best:
                        continue
                    cost = 1024 * d - (e1 - e0)
                    if cost < best_cost:
                        best_cost = cost
                        best_d = d
                        bv = v
                        bt = t
                        bu = u
                        ties = 1
                    elif cost == best_cost:
                        ties += 1
                        if np.random.random() * ties < 1.0:
                            best_d = d
                            bv = v
                            bt = t
                            bu = u
            occ[v] = a
            _add_token(adj, occ, cnt, v, a)
        if bv < 0:
            continue
        a = occ[bv]
        _remove_token(adj, occ, cnt, bv, a)
        occ[bv] = -1
        occ[bt] = bu
        _add_token(adj, occ, cnt, bt, bu)
        tabu_until[bv, a] = it + tenure + np.random.randint(0, tenure + 1)
        unc += best_d
        if unc < best:
            best = unc
    return unc, max_iters


def _graph(labels: list[int], pumps: tuple[int, int]) -> npt.NDArray[np.int64]:
    index = {x: i for i, x in enumerate(labels)}
    adj = np.full((len(labels), 3), -1, np.int64)
    for i, x in enumerate(labels):
        partners = [index[y] for y in correlated_partners(x, pumps) if y in index]
        adj[i, : len(partners)] = partners
    return adj


def _uncovered_count(adj: npt.NDArray[np.int64], occ: npt.NDArray[np.int64], n: int) -> int:
    covered = set()
    for v in np.nonzero(occ >= 0)[0]:
        for w in adj[v]:
            if w >= 0 and occ[w] >= 0 and occ[w] != occ[v]:
                covered.add((min(occ[v], occ[w]), max(occ[v], occ[w])))
    return n * (n - 1) // 2 - len(covered)


def _constructive(
    adj: npt.NDArray[np.int64], n: int, order: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Greedy plan: per uncovered user pair add one channel next to a held one, else two."""
    occ = np.full(adj.shape[0], -1, np.int64)
    held: list[list[int]] = [[] for _ in range(n)]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    covered: set[tuple[int, int]] = set()

    def give(v: int, u: int) -> None:
        occ[v] = u
        held[u].append(v)
        for w in adj[v]:
            if w >= 0 and occ[w] >= 0 and occ[w] != u:
                covered.add((min(u, occ[w]), max(u, occ[w])))

    for u, v in itertools.combinations(range(n), 2):
        if (u, v) in covered:
            continue
        options = []
        for x, y in ((u, v), (v, u)):
            for c in held[x]:
                for w in adj[c]:
                    if w >= 0 and occ[w] < 0:
                        options.append((rank[w], int(w), y))
        if options:
            _, w, y = min(options)
            give(w, y)
            continue
        best = None
        for c in order:
            if occ[c] >= 0:
                continue
            for w in adj[c]:
                if w >= 0 and occ[w] < 0:
                    key = (max(rank[c], rank[w]), int(c), int(w))
                    if best is None or key < best:
                        best = key
            if best is not None and rank[c] > best[0]:
                break
        if best is None:
            break  # window exhausted: the tabu search repairs what is left
        give(best[1], u)
        give(best[2], v)
    return occ


def plan_channels(
    n_users: int,
    pump_labels: Sequence[int] = (0, 10),
    *,
    label_window: tuple[int, int] | None = None,
    labels: Iterable[int] | None = None,
    seed: int = 0,
    max_iterations: int = 15_000,
    restarts: int = 4,
) -> ChannelPlan:
    """Assign channel labels to ``n_users`` so every pair of users shares a correlated pair.

    Labels are searched in ``label_window`` = (lowest, highest) (default: three pump spacings
    beyond each pump), or only among ``labels`` if given (e.g. the demultiplexer's ports);
    pump labels are never used. ``max_iterations`` tabu moves per attempt, ``restarts``
    attempts per channel count. See the module docstring for the algorithm. Deterministic for
    a given seed; 10 users take ~2 s.
    """
    if isinstance(n_users, bool) or not isinstance(n_users, int | np.integer) or n_users < 1:
        raise ValueError(f"n_users: expected an integer >= 1, got {n_users!r}")
    n = int(n_users)
    pumps = _pumps(pump_labels)
    d = abs(pumps[1] - pumps[0])
    if label_window is None:
        window = (min(pumps) - 3 * d, max(pumps) + 3 * d)
    else:
        if len(label_window) != 2 or int(label_window[0]) >= int(label_window[1]):
            raise ValueError(f"label_window: expected (lowest, highest), got {label_window!r}")
        window = (int(label_window[0]), int(label_window[1]))
    for name, v in (("max_iterations", max_iterations), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    if labels is None:
        cand = [x for x in range(window[0], window[1] + 1) if x not in pumps]
    else:
        cand = sorted({int(x) for x in labels} - set(pumps))
        if not cand:
            raise ValueError("labels: expected at least one non-pump channel label")
        window = (cand[0], cand[-1])
    if n == 1:
        return ChannelPlan(1, pumps, window, ((),), ())
    adj = _graph(cand, pumps)
    center = 0.5 * (pumps[0] + pumps[1])
    order = np.array(
        sorted(range(len(cand)), key=lambda i: (abs(cand[i] - center), cand[i])),
        dtype=np.int64,
    )
    rng = np.random.default_rng(seed)
    lower = max(n * (-(-(n - 1) // 3)), -(-(n * (n - 1)) // 3))

    def tabu(trial: npt.NDArray[np.int64]) -> bool:
        unc, _ = _tabu_kernel(adj, n, trial, max_iterations, int(rng.integers(1 << 31)), 10)
        return unc == 0

    def random_start(k: int) -> npt.NDArray[np.int64]:
        trial = np.full(len(cand), -1, np.int64)
        trial[rng.choice(len(cand), size=k, replace=False)] = rng.permutation(np.arange(k) % n)
        return trial

    best = _constructive(adj, n, order)
    k = int(np.count_nonzero(best >= 0))
    if _uncovered_count(adj, best, n) > 0:
        k = max(k, lower)
        for r in range(restarts):
            trial = best.copy() if r == 0 else random_start(min(k, len(cand)))
            if tabu(trial):
                best = trial
                break
        else:
            raise ValueError(
                f"label_window/labels: {len(cand)} labels in {window} are too few to connect "
                f"{n} users; widen the window"
            )
        k = int(np.count_nonzero(best >= 0))
    while k > lower:
        # first try: drop the channel whose loss uncovers the fewest pairs; then random starts
        for r in range(restarts):
            if r == 0:
                held = np.nonzero(best >= 0)[0]
                losses = []
                for v in held:
                    trial = best.copy()
                    trial[v] = -1
                    losses.append((_uncovered_count(adj, trial, n), int(v)))
                trial = best.copy()
                trial[min(losses)[1]] = -1
            else:
                trial = random_start(k - 1)
            if tabu(trial):
                best = trial
                break
        else:
            break
        k -= 1
    return _plan_from_occ(best, cand, n, pumps, window)


def _plan_from_occ(
    occ: npt.NDArray[np.int64],
    labels: list[int],
    n: int,
    pumps: tuple[int, int],
    window: tuple[int, int],
) -> ChannelPlan:
    sets = [sorted(labels[i] for i in np.nonzero(occ == u)[0]) for u in range(n)]
    # canonical user numbering: by each user's lowest |label - centre|, then label
    center = 0.5 * (pumps[0] + pumps[1])
    order = sorted(
        range(n), key=lambda u: min(((abs(x - center), x) for x in sets[u]), default=(0, 0))
    )
    sets = [sets[u] for u in order]
    sums = _sums(pumps)
    pairs = []
    for u, v in itertools.combinations(range(n), 2):
        for x in sets[u]:
            for y in sets[v]:
                if x != y and (x + y) in sums:
                    pairs.append(PlanPair(u, v, x, y, sums[x + y]))
    return ChannelPlan(n, pumps, window, tuple(tuple(s) for s in sets), tuple(pairs))


def format_plan(plan: ChannelPlan) -> str:
    """The plan as text: each user's channels, then every correlated pair between users."""
    lines = [
        f"{plan.n_users} users, pumps at {plan.pump_labels[0]} and {plan.pump_labels[1]}: "
        f"{plan.n_channels} channels (a single-state source needs {plan.single_state_channels}); "
        f"labels searched in [{plan.label_window[0]}, {plan.label_window[1]}]",
    ]
    for u, labels in enumerate(plan.assignment):
        lines.append(f"  user {u}: {', '.join(str(x) for x in labels)}")
    lines.append("  pairs (user a, user b, channel a, channel b, process):")
    for p in plan.pairs:
        lines.append(f"    {p.user_a} {p.user_b} {p.label_a:>4d} {p.label_b:>4d}  {p.process}")
    return "\n".join(lines)

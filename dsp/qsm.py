"""Quantum secure metrology (QSM) with Bell pairs: explicit-state simulator and closed forms.

Protocol (docs/physics.md section 3), one *run*:

1. Alice (the source) prepares ``nu`` Bell pairs |Phi+> = (|00> + |11>)/sqrt(2), keeps one
   half of each and sends the other half to Bob.
2. Each pair independently takes one of four roles (Bob's private random choice, announced
   only after the particles are back):

   ====================  ===================  ====================================================
   role                  probability          what happens
   ====================  ===================  ====================================================
   ``verify_z``          (1 - P_E)/4          Bob and Alice measure sigma_z; error if they differ
   ``verify_x``          (1 - P_E)/4          Bob and Alice measure sigma_x; error if they differ
   ``decoy``             (1 - P_E)/2          Bob applies identity and returns the particle;
                                              Alice's Bell measurement must give |Phi+>
   ``encode``            P_E                  Bob applies U_E^N = diag(1, e^{i phi})^N and returns
                                              the particle; Alice measures B (see below)
   ====================  ===================  ====================================================

   Any error in a verification or decoy check aborts the run ("the eavesdropper is detected").
3. Alice measures B = |00><11| + |11><00| on every encoded pair. B is measured in the Bell basis:
   outcome +1 for |Phi+>, -1 for |Phi->, 0 for |Psi+->. On the ideal encoded pair
   (|00> + e^{i N phi}|11>)/sqrt(2) the outcome is +-1 with mean cos(N phi).
4. Estimate: with m the sample mean of B over the n_enc encoded pairs,
   ``phi_hat = arccos(clip(m, -1, 1)) / N``, identifiable for N phi in [0, pi].

Symbols and their names in this module
--------------------------------------
* ``nu`` = ``n_pairs`` (``--repetitions``): Bell pairs prepared in one run (elementary rounds
  of the protocol). The expected number of encoded pairs is P_E nu.
* ``l`` = ``n_touched`` (``--pairs``): number of those pairs (probe states) the eavesdropper
  touches, l <= nu. The physics brief's "Alice prepares l Bell pairs" with Eve touching all of
  them is the case l = nu.
* ``N`` = ``n_encodings``: sequential applications of U_E per encoded pair.
* ``P_E`` = ``p_encode``: probability that a pair is encoded.

Precision. Var(phi_hat) >= 1 / (P_E nu N^2) [rad^2] (quantum Cramer-Rao bound, Fisher
information N^2 per encoded pair, P_E nu encoded pairs on average). For the +-1 estimator the
delta method gives, with n_enc encoded pairs,

    Var(m) = (1 - cos^2(N phi)) / n_enc,    d phi_hat / d m = -1 / (N sin(N phi))
    Var(phi_hat) = (1 - cos^2(N phi)) / (n_enc N^2 sin^2(N phi)) = 1 / (n_enc N^2),

so the bound is attained asymptotically for every N phi strictly inside (0, pi), but only when
n_enc sin^2(N phi) >> 1: near N phi = 0 or pi the arccos is steep, the clip at |m| = 1 bites,
the estimator is biased (second-order bias -cot(N phi) / (2 N n_enc)) and the Cramer-Rao bound
does not apply. N phi = pi/2 is the optimal working point (bias zero, curvature zero). Because
n_enc ~ Binomial(nu, P_E) is random, the Monte Carlo variance is E[1/n_enc] / N^2, larger than
1/(P_E nu N^2) by a relative (1 - P_E)/(P_E nu) (see :func:`expected_estimator_variance`).

Quantum advantage. Spending the same nu N applications of U_E on independent single-qubit
probes reaches the standard quantum limit 1/(nu N). The bound beats it iff P_E N > 1, hence
the admissible range 1/N < P_E <= 1: raising P_E buys precision and sells security.

Security (derivations, noiseless channel, Eve on ``m`` links of a touched round):

* Random phase on the way back (``"random-phase"``): Eve applies diag(1, e^{i theta}) to the
  returning particle, theta uniform in (-a, a] (a = ``phase_spread_rad``, default pi), fresh per
  pair. Verification particles are measured by Bob and never come back, so only decoys can
  catch her: the decoy becomes (|00> + e^{i theta}|11>)/sqrt(2), |<Phi+|.>|^2 =
  (1 + cos theta)/2, averaged (1 - c)/2 with c = E[cos theta] = sin(a)/a; on m links the
  coherence shrinks by c^m, the decoy fails w.p. (1 - c^m)/2. Per touched round the detection
  probability is (1 - P_E)/2 * (1 - c^m)/2. For a = pi (c = 0) that is (1 - P_E)/4 and

      P_D = 1 - (1 - (1 - P_E)/4)^l = 1 - ((3 + P_E)/4)^l,

  which is exactly the headline formula of the physics brief (:func:`detection_probability`).
* Intercept-resend on the way to Bob (``"intercept-resend"``): Eve measures the travelling
  qubit in sigma_z or sigma_x (fair coin) and resends the eigenstate she found. One link
  (m = 1): a verification pair measured in Eve's basis shows no error, in the other basis an
  error w.p. 1/2, so 1/4 per verification pair; the state of a decoy is a product |s>|s> with
  |<Phi+|s s>|^2 = 1/2, so 1/2 per decoy. Per touched round
  (1 - P_E)/2 * 1/4 + (1 - P_E)/2 * 1/2 = 3 (1 - P_E)/8, hence

      P_D(intercept-resend) = 1 - ((5 + 3 P_E)/8)^l  >=  1 - ((3 + P_E)/4)^l.

  **This deviates from the headline formula**: intercept-resend is caught faster (both check
  sets see it). For m links of a GHZ round: sigma_z check error 1 - (3/4)^m, sigma_x check
  error (1 - 2^-m)/2, decoy error 1 - ((3/4)^m + 4^-m)/2 (:func:`intercept_resend_error_rates`).

Channel noise (per pass, on each travelling qubit, both directions): depolarising with
probability p shrinks the Bloch vector by (1 - p) (Pauli X, Y, Z each w.p. p/4); dephasing with
probability p shrinks the transverse Bloch components by (1 - p) (Pauli Z w.p. p/2). Closed forms
in :func:`noisy_check_error_rates` and :func:`noisy_encoded_outcome_probabilities`. With the
abort-on-any-error rule a noisy link aborts almost surely for large nu; the error rates are what
a threshold test would use.

Multi-party extension. K parties share a (K+1)-qubit GHZ state (|0...0> + |1...1>)/sqrt(2) with
the source (qubit 0 stays at the source, qubit k travels to party k). Roles are common to a round;
verification measures every qubit in sigma_z (all outcomes equal) or sigma_x (product of the +-1
outcomes is +1); decoys are checked by a GHZ-basis projection at the source; in encoded rounds
each party applies diag(1, e^{i phi_k})^N and the source measures
B_K = |0...0><1...1| + h.c. with mean cos(N sum_k phi_k). The source thus estimates the sum
theta = sum_k phi_k jointly, Var >= 1/(P_E nu N^2), a factor K better than K independent Bell
links measured for the same nu rounds (K / (P_E nu N^2)). K = 1 is the Bell-pair protocol, so a
single code path serves both. The single-link attack rates above hold for any K.

Two simulators share these explicit states:

* :func:`monte_carlo` (fast, exact in distribution): per-round Born probabilities are computed
  once from explicit density matrices (channels as Kraus maps, Eve's randomness averaged into
  the channel because nobody but Eve sees her outcomes), then role counts, check errors and
  B outcomes of all pairs are drawn with multinomial/binomial sampling, vectorised over trials.
* :func:`simulate_trajectories` (literal, per pair): state vectors of every pair are evolved with
  sampled Pauli errors, Eve's explicit measurement and collapse, sampled random phases, and
  projective measurements sampled from the Born rule, vectorised over pairs with numpy.

This module is pure numpy/scipy and imports nothing from the rest of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

__all__ = [
    "ATTACKS",
    "B_OUTCOME_VALUES",
    "MAX_PARTIES",
    "ROLE_NAMES",
    "Attack",
    "MonteCarloResult",
    "QSMConfig",
    "RoundStatistics",
    "apply_single_qubit_channel",
    "attack_detection_probability",
    "computational_basis_probabilities",
    "density_matrix",
    "dephasing_kraus",
    "depolarising_kraus",
    "detection_probability",
    "encoding_probability_range",
    "encoding_unitary",
    "estimate_phase",
    "expected_estimator_variance",
    "ghz_basis",
    "ghz_basis_probabilities",
    "ghz_state",
    "has_quantum_advantage",
    "independent_links_sum_variance",
    "intercept_resend_error_rates",
    "intercept_resend_kraus",
    "monte_carlo",
    "noisy_check_error_rates",
    "noisy_encoded_outcome_probabilities",
    "per_round_detection_probability",
    "precision_bound",
    "predicted_detection_probability",
    "random_phase_coherence",
    "random_phase_kraus",
    "round_statistics",
    "simulate_trajectories",
    "standard_quantum_limit",
    "tradeoff_curve",
    "x_basis_probabilities",
]

Attack = Literal["none", "intercept-resend", "random-phase"]
ATTACKS: Final[tuple[str, ...]] = ("none", "intercept-resend", "random-phase")

#: Round roles, index order used by every probability array in this module.
ROLE_NAMES: Final[tuple[str, ...]] = ("verify_z", "verify_x", "decoy", "encode")
_VERIFY_Z: Final[int] = 0
_VERIFY_X: Final[int] = 1
_DECOY: Final[int] = 2
_ENCODE: Final[int] = 3

#: Values of the B observable for the three encoded-pair outcome classes
#: (|GHZ+> -> +1, |GHZ-> -> -1, any other GHZ-basis state -> 0).
B_OUTCOME_VALUES: Final[NDArray[np.float64]] = np.array([1.0, -1.0, 0.0], dtype=np.float64)

#: Largest number of parties K (state dimension 2^(K+1)).
MAX_PARTIES: Final[int] = 8

_SQRT_HALF: Final[float] = 1.0 / math.sqrt(2.0)
_IDENTITY: Final[NDArray[np.complex128]] = np.eye(2, dtype=np.complex128)
_PAULI_X: Final[NDArray[np.complex128]] = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_PAULI_Y: Final[NDArray[np.complex128]] = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
_PAULI_Z: Final[NDArray[np.complex128]] = np.array([[1, 0], [0, -1]], dtype=np.complex128)
_HADAMARD: Final[NDArray[np.complex128]] = _SQRT_HALF * np.array(
    [[1, 1], [1, -1]], dtype=np.complex128
)
_PAULIS: Final[NDArray[np.complex128]] = np.stack([_IDENTITY, _PAULI_X, _PAULI_Y, _PAULI_Z])


# --------------------------------------------------------------------------------------------
# Explicit states, channels and measurements
# --------------------------------------------------------------------------------------------


def _check_n_parties(n_parties: int) -> None:
    if not 1 <= int(n_parties) <= MAX_PARTIES:
        raise ValueError(f"n_parties must be in [1, {MAX_PARTIES}], got {n_parties}")


def ghz_state(n_parties: int = 1) -> NDArray[np.complex128]:
    """State vector (|0...0> + |1...1>)/sqrt(2) of the source qubit plus ``n_parties`` qubits.

    Qubit 0 (most significant in the Kronecker order) stays at the source; qubit k travels to
    party k. ``n_parties = 1`` gives the Bell state |Phi+>. Shape (2^(K+1),), complex128.
    """
    _check_n_parties(n_parties)
    dim = 2 ** (n_parties + 1)
    psi = np.zeros(dim, dtype=np.complex128)
    psi[0] = _SQRT_HALF
    psi[-1] = _SQRT_HALF
    return psi


def density_matrix(psi: NDArray[np.complex128]) -> NDArray[np.complex128]:
    """Pure-state density matrix |psi><psi| (complex128, shape (d, d))."""
    vec = np.asarray(psi, dtype=np.complex128)
    return np.outer(vec, vec.conj())


def apply_single_qubit_channel(
    rho: NDArray[np.complex128],
    kraus_ops: NDArray[np.complex128],
    qubit: int,
    n_qubits: int,
) -> NDArray[np.complex128]:
    """Apply the channel rho -> sum_k K_k rho K_k^dagger to one qubit of an n-qubit state.

    ``kraus_ops`` has shape (n_kraus, 2, 2) (a single (2, 2) unitary is accepted too);
    ``qubit`` counts from 0 = most significant. Returns a new (2^n, 2^n) complex128 matrix.
    """
    ops = np.asarray(kraus_ops, dtype=np.complex128)
    if ops.ndim == 2:
        ops = ops[np.newaxis]
    d_left = 2**qubit
    d_right = 2 ** (n_qubits - qubit - 1)
    r = np.asarray(rho, dtype=np.complex128).reshape(d_left, 2, d_right, d_left, 2, d_right)
    out = np.einsum("kij,ajbcld,kml->aibcmd", ops, r, ops.conj(), optimize=True)
    dim = 2**n_qubits
    return out.reshape(dim, dim)


def depolarising_kraus(p: float) -> NDArray[np.complex128]:
    """Kraus operators of the depolarising channel that shrinks the Bloch vector by (1 - p).

    Equivalent to replacing the qubit by I/2 with probability p, i.e. Pauli X, Y, Z each with
    probability p/4. ``p`` in [0, 1] (dimensionless, per channel pass).
    """
    _check_probability("p", p)
    return np.stack(
        [
            math.sqrt(1.0 - 0.75 * p) * _IDENTITY,
            math.sqrt(p / 4.0) * _PAULI_X,
            math.sqrt(p / 4.0) * _PAULI_Y,
            math.sqrt(p / 4.0) * _PAULI_Z,
        ]
    )


def dephasing_kraus(p: float) -> NDArray[np.complex128]:
    """Kraus operators of the dephasing channel that shrinks |0><1| coherences by (1 - p).

    Equivalent to a Pauli Z with probability p/2. ``p`` in [0, 1] (per channel pass).
    """
    _check_probability("p", p)
    return np.stack([math.sqrt(1.0 - 0.5 * p) * _IDENTITY, math.sqrt(0.5 * p) * _PAULI_Z])


def intercept_resend_kraus() -> NDArray[np.complex128]:
    """Kraus operators of Eve's intercept-resend in a fair-coin sigma_z / sigma_x basis.

    Eve measures and resends the eigenstate she found; since only Eve learns the basis and the
    outcome, the legitimate parties see the average channel with Kraus operators
    sqrt(1/2) |b><b| for the four eigenstates b in {|0>, |1>, |+>, |->}.
    """
    plus = _SQRT_HALF * np.array([1, 1], dtype=np.complex128)
    minus = _SQRT_HALF * np.array([1, -1], dtype=np.complex128)
    zero = np.array([1, 0], dtype=np.complex128)
    one = np.array([0, 1], dtype=np.complex128)
    return np.stack([_SQRT_HALF * np.outer(b, b.conj()) for b in (zero, one, plus, minus)])


def random_phase_coherence(phase_spread_rad: float) -> float:
    """E[cos theta] for theta uniform in (-a, a]: sin(a)/a (``a = phase_spread_rad`` > 0)."""
    a = float(phase_spread_rad)
    if not (0.0 < a <= math.pi):
        raise ValueError(f"phase_spread_rad must be in (0, pi], got {phase_spread_rad}")
    return math.sin(a) / a


def random_phase_kraus(phase_spread_rad: float = math.pi) -> NDArray[np.complex128]:
    """Kraus operators of diag(1, e^{i theta}) averaged over theta uniform in (-a, a].

    The average multiplies |0><1| by c = sin(a)/a, i.e. a Pauli Z with probability (1 - c)/2.
    """
    c = random_phase_coherence(phase_spread_rad)
    return np.stack([math.sqrt(0.5 * (1.0 + c)) * _IDENTITY, math.sqrt(0.5 * (1.0 - c)) * _PAULI_Z])


def encoding_unitary(phase_rad: float, n_encodings: int) -> NDArray[np.complex128]:
    """Bob's sequential encoding U_E^N with U_E = diag(1, e^{i phi}) (``phase_rad`` = phi)."""
    u_e = np.diag(np.array([1.0, np.exp(1j * float(phase_rad))], dtype=np.complex128))
    return np.linalg.matrix_power(u_e, int(n_encodings))


def _hadamard_all(n_qubits: int) -> NDArray[np.complex128]:
    h = np.ones((1, 1), dtype=np.complex128)
    for _ in range(n_qubits):
        h = np.kron(h, _HADAMARD)
    return h


def ghz_basis(n_qubits: int) -> NDArray[np.complex128]:
    """GHZ basis as rows: row 2x -> (|x> + |~x>)/sqrt(2), row 2x+1 -> (|x> - |~x>)/sqrt(2).

    x runs over the strings whose most significant bit is 0 and ~x is its bitwise complement,
    so row 0 is |GHZ+> (|Phi+> for two qubits) and row 1 is |GHZ->. Shape (2^n, 2^n).
    """
    dim = 2**n_qubits
    basis = np.zeros((dim, dim), dtype=np.complex128)
    for x in range(dim // 2):
        x_bar = x ^ (dim - 1)
        basis[2 * x, x] = basis[2 * x, x_bar] = _SQRT_HALF
        basis[2 * x + 1, x] = _SQRT_HALF
        basis[2 * x + 1, x_bar] = -_SQRT_HALF
    return basis


def computational_basis_probabilities(rho: NDArray[np.complex128]) -> NDArray[np.float64]:
    """Born probabilities of the sigma_z basis strings (index = bit string), float64."""
    return np.clip(np.real(np.diagonal(rho)).astype(np.float64), 0.0, 1.0)


def x_basis_probabilities(rho: NDArray[np.complex128]) -> NDArray[np.float64]:
    """Born probabilities of sigma_x outcomes on every qubit (bit 1 = eigenvalue -1)."""
    n_qubits = int(rho.shape[0]).bit_length() - 1
    h = _hadamard_all(n_qubits)
    return computational_basis_probabilities(h @ rho @ h.conj().T)


def ghz_basis_probabilities(rho: NDArray[np.complex128]) -> NDArray[np.float64]:
    """Born probabilities of the GHZ-basis projection (row order of :func:`ghz_basis`)."""
    n_qubits = int(rho.shape[0]).bit_length() - 1
    g = ghz_basis(n_qubits)
    probs = np.real(np.einsum("ij,jk,ik->i", g, rho, g.conj()))
    return np.clip(probs.astype(np.float64), 0.0, 1.0)


def _parity_table(n_qubits: int) -> NDArray[np.bool_]:
    return np.array([bin(i).count("1") % 2 == 1 for i in range(2**n_qubits)], dtype=np.bool_)


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------


def _check_probability(name: str, p: float) -> None:
    if not (math.isfinite(float(p)) and 0.0 <= float(p) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {p}")


def _check_p_encode(p_encode: float) -> None:
    if not (math.isfinite(float(p_encode)) and 0.0 < float(p_encode) <= 1.0):
        raise ValueError(f"p_encode must be in (0, 1], got {p_encode}")


def _check_positive_int(name: str, value: int) -> None:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def precision_bound(p_encode: float, n_repetitions: int, n_encodings: int) -> float:
    """Cramer-Rao bound 1 / (P_E nu N^2) on Var(phi_hat) [rad^2].

    ``n_repetitions`` = nu (Bell pairs per run), ``n_encodings`` = N. For the multi-party
    protocol the same expression bounds the variance of the estimated phase sum.
    """
    _check_p_encode(p_encode)
    _check_positive_int("n_repetitions", n_repetitions)
    _check_positive_int("n_encodings", n_encodings)
    return 1.0 / (float(p_encode) * float(n_repetitions) * float(n_encodings) ** 2)


def standard_quantum_limit(n_repetitions: int, n_encodings: int) -> float:
    """Variance 1 / (nu N) [rad^2] reached with nu N independent single-use probes."""
    _check_positive_int("n_repetitions", n_repetitions)
    _check_positive_int("n_encodings", n_encodings)
    return 1.0 / (float(n_repetitions) * float(n_encodings))


def encoding_probability_range(n_encodings: int) -> tuple[float, float]:
    """Admissible P_E range (1/N, 1]: returns (exclusive lower bound 1/N, inclusive upper 1)."""
    _check_positive_int("n_encodings", n_encodings)
    return 1.0 / float(n_encodings), 1.0


def has_quantum_advantage(p_encode: float, n_encodings: int) -> bool:
    """True iff 1/N < P_E <= 1, i.e. the bound beats the standard quantum limit."""
    _check_p_encode(p_encode)
    low, high = encoding_probability_range(n_encodings)
    return low < float(p_encode) <= high


def detection_probability(p_encode: float, n_touched: int) -> float:
    """Headline detection probability P_D = 1 - ((3 + P_E)/4)^l (``n_touched`` = l >= 0).

    Exact for the random-phase attack on the way back with a uniformly random phase
    (see the module docstring); a lower bound for intercept-resend.
    """
    _check_p_encode(p_encode)
    if int(n_touched) != n_touched or n_touched < 0:
        raise ValueError(f"n_touched must be a non-negative integer, got {n_touched}")
    return 1.0 - ((3.0 + float(p_encode)) / 4.0) ** int(n_touched)


def intercept_resend_error_rates(n_attacked_links: int = 1) -> tuple[float, float, float]:
    """Error probabilities (sigma_z check, sigma_x check, decoy) of a round Eve intercepts.

    Eve measures each of ``m = n_attacked_links`` travelling qubits of a GHZ (Bell for K = 1)
    state in a fair-coin sigma_z / sigma_x basis and resends. The source qubit is never touched.

    * sigma_z check: a qubit Eve measured in sigma_x gives a random z bit; with j such qubits
      P(all equal) = 2^-j, averaged over the bases: error 1 - (3/4)^m.
    * sigma_x check: any sigma_z measurement by Eve collapses the GHZ state and the x parity
      becomes random (error 1/2); only "all sigma_x" (prob 2^-m) keeps the parity: error
      (1 - 2^-m)/2.
    * decoy: overlap with |GHZ+> is 2^-m if Eve measured all in sigma_x, otherwise
      2^-(j+1) with j sigma_x measurements: pass probability ((3/4)^m + 4^-m)/2.

    For m = 1 this gives (1/4, 1/4, 1/2).
    """
    _check_positive_int("n_attacked_links", n_attacked_links)
    m = int(n_attacked_links)
    err_z = 1.0 - 0.75**m
    err_x = 0.5 * (1.0 - 0.5**m)
    err_decoy = 1.0 - 0.5 * (0.75**m + 0.25**m)
    return err_z, err_x, err_decoy


def per_round_detection_probability(
    attack: Attack,
    p_encode: float,
    n_attacked_links: int = 1,
    phase_spread_rad: float = math.pi,
) -> float:
    """Probability that one touched round triggers an abort (noiseless channel).

    * ``"none"``: 0.
    * ``"intercept-resend"``: (1 - P_E)/4 (e_z + e_x) + (1 - P_E)/2 e_decoy with the rates of
      :func:`intercept_resend_error_rates`; 3 (1 - P_E)/8 for one link.
    * ``"random-phase"``: (1 - P_E)/2 * (1 - c^m)/2 with c = sin(a)/a; (1 - P_E)/4 for a = pi.
    """
    _check_p_encode(p_encode)
    p_check = 1.0 - float(p_encode)
    if attack == "none":
        return 0.0
    if attack == "intercept-resend":
        err_z, err_x, err_decoy = intercept_resend_error_rates(n_attacked_links)
        return p_check / 4.0 * (err_z + err_x) + p_check / 2.0 * err_decoy
    if attack == "random-phase":
        _check_positive_int("n_attacked_links", n_attacked_links)
        c = random_phase_coherence(phase_spread_rad)
        return p_check / 2.0 * 0.5 * (1.0 - c ** int(n_attacked_links))
    raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS}")


def attack_detection_probability(
    attack: Attack,
    p_encode: float,
    n_touched: int,
    n_attacked_links: int = 1,
    phase_spread_rad: float = math.pi,
) -> float:
    """P_D = 1 - (1 - d)^l for l = ``n_touched`` touched rounds, d from
    :func:`per_round_detection_probability`.

    ``"random-phase"`` with a = pi reproduces :func:`detection_probability`;
    ``"intercept-resend"`` on one link gives 1 - ((5 + 3 P_E)/8)^l, which is larger.
    """
    if int(n_touched) != n_touched or n_touched < 0:
        raise ValueError(f"n_touched must be a non-negative integer, got {n_touched}")
    d = per_round_detection_probability(attack, p_encode, n_attacked_links, phase_spread_rad)
    return 1.0 - (1.0 - d) ** int(n_touched)


def _noise_shrink_factors(p_depolarising: float, p_dephasing: float) -> tuple[float, float]:
    """(longitudinal, transverse) Bloch shrink of one channel pass."""
    _check_probability("p_depolarising", p_depolarising)
    _check_probability("p_dephasing", p_dephasing)
    lam_z = 1.0 - float(p_depolarising)
    lam_perp = (1.0 - float(p_depolarising)) * (1.0 - float(p_dephasing))
    return lam_z, lam_perp


def noisy_check_error_rates(
    p_depolarising: float, p_dephasing: float, n_parties: int = 1
) -> tuple[float, float, float]:
    """Error probabilities (sigma_z check, sigma_x check, decoy) caused by channel noise alone.

    Per pass the Bloch vector of a travelling qubit shrinks by lam_z = 1 - p_dep along z and by
    lam_perp = (1 - p_dep)(1 - p_deph) transversally. Verification sees one pass, decoys two.

    * sigma_z check: fails if any of the K qubits is bit-flipped: 1 - ((1 + lam_z)/2)^K.
    * sigma_x check: the x parity flips with each phase flip: (1 - lam_perp^K)/2.
    * decoy: P(GHZ+) = (((1 + lam_z^2)/2)^K + lam_perp^(2K))/2, error = 1 - that.
    """
    _check_n_parties(n_parties)
    lam_z, lam_perp = _noise_shrink_factors(p_depolarising, p_dephasing)
    k = int(n_parties)
    err_z = 1.0 - ((1.0 + lam_z) / 2.0) ** k
    err_x = 0.5 * (1.0 - lam_perp**k)
    pass_decoy = 0.5 * (((1.0 + lam_z**2) / 2.0) ** k + lam_perp ** (2 * k))
    return err_z, err_x, 1.0 - pass_decoy


def noisy_encoded_outcome_probabilities(
    phase_sum_rad: float,
    n_encodings: int,
    p_depolarising: float = 0.0,
    p_dephasing: float = 0.0,
    n_parties: int = 1,
) -> NDArray[np.float64]:
    """Probabilities of B = +1, -1, 0 on an encoded round over a noisy channel.

    With q = ((1 + lam_z^2)/2)^K the probability of no net bit flip and V = lam_perp^(2K) the
    surviving GHZ coherence (round trip), P(+-1) = (q +- V cos(N theta))/2 and P(0) = 1 - q,
    so E[B] = V cos(N theta) (``phase_sum_rad`` = theta = sum of the local phases).
    Pauli channels with equal X and Y weights never map |0><1| onto |1><0|, which is why the
    round-trip coherence factorises around the encoding.
    """
    _check_n_parties(n_parties)
    lam_z, lam_perp = _noise_shrink_factors(p_depolarising, p_dephasing)
    k = int(n_parties)
    q = ((1.0 + lam_z**2) / 2.0) ** k
    visibility = lam_perp ** (2 * k)
    c = math.cos(int(n_encodings) * float(phase_sum_rad))
    return np.array(
        [0.5 * (q + visibility * c), 0.5 * (q - visibility * c), 1.0 - q], dtype=np.float64
    )


def expected_estimator_variance(p_encode: float, n_repetitions: int, n_encodings: int) -> float:
    """Asymptotic Var(phi_hat) = E[1/n_enc | n_enc > 0] / N^2 with n_enc ~ Binomial(nu, P_E).

    Valid where the delta method holds (n_enc sin^2(N phi) >> 1); tends to
    :func:`precision_bound` as P_E nu grows (relative excess about (1 - P_E)/(P_E nu)).
    """
    _check_p_encode(p_encode)
    _check_positive_int("n_repetitions", n_repetitions)
    _check_positive_int("n_encodings", n_encodings)
    nu = int(n_repetitions)
    mean = nu * float(p_encode)
    if mean > 1e6:
        # E[1/n] = (1/mu) (1 + (1 - P_E)/mu + O(mu^-2)); the summation window would be huge.
        return (1.0 + (1.0 - float(p_encode)) / mean) / mean / float(n_encodings) ** 2
    half_width = 12.0 * math.sqrt(mean * (1.0 - float(p_encode))) + 50.0
    n_low = max(1, int(mean - half_width))
    n_high = min(nu, int(mean + half_width) + 1)
    n = np.arange(n_low, n_high + 1, dtype=np.float64)
    pmf = stats.binom.pmf(n, nu, float(p_encode))
    mass = float(pmf.sum())
    return float(np.sum(pmf / n) / mass) / float(n_encodings) ** 2


def independent_links_sum_variance(
    p_encode: float, n_repetitions: int, n_encodings: int, n_parties: int
) -> float:
    """Bound K / (P_E nu N^2) [rad^2] on the phase sum from K separate Bell links (nu rounds each).

    Reference for the multi-party GHZ protocol, whose bound on the sum is K times smaller.
    """
    _check_n_parties(n_parties)
    return int(n_parties) * precision_bound(p_encode, n_repetitions, n_encodings)


def tradeoff_curve(
    n_encodings: int,
    n_repetitions: int,
    n_touched: int,
    p_encode_values: NDArray[np.float64] | None = None,
) -> dict[str, NDArray[np.float64] | NDArray[np.bool_] | float]:
    """Precision-security trade-off as P_E varies.

    Returns ``p_encode`` (grid on (0, 1], default 200 points), ``precision_bound_rad2``,
    ``precision_std_rad`` (sqrt of the bound), ``detection_probability`` (headline formula for
    ``n_touched`` touched rounds), ``quantum_advantage`` (P_E > 1/N) and the scalar
    ``standard_quantum_limit_rad2``.
    """
    if p_encode_values is None:
        p = np.linspace(0.005, 1.0, 200, dtype=np.float64)
    else:
        p = np.asarray(p_encode_values, dtype=np.float64)
    if p.size == 0 or np.any(~np.isfinite(p)) or np.any(p <= 0.0) or np.any(p > 1.0):
        raise ValueError("p_encode_values must be non-empty and lie in (0, 1]")
    bound = np.array([precision_bound(v, n_repetitions, n_encodings) for v in p], np.float64)
    p_d = np.array([detection_probability(v, n_touched) for v in p], dtype=np.float64)
    return {
        "p_encode": p,
        "precision_bound_rad2": bound,
        "precision_std_rad": np.sqrt(bound),
        "detection_probability": p_d,
        "quantum_advantage": p > 1.0 / float(n_encodings),
        "standard_quantum_limit_rad2": standard_quantum_limit(n_repetitions, n_encodings),
    }


# --------------------------------------------------------------------------------------------
# Protocol configuration and per-round Born probabilities from explicit density matrices
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QSMConfig:
    """One protocol run.

    Attributes:
        n_pairs: nu, Bell (GHZ) states prepared per run (>= 1).
        p_encode: P_E in (0, 1], probability that a round is encoded.
        n_encodings: N >= 1, sequential applications of U_E per encoded round.
        phases_rad: local phase phi_k [rad] of each party; its length is K (1 = Bell pairs).
            A bare float is accepted for K = 1.
        attack: ``"none"``, ``"intercept-resend"`` (way out) or ``"random-phase"`` (way back).
        n_touched: l, rounds the eavesdropper touches (the first l of the run); ``None`` means
            all nu. Ignored without an attack.
        attacked_parties: indices (0-based, < K) of the links Eve attacks in a touched round.
        phase_spread_rad: a in (0, pi]; random-phase attack draws theta uniform in (-a, a].
        p_depolarising: depolarising probability per channel pass (Bloch shrink 1 - p).
        p_dephasing: dephasing probability per channel pass (coherence shrink 1 - p).
    """

    n_pairs: int
    p_encode: float
    n_encodings: int
    phases_rad: tuple[float, ...] | float = (0.0,)
    attack: Attack = "none"
    n_touched: int | None = None
    attacked_parties: tuple[int, ...] = (0,)
    phase_spread_rad: float = math.pi
    p_depolarising: float = 0.0
    p_dephasing: float = 0.0
    _phases: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_positive_int("n_pairs", self.n_pairs)
        _check_p_encode(self.p_encode)
        _check_positive_int("n_encodings", self.n_encodings)
        if isinstance(self.phases_rad, int | float):
            phases = (float(self.phases_rad),)
        else:
            phases = tuple(float(v) for v in self.phases_rad)
        if not all(math.isfinite(v) for v in phases):
            raise ValueError("phases_rad must be finite")
        _check_n_parties(len(phases))
        object.__setattr__(self, "_phases", phases)
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; expected one of {ATTACKS}")
        if self.n_touched is not None and (
            int(self.n_touched) != self.n_touched or not 0 <= self.n_touched <= self.n_pairs
        ):
            raise ValueError(f"n_touched must be in [0, n_pairs={self.n_pairs}]")
        parties = tuple(int(k) for k in self.attacked_parties)
        if not parties or len(set(parties)) != len(parties):
            raise ValueError("attacked_parties must be non-empty and without repeats")
        if any(not 0 <= k < len(phases) for k in parties):
            raise ValueError(f"attacked_parties must be in [0, {len(phases) - 1}]")
        random_phase_coherence(self.phase_spread_rad)
        _check_probability("p_depolarising", self.p_depolarising)
        _check_probability("p_dephasing", self.p_dephasing)

    @property
    def phases(self) -> tuple[float, ...]:
        """Local phases phi_k [rad] as a tuple of floats (length K)."""
        return self._phases

    @property
    def n_parties(self) -> int:
        """K, number of encoding parties."""
        return len(self._phases)

    @property
    def phase_sum_rad(self) -> float:
        """theta = sum_k phi_k [rad], the jointly estimated quantity (phi itself for K = 1)."""
        return float(sum(self._phases))

    @property
    def touched_rounds(self) -> int:
        """l actually attacked (0 without an attack)."""
        if self.attack == "none":
            return 0
        return self.n_pairs if self.n_touched is None else int(self.n_touched)

    @property
    def role_probabilities(self) -> NDArray[np.float64]:
        """P(verify_z, verify_x, decoy, encode) = ((1-P_E)/4, (1-P_E)/4, (1-P_E)/2, P_E)."""
        p = float(self.p_encode)
        q = 1.0 - p
        return np.array([q / 4.0, q / 4.0, q / 2.0, p], dtype=np.float64)


@dataclass(frozen=True)
class RoundStatistics:
    """Outcome law of one round, from explicit density matrices.

    Attributes:
        role_probabilities: P(role) in ``ROLE_NAMES`` order, shape (4,).
        check_error_probabilities: P(error | role) for verify_z, verify_x, decoy, shape (3,).
        encoded_outcome_probabilities: P(B = +1, -1, 0 | encode), shape (3,).
    """

    role_probabilities: NDArray[np.float64]
    check_error_probabilities: NDArray[np.float64]
    encoded_outcome_probabilities: NDArray[np.float64]

    @property
    def detection_probability(self) -> float:
        """P(this round shows a check error) = sum over check roles of P(role) P(error | role)."""
        return float(np.dot(self.role_probabilities[:3], self.check_error_probabilities))


def _channel_stack(
    config: QSMConfig, touched: bool, party: int, way: str
) -> list[NDArray[np.complex128]]:
    """Kraus sets applied to party ``party``'s qubit on one pass (``way`` = "out" / "back")."""
    ops: list[NDArray[np.complex128]] = []
    eve_here = touched and party in config.attacked_parties
    if way == "out" and eve_here and config.attack == "intercept-resend":
        ops.append(intercept_resend_kraus())
    if config.p_depolarising > 0.0:
        ops.append(depolarising_kraus(config.p_depolarising))
    if config.p_dephasing > 0.0:
        ops.append(dephasing_kraus(config.p_dephasing))
    if way == "back" and eve_here and config.attack == "random-phase":
        ops.append(random_phase_kraus(config.phase_spread_rad))
    return ops


def round_statistics(config: QSMConfig, touched: bool = False) -> RoundStatistics:
    """Per-round Born probabilities computed from the explicit (K+1)-qubit density matrix.

    Order of operations per travelling qubit: way out = Eve's intercept-resend (if touched),
    then channel noise; Bob's role; way back = channel noise, then Eve's random phase (if
    touched). Verification is read off after the way out, decoys and encoded rounds after the
    way back.
    """
    k_parties = config.n_parties
    n_qubits = k_parties + 1
    rho = density_matrix(ghz_state(k_parties))
    for party in range(k_parties):
        for ops in _channel_stack(config, touched, party, "out"):
            rho = apply_single_qubit_channel(rho, ops, party + 1, n_qubits)

    p_z = computational_basis_probabilities(rho)
    err_z = 1.0 - p_z[0] - p_z[-1]
    p_x = x_basis_probabilities(rho)
    err_x = float(np.sum(p_x[_parity_table(n_qubits)]))

    def way_back(state: NDArray[np.complex128]) -> NDArray[np.complex128]:
        for party in range(k_parties):
            for ops in _channel_stack(config, touched, party, "back"):
                state = apply_single_qubit_channel(state, ops, party + 1, n_qubits)
        return state

    rho_decoy = way_back(rho)
    err_decoy = 1.0 - ghz_basis_probabilities(rho_decoy)[0]

    rho_enc = rho
    for party, phase in enumerate(config.phases):
        u = encoding_unitary(phase, config.n_encodings)
        rho_enc = apply_single_qubit_channel(rho_enc, u, party + 1, n_qubits)
    p_ghz = ghz_basis_probabilities(way_back(rho_enc))
    p_plus = float(p_ghz[0])
    p_minus = float(p_ghz[1])
    enc = _snap_probabilities(np.array([p_plus, p_minus, 1.0 - p_plus - p_minus]))
    errors = _snap_probabilities(np.array([err_z, err_x, err_decoy]))
    return RoundStatistics(
        role_probabilities=config.role_probabilities,
        check_error_probabilities=errors,
        encoded_outcome_probabilities=enc / enc.sum(),
    )


def _snap_probabilities(p: NDArray[np.float64], tol: float = 1e-12) -> NDArray[np.float64]:
    """Clip to [0, 1] and snap floating-point dust (|p| or |1 - p| < tol) to 0 or 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q = np.where(q < tol, 0.0, q)
    return np.where(q > 1.0 - tol, 1.0, q)


def predicted_detection_probability(config: QSMConfig) -> float:
    """Exact P(abort) of a run: 1 - (1 - d_clean)^(nu - l) (1 - d_touched)^l.

    d are :attr:`RoundStatistics.detection_probability` of untouched and touched rounds
    (the untouched one is non-zero only with channel noise).
    """
    n_touched = config.touched_rounds
    groups = [(config.n_pairs - n_touched, round_statistics(config, touched=False))]
    if n_touched > 0:
        groups.append((n_touched, round_statistics(config, touched=True)))
    log_pass = 0.0
    for size, st in groups:
        d = st.detection_probability
        if size == 0 or d <= 0.0:
            continue
        if d >= 1.0:
            return 1.0
        log_pass += size * math.log1p(-d)
    return float(-math.expm1(log_pass))


# --------------------------------------------------------------------------------------------
# Estimator and Monte Carlo
# --------------------------------------------------------------------------------------------


def estimate_phase(
    mean_b: NDArray[np.float64] | float, n_encodings: int, visibility: float = 1.0
) -> NDArray[np.float64]:
    """phi_hat = arccos(clip(m / V, -1, 1)) / N [rad] from the sample mean m of B.

    ``visibility`` V (0 < V <= 1) is a calibrated coherence (e.g.
    :func:`noisy_encoded_outcome_probabilities` contrast) that removes the noise bias; the
    estimate lies in the identifiable range [0, pi/N]. NaN means are passed through as NaN.
    """
    _check_positive_int("n_encodings", n_encodings)
    if not 0.0 < float(visibility) <= 1.0:
        raise ValueError(f"visibility must be in (0, 1], got {visibility}")
    m = np.asarray(mean_b, dtype=np.float64) / float(visibility)
    return np.arccos(np.clip(m, -1.0, 1.0)) / float(n_encodings)


@dataclass(frozen=True)
class MonteCarloResult:
    """Per-trial outcomes of simulated protocol runs (all arrays have shape (n_trials,)).

    Attributes:
        estimates_rad: phi_hat (phase sum for K > 1) [rad]; NaN if no round was encoded.
        mean_b: sample mean of B over the encoded rounds (NaN if none).
        role_counts: rounds per role (``ROLE_NAMES`` order) per run, shape (n_trials, 4).
        check_errors_by_role: failed verify_z, verify_x and decoy checks, shape (n_trials, 3).
        n_encoded: encoded rounds per run.
        n_checks: verification + decoy rounds per run.
        n_check_errors: failed checks per run.
        detected: ``n_check_errors > 0`` (the run aborts).
    """

    estimates_rad: NDArray[np.float64]
    mean_b: NDArray[np.float64]
    role_counts: NDArray[np.int64]
    check_errors_by_role: NDArray[np.int64]
    n_encoded: NDArray[np.int64]
    n_checks: NDArray[np.int64]
    n_check_errors: NDArray[np.int64]
    detected: NDArray[np.bool_]

    @property
    def n_trials(self) -> int:
        """Number of simulated runs."""
        return int(self.detected.size)

    def _valid_estimates(self) -> NDArray[np.float64]:
        return self.estimates_rad[np.isfinite(self.estimates_rad)]

    @property
    def mean_estimate_rad(self) -> float:
        """Mean of phi_hat over runs with at least one encoded round [rad]."""
        est = self._valid_estimates()
        return float(np.mean(est)) if est.size else math.nan

    @property
    def mean_estimate_se_rad(self) -> float:
        """Standard error of :attr:`mean_estimate_rad` [rad]."""
        est = self._valid_estimates()
        return float(np.std(est, ddof=1) / math.sqrt(est.size)) if est.size > 1 else math.nan

    @property
    def variance_rad2(self) -> float:
        """Sample variance of phi_hat (ddof = 1) [rad^2]."""
        est = self._valid_estimates()
        return float(np.var(est, ddof=1)) if est.size > 1 else math.nan

    @property
    def variance_se_rad2(self) -> float:
        """Standard error of :attr:`variance_rad2`, sqrt((m4 - s^4)/T) [rad^2]."""
        est = self._valid_estimates()
        if est.size < 4:
            return math.nan
        dev = est - est.mean()
        m4 = float(np.mean(dev**4))
        s2 = float(np.var(est, ddof=1))
        return math.sqrt(max(m4 - s2**2 * (est.size - 3) / (est.size - 1), 0.0) / est.size)

    @property
    def check_error_rates(self) -> NDArray[np.float64]:
        """Pooled error rate of each check type (verify_z, verify_x, decoy) over all runs."""
        checks = self.role_counts[:, :3].sum(axis=0).astype(np.float64)
        errors = self.check_errors_by_role.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(checks > 0, errors / np.maximum(checks, 1.0), np.nan)

    @property
    def detection_rate(self) -> float:
        """Fraction of runs that abort."""
        return float(np.mean(self.detected))

    @property
    def detection_rate_se(self) -> float:
        """Binomial standard error sqrt(p (1 - p) / T) of :attr:`detection_rate`."""
        p = self.detection_rate
        return math.sqrt(p * (1.0 - p) / self.n_trials)


def _check_trials(n_trials: int) -> None:
    _check_positive_int("n_trials", n_trials)


def _finish(
    plus: NDArray[np.int64],
    minus: NDArray[np.int64],
    roles: NDArray[np.int64],
    errors: NDArray[np.int64],
    n_encodings: int,
) -> MonteCarloResult:
    n_enc = roles[:, _ENCODE]
    n_err = errors.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_b = np.where(n_enc > 0, (plus - minus) / np.maximum(n_enc, 1), np.nan)
    estimates = estimate_phase(mean_b, n_encodings)
    return MonteCarloResult(
        estimates_rad=estimates.astype(np.float64),
        mean_b=mean_b.astype(np.float64),
        role_counts=roles.astype(np.int64),
        check_errors_by_role=errors.astype(np.int64),
        n_encoded=n_enc.astype(np.int64),
        n_checks=roles[:, :3].sum(axis=1).astype(np.int64),
        n_check_errors=n_err.astype(np.int64),
        detected=(n_err > 0),
    )


def monte_carlo(config: QSMConfig, n_trials: int, seed: int | None = None) -> MonteCarloResult:
    """Simulate ``n_trials`` independent runs, vectorised over trials.

    Rounds are i.i.d. given whether Eve touches them, so a run is sampled exactly by: role counts
    ~ Multinomial(group size, role probabilities); check errors ~ Binomial(count,
    P(error | role)); encoded outcomes +1 / -1 / 0 ~ Multinomial(n_enc, P(B | encode)), with all
    conditional probabilities from :func:`round_statistics` (explicit density matrices). Cost is
    O(n_trials), independent of nu.
    """
    _check_trials(n_trials)
    rng = np.random.default_rng(seed)
    n_touched = config.touched_rounds
    groups: list[tuple[int, RoundStatistics]] = [
        (config.n_pairs - n_touched, round_statistics(config, touched=False))
    ]
    if n_touched > 0:
        groups.append((n_touched, round_statistics(config, touched=True)))

    shape = (int(n_trials),)
    plus = np.zeros(shape, dtype=np.int64)
    minus = np.zeros(shape, dtype=np.int64)
    role_counts = np.zeros((*shape, 4), dtype=np.int64)
    errors = np.zeros((*shape, 3), dtype=np.int64)
    for size, st in groups:
        if size == 0:
            continue
        roles = rng.multinomial(size, st.role_probabilities, size=shape).astype(np.int64)
        errors += rng.binomial(roles[:, :3], st.check_error_probabilities[np.newaxis, :])
        role_counts += roles
        enc = roles[:, _ENCODE]
        p_plus, p_minus, _ = (float(v) for v in st.encoded_outcome_probabilities)
        g_plus = rng.binomial(enc, min(max(p_plus, 0.0), 1.0))
        p_minus_cond = p_minus / (1.0 - p_plus) if p_plus < 1.0 else 0.0
        g_minus = rng.binomial(enc - g_plus, min(max(p_minus_cond, 0.0), 1.0))
        plus += g_plus
        minus += g_minus
    return _finish(plus, minus, role_counts, errors, config.n_encodings)


# --------------------------------------------------------------------------------------------
# Trajectory simulator: every pair as an explicit state vector
# --------------------------------------------------------------------------------------------


def _apply_gates(
    psi: NDArray[np.complex128], gates: NDArray[np.complex128], qubit: int, n_qubits: int
) -> NDArray[np.complex128]:
    """Apply per-pair 2x2 gates (shape (M, 2, 2)) to ``qubit`` of M state vectors (M, 2^n)."""
    m = psi.shape[0]
    r = psi.reshape(m, 2**qubit, 2, 2 ** (n_qubits - qubit - 1))
    return np.einsum("mij,majb->maib", gates, r).reshape(m, -1)


def _sample_categorical(probs: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.int64]:
    """One draw per row of ``probs`` (rows need not be exactly normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cum[:, -1]
    idx = np.sum(cum <= u[:, np.newaxis], axis=1)
    return np.minimum(idx, probs.shape[1] - 1).astype(np.int64)


def _pauli_noise(
    psi: NDArray[np.complex128],
    qubit: int,
    n_qubits: int,
    p_depolarising: float,
    p_dephasing: float,
    rng: np.random.Generator,
) -> NDArray[np.complex128]:
    m = psi.shape[0]
    if p_depolarising > 0.0:
        weights = np.array(
            [1.0 - 0.75 * p_depolarising] + [p_depolarising / 4.0] * 3, dtype=np.float64
        )
        which = rng.choice(4, size=m, p=weights)
        psi = _apply_gates(psi, _PAULIS[which], qubit, n_qubits)
    if p_dephasing > 0.0:
        flip = rng.random(m) < 0.5 * p_dephasing
        psi = _apply_gates(psi, _PAULIS[np.where(flip, 3, 0)], qubit, n_qubits)
    return psi


def _intercept_resend(
    psi: NDArray[np.complex128],
    mask: NDArray[np.bool_],
    qubit: int,
    n_qubits: int,
    rng: np.random.Generator,
) -> NDArray[np.complex128]:
    """Eve measures ``qubit`` of the masked pairs in a random sigma_z/sigma_x basis, resends."""
    m = psi.shape[0]
    in_x = rng.random(m) < 0.5
    rotate = _PAULIS[np.zeros(m, dtype=np.int64)].copy()
    rotate[in_x] = _HADAMARD
    work = _apply_gates(psi, rotate, qubit, n_qubits)
    r = work.reshape(m, 2**qubit, 2, 2 ** (n_qubits - qubit - 1))
    p_one = np.sum(np.abs(r[:, :, 1, :]) ** 2, axis=(1, 2))
    outcome_one = rng.random(m) < p_one
    collapsed = r.copy()
    collapsed[outcome_one, :, 0, :] = 0.0
    collapsed[~outcome_one, :, 1, :] = 0.0
    norm = np.sqrt(np.where(outcome_one, p_one, 1.0 - p_one))
    collapsed = collapsed.reshape(m, -1) / np.maximum(norm, 1e-300)[:, np.newaxis]
    resent = _apply_gates(collapsed, rotate, qubit, n_qubits)  # H is its own inverse
    return np.where(mask[:, np.newaxis], resent, psi)


def simulate_trajectories(
    config: QSMConfig,
    n_trials: int,
    seed: int | None = None,
    max_amplitudes_per_batch: int = 1 << 20,
) -> MonteCarloResult:
    """Simulate ``n_trials`` runs pair by pair with explicit state vectors.

    For every pair: a role is drawn; the GHZ (Bell) state vector is sent out (Eve's
    intercept-resend measures and collapses the touched qubit in a random basis, the channel
    applies sampled Pauli errors); verification samples a sigma_z or sigma_x string from the
    Born rule; decoy / encoded pairs receive identity or U_E^N, travel back (Pauli errors, Eve's
    random phase theta ~ U(-a, a]) and are projected onto the GHZ basis. Pairs are processed in
    numpy batches of at most ``max_amplitudes_per_batch`` amplitudes (memory bound), never in a
    Python loop over pairs. Statistically identical to :func:`monte_carlo`, much slower
    (cost ~ n_trials * nu * 2^(K+1)); use it to cross-check the density-matrix path.
    """
    _check_trials(n_trials)
    rng = np.random.default_rng(seed)
    k_parties = config.n_parties
    n_qubits = k_parties + 1
    dim = 2**n_qubits
    nu = config.n_pairs
    n_touched = config.touched_rounds
    ghz = ghz_state(k_parties)
    h_all = _hadamard_all(n_qubits)
    g_basis = ghz_basis(n_qubits)
    parity = _parity_table(n_qubits)
    enc_diag = np.ones(2, dtype=np.complex128)  # the source qubit is never encoded
    for phase in config.phases:
        enc_diag = np.kron(enc_diag, np.diagonal(encoding_unitary(phase, config.n_encodings)))
    role_p = config.role_probabilities

    trials_per_batch = max(1, int(max_amplitudes_per_batch) // (nu * dim))
    results: list[tuple[NDArray[np.int64], ...]] = []
    done = 0
    while done < n_trials:
        t = min(trials_per_batch, n_trials - done)
        m = t * nu
        roles = rng.choice(4, size=m, p=role_p).astype(np.int64)
        touched = np.tile(np.arange(nu) < n_touched, t)
        psi = np.broadcast_to(ghz, (m, dim)).astype(np.complex128)

        for party in range(k_parties):
            qubit = party + 1
            if config.attack == "intercept-resend" and party in config.attacked_parties:
                psi = _intercept_resend(psi, touched, qubit, n_qubits, rng)
            psi = _pauli_noise(psi, qubit, n_qubits, config.p_depolarising, config.p_dephasing, rng)

        idx_z = _sample_categorical(np.abs(psi) ** 2, rng)
        err_z = (idx_z != 0) & (idx_z != dim - 1)
        idx_x = _sample_categorical(np.abs(psi @ h_all.T) ** 2, rng)
        err_x = parity[idx_x]

        psi = np.where((roles == _ENCODE)[:, np.newaxis], psi * enc_diag[np.newaxis, :], psi)
        for party in range(k_parties):
            qubit = party + 1
            psi = _pauli_noise(psi, qubit, n_qubits, config.p_depolarising, config.p_dephasing, rng)
            if config.attack == "random-phase" and party in config.attacked_parties:
                theta = rng.uniform(-config.phase_spread_rad, config.phase_spread_rad, size=m)
                theta = np.where(touched, theta, 0.0)
                gates = np.zeros((m, 2, 2), dtype=np.complex128)
                gates[:, 0, 0] = 1.0
                gates[:, 1, 1] = np.exp(1j * theta)
                psi = _apply_gates(psi, gates, qubit, n_qubits)

        idx_g = _sample_categorical(np.abs(psi @ g_basis.conj().T) ** 2, rng)
        err_decoy = idx_g != 0
        b_value = np.where(idx_g == 0, 1, np.where(idx_g == 1, -1, 0)).astype(np.int64)

        is_enc = roles == _ENCODE
        per_role_error = np.stack([err_z, err_x, err_decoy], axis=1)
        role_onehot = roles[:, np.newaxis] == np.arange(4)[np.newaxis, :]
        shape = (t, nu)
        results.append(
            (
                np.sum((is_enc & (b_value == 1)).reshape(shape), axis=1),
                np.sum((is_enc & (b_value == -1)).reshape(shape), axis=1),
                np.sum(role_onehot.reshape(t, nu, 4), axis=1),
                np.sum((role_onehot[:, :3] & per_role_error).reshape(t, nu, 3), axis=1),
            )
        )
        done += t
    plus, minus, role_counts, errors = (
        np.concatenate([r[i] for r in results]).astype(np.int64) for i in range(4)
    )
    return _finish(plus, minus, role_counts, errors, config.n_encodings)

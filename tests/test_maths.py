"""Closed-form checks of the categorical and elementary functions in daif.maths."""

import math

import pytest
import torch

from daif import maths


def test_entropy_of_fair_coin_is_ln2_and_of_certainty_is_zero():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    h = maths.entropy(p)
    assert h[0].item() == pytest.approx(math.log(2.0))
    assert h[1].item() == pytest.approx(0.0, abs=1e-12)


def test_kl_categorical_hand_computed():
    q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    p = torch.tensor([0.25, 0.75], dtype=torch.float64)
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert maths.kl_categorical_to_log(q, p.log()).item() == pytest.approx(expected, rel=1e-12)
    assert maths.kl_categorical_to_log(q, q.log()).item() == pytest.approx(0.0, abs=1e-12)


def test_softmax_precision_limits():
    x = torch.tensor([1.0, 3.0, 2.0])
    assert torch.allclose(maths.softmax(x, precision=0.0), torch.full((3,), 1.0 / 3.0))
    sharp = maths.softmax(x, precision=1e4)
    assert torch.equal(sharp, torch.tensor([0.0, 1.0, 0.0]))
    # γ = 1, by hand: e^{x_i} / Σ e^{x_j}
    z = math.exp(1) + math.exp(3) + math.exp(2)
    expected = torch.tensor([math.exp(1) / z, math.exp(3) / z, math.exp(2) / z])
    assert torch.allclose(maths.softmax(x), expected, atol=1e-6)


def test_log_stable_is_finite_at_zero():
    assert torch.isfinite(maths.log_stable(torch.tensor([0.0]))).all()
    assert maths.log_stable(torch.tensor([0.0])).item() == pytest.approx(math.log(maths.EPS))


def test_symlog_inverts_and_is_identity_near_zero():
    x = torch.tensor([-1e4, -2.0, -1e-4, 0.0, 1e-4, 2.0, 1e4], dtype=torch.float64)
    # the inverse, sign(y)·(e^|y| − 1), recovers x
    y = maths.symlog(x)
    assert torch.allclose(torch.sign(y) * torch.expm1(y.abs()), x, rtol=1e-12)
    assert maths.symlog(torch.tensor(1e-4, dtype=torch.float64)).item() == pytest.approx(
        1e-4, rel=1e-3
    )
    assert maths.symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)


def test_free_bits_floor_stops_the_gradient_below_it():
    kl = torch.tensor([0.2, 3.0], requires_grad=True)
    fb = maths.free_bits(kl, 1.0)
    assert fb.tolist() == [1.0, 3.0]
    fb.sum().backward()
    assert kl.grad.tolist() == [0.0, 1.0]  # no push below the floor


def test_efe_terms_two_state_example_by_hand():
    # Two states, two outcomes. A[o, s]: state 0 gives o=0 w.p. 0.9, state 1 is a coin flip.
    A = torch.tensor([[0.9, 0.5], [0.1, 0.5]], dtype=torch.float64)
    q_s = torch.tensor([0.6, 0.4], dtype=torch.float64)
    log_c = torch.log(torch.tensor([0.8, 0.2], dtype=torch.float64))
    q_o = A @ q_s  # [0.74, 0.26]
    assert q_o.tolist() == pytest.approx([0.74, 0.26])
    h_a = maths.entropy(A.T)  # entropy of each column p(o|s)
    h0 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    h1 = math.log(2.0)
    assert h_a.tolist() == pytest.approx([h0, h1])
    amb = torch.tensor(0.6 * h0 + 0.4 * h1, dtype=torch.float64)  # E_q(s) H[p(o|s)]
    rk = maths.kl_categorical_to_log(q_o, log_c)  # risk = KL[q(o) ‖ P̃(o)]
    expected_risk = 0.74 * math.log(0.74 / 0.8) + 0.26 * math.log(0.26 / 0.2)
    assert rk.item() == pytest.approx(expected_risk)
    util = torch.tensor(0.74 * math.log(0.8) + 0.26 * math.log(0.2), dtype=torch.float64)
    ig = maths.states_info_gain(q_o, amb)
    h_qo = -(0.74 * math.log(0.74) + 0.26 * math.log(0.26))
    assert ig.item() == pytest.approx(h_qo - (0.6 * h0 + 0.4 * h1))
    assert ig.item() >= 0.0
    # risk + ambiguity = −(utility + state information gain)
    g = maths.expected_free_energy(rk, amb)
    assert g.item() == pytest.approx(-(util + ig).item())
    g_weighted = maths.expected_free_energy(
        rk, amb, ig, risk_weight=2.0, ambiguity_weight=0.5, info_gain_weight=3.0
    )
    assert g_weighted.item() == pytest.approx(2.0 * rk.item() + 0.5 * amb.item() - 3.0 * ig.item())

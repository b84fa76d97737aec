"""Parity with pymdp 0.0.7.1 (the numpy reference) on random models, to 1e-5.

Skipped when ``inferactively-pymdp`` is not installed (``pip install -e .[bench]``).
Sizes keep the joint outcome space small: pymdp floors ln p(o|s) with +e^-16 in its
ambiguity term, a bias of about 1e-7 per outcome that we do not reproduce.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pymdp = pytest.importorskip("pymdp")
from pymdp import control as pc  # noqa: E402
from pymdp import utils as pu  # noqa: E402
from pymdp.agent import Agent as PAgent  # noqa: E402

from daif.pomdp import Agent  # noqa: E402

TOL = 1e-5


def random_model(rng, num_obs, num_states, num_controls):
    A = pu.obj_array(len(num_obs))
    for m, o in enumerate(num_obs):
        A[m] = rng.dirichlet(np.ones(o), size=tuple(num_states)).transpose(
            len(num_states), *range(len(num_states))
        )
    B = pu.obj_array(len(num_states))
    for f, (s, u) in enumerate(zip(num_states, num_controls, strict=True)):
        B[f] = rng.dirichlet(np.ones(s), size=(s, u)).transpose(2, 0, 1)
    C = pu.obj_array(len(num_obs))
    for m, o in enumerate(num_obs):
        C[m] = rng.normal(size=o)
    D = pu.obj_array(len(num_states))
    for f, s in enumerate(num_states):
        D[f] = rng.dirichlet(np.ones(s))
    return A, B, C, D


def ours(A, B, C, D, **kw):
    return Agent(list(A), list(B), list(C), list(D), dtype=torch.float64, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpi_matches_pymdp_over_an_episode(seed):
    rng = np.random.default_rng(seed)
    A, B, C, D = random_model(rng, [3, 4], [3, 2, 2], [3, 2, 1])
    ref = PAgent(A=A, B=B, C=C, D=D, policy_len=1)
    me = ours(A, B, C, D, policy_len=1)
    for _ in range(4):
        obs = [int(rng.integers(o)) for o in (3, 4)]
        qs_ref = ref.infer_states(obs)
        qs = me.infer_states(tuple(obs))
        for f in range(3):
            np.testing.assert_allclose(qs[f][0].numpy(), qs_ref[f], atol=TOL)
        q_ref, G_ref = ref.infer_policies()
        q_pi, G = me.infer_policies()
        np.testing.assert_allclose(-G[0].numpy(), G_ref, atol=TOL)
        np.testing.assert_allclose(q_pi[0].numpy(), q_ref, atol=TOL)
        a_ref = ref.sample_action()
        a = me.sample_action()
        np.testing.assert_array_equal(a[0].numpy(), a_ref.astype(int))


@pytest.mark.parametrize("seed", [3, 4])
def test_multi_step_efe_with_param_info_gain_matches_pymdp(seed):
    rng = np.random.default_rng(seed)
    A, B, C, D = random_model(rng, [3, 2], [3, 2], [3, 2])
    pA = pu.obj_array(2)
    pB = pu.obj_array(2)
    for m in range(2):
        pA[m] = A[m] * rng.uniform(0.5, 3.0, size=A[m].shape)
    for f in range(2):
        pB[f] = B[f] * rng.uniform(0.5, 3.0, size=B[f].shape)
    ref = PAgent(A=A, B=B, C=C, D=D, pA=pA, pB=pB, policy_len=2)
    me = ours(A, B, C, D, pA=list(pA), pB=list(pB), policy_len=2, use_param_info_gain=True)
    obs = [1, 0]
    ref.infer_states(obs)
    me.infer_states(tuple(obs))
    # pymdp 0.0.7.1's own loop fails on numpy 2 when adding the pA term (a 1-element
    # array into a float slot), so sum its term functions per policy here
    G_ref = np.zeros(len(ref.policies))
    for i, pol in enumerate(ref.policies):
        qs_pi = pc.get_expected_states(ref.qs, B, pol)
        qo_pi = pc.get_expected_obs(qs_pi, A)
        G_ref[i] = (
            pc.calc_expected_utility(qo_pi, C)
            + pc.calc_states_info_gain(A, qs_pi)
            + float(np.squeeze(pc.calc_pA_info_gain(pA, qo_pi, qs_pi)))
            + float(np.squeeze(pc.calc_pB_info_gain(pB, qs_pi, ref.qs, pol)))
        )
    q_ref = np.exp(16.0 * G_ref - (16.0 * G_ref).max())
    q_ref /= q_ref.sum()
    q_pi, G = me.infer_policies()
    assert G.shape == (1, 36)
    np.testing.assert_allclose(-G[0].numpy(), G_ref, atol=TOL)
    np.testing.assert_allclose(q_pi[0].numpy(), q_ref, atol=TOL)


def test_thousand_one_step_policies_match_pymdp():
    rng = np.random.default_rng(5)
    A, B, C, D = random_model(rng, [12], [8], [40])
    qs = pu.obj_array(1)
    qs[0] = rng.dirichlet(np.ones(8))
    policies = pc.construct_policies([8], [40], 1)
    q_ref, G_ref = pc.update_posterior_policies(qs, A, B, C, policies, gamma=4.0)
    me = ours(A, B, C, D, gamma=4.0)
    me.qs = [torch.as_tensor(qs[0])[None]]
    q_pi, G = me.infer_policies()
    np.testing.assert_allclose(-G[0].numpy(), G_ref, atol=TOL)
    np.testing.assert_allclose(q_pi[0].numpy(), q_ref, atol=TOL)


def test_dirichlet_learning_matches_pymdp():
    rng = np.random.default_rng(6)
    A, B, C, D = random_model(rng, [3, 2], [3, 2], [3, 2])
    pA = pu.obj_array(2)
    pB = pu.obj_array(2)
    pD = pu.obj_array(2)
    for m in range(2):
        pA[m] = A[m] * 2.0
    for f in range(2):
        pB[f] = B[f] * 3.0
        pD[f] = D[f] * 4.0
    ref = PAgent(
        A=A,
        B=B,
        C=C,
        D=D,
        pA=pA,
        pB=pB,
        pD=pD,
        lr_pA=0.7,
        lr_pB=0.3,
        lr_pD=0.9,
        save_belief_hist=True,
    )
    me = ours(A, B, C, D, pA=list(pA), pB=list(pB), pD=list(pD), lr_pA=0.7, lr_pB=0.3, lr_pD=0.9)
    obs = [2, 1]
    ref.infer_states(obs)
    me.infer_states(tuple(obs))
    ref.infer_policies()
    me.infer_policies()
    ref.sample_action()
    me.sample_action()
    qA_ref = ref.update_A(obs)
    qA = me.update_A(tuple(obs))
    qs_prev_ref = ref.qs.copy()
    qs_prev = [q.clone() for q in me.qs]
    obs2 = [0, 0]
    ref.infer_states(obs2)
    me.infer_states(tuple(obs2))
    qB_ref = ref.update_B(qs_prev_ref)
    qB = me.update_B(qs_prev)
    qD_ref = ref.update_D()
    qD = me.update_D()
    for m in range(2):
        np.testing.assert_allclose(qA[m][0].numpy(), qA_ref[m], atol=TOL)
        np.testing.assert_allclose(me.A[m][0].numpy(), ref.A[m], atol=TOL)
    for f in range(2):
        np.testing.assert_allclose(qB[f][0].numpy(), qB_ref[f], atol=TOL)
        np.testing.assert_allclose(me.B[f][0].numpy(), ref.B[f], atol=TOL)
        np.testing.assert_allclose(qD[f][0].numpy(), qD_ref[f], atol=TOL)


@pytest.mark.parametrize("num_states,num_controls", [([4], [3]), ([3, 2], [3, 1])])
def test_mmp_matches_pymdp_over_an_episode(num_states, num_controls):
    rng = np.random.default_rng(7)
    A, B, C, D = random_model(rng, [3, 2], num_states, num_controls)
    ref = PAgent(A=A, B=B, C=C, D=D, policy_len=2, inference_algo="MMP", inference_horizon=2)
    me = ours(A, B, C, D, policy_len=2, inference_algo="mmp", inference_horizon=2)
    for _ in range(4):
        obs = [int(rng.integers(3)), int(rng.integers(2))]
        qs_ref = ref.infer_states(obs)
        me.infer_states(tuple(obs))
        for p in range(len(ref.policies)):
            for t in range(len(qs_ref[p])):
                for f in range(len(num_states)):
                    np.testing.assert_allclose(
                        me.qs_seq[t][f][0, p].numpy(), qs_ref[p][t][f], atol=TOL
                    )
        np.testing.assert_allclose(me.F[0].numpy(), ref.F, atol=TOL)
        q_ref, G_ref = ref.infer_policies()
        q_pi, G = me.infer_policies()
        np.testing.assert_allclose(-G[0].numpy(), G_ref, atol=TOL)
        np.testing.assert_allclose(q_pi[0].numpy(), q_ref, atol=TOL)
        a_ref = ref.sample_action()
        a = me.sample_action()
        np.testing.assert_array_equal(a[0].numpy(), a_ref.astype(int))

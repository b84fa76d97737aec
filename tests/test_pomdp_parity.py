"""Parity with pymdp 1.0 (JAX, 64-bit) on random multi-factor, multi-modality models, to 1e-5.

pymdp 1.0's definitions are daif's ``info_gain="per_modality"`` and
``param_info_gain="exact"``; its utility is Σ_o q(o) C(o) with C used as given, so it gets
ln σ(C) (daif's ln P̃) and both score the same utility. Compared: the posterior over states
(fixed-point iteration with a fixed number of sweeps), every expected free energy term of
every policy, q(π), the action marginals, the action, the empirical prior and the Dirichlet
updates of pA and pB, with modalities depending on subsets of factors, policy_len 1–3,
time-indexed preferences C ``[T, O]`` and a transition depending on two factors
(``B_dependencies``); factors moved by several control factors (``B_action_dependencies``,
with and without ``B_dependencies``); and the NumPy step of small models
(``backend="numpy"``) on the same cases without parameter information gain.

SPM's definitions (``"joint"``, ``"approx"``) are checked against hand-computed cases in
``test_pomdp_maths.py``; pymdp 1.0's ``pymdp.legacy`` is not pymdp 0.0.7.1 (it sums the
information gain per modality too), so no legacy parity is kept.

Needs ``inferactively-pymdp>=1.0`` (the ``bench`` extra, installed by ``make install``).
"""

from __future__ import annotations

import importlib
import os
from functools import partial

import numpy as np
import pytest
import torch

# CI (.ci/run sets DAIF_REQUIRE_REFERENCES=1) installs the bench extra: there a missing pymdp
# is an error, not a skipped parity check
if os.environ.get("DAIF_REQUIRE_REFERENCES") == "1":
    jax = importlib.import_module("jax")
    importlib.import_module("pymdp.control")
else:
    jax = pytest.importorskip("jax")
    pytest.importorskip("pymdp.control")
jax.config.update("jax_enable_x64", True)  # daif runs in float64 here; compare like with like
import jax.numpy as jnp  # noqa: E402
from equinox import filter_jit  # noqa: E402
from pymdp import control as pc  # noqa: E402
from pymdp.agent import Agent as PAgent  # noqa: E402

from daif.pomdp import Agent, learning  # noqa: E402

TOL = 1e-5
NUM_ITER = 16  # pymdp's fixed fpi sweeps; daif runs as many (no early stop)


def log_softmax(c: np.ndarray) -> np.ndarray:
    c = c - c.max(-1, keepdims=True)
    return c - np.log(np.exp(c).sum(-1, keepdims=True))


def random_model(rng, num_obs, num_states, num_controls, a_deps, c_steps=None, b_deps=None):
    """A and B with dependencies (B's default: each factor on itself), C (per planning
    step if ``c_steps``), D, and Dirichlet counts pA, pB around them."""
    A = []
    for o, deps in zip(num_obs, a_deps, strict=True):
        shape = tuple(num_states[f] for f in deps)
        A.append(rng.dirichlet(np.ones(o), size=shape).transpose(len(deps), *range(len(deps))))
    b_deps = b_deps or [[f] for f in range(len(num_states))]
    B = []
    for s, u, deps in zip(num_states, num_controls, b_deps, strict=True):
        shape = (*(num_states[d] for d in deps), u)
        B.append(np.moveaxis(rng.dirichlet(np.ones(s), size=shape), -1, 0))
    C = [rng.normal(size=o if c_steps is None else (c_steps, o)) for o in num_obs]
    D = [rng.dirichlet(np.ones(s)) for s in num_states]
    pA = [a * rng.uniform(0.5, 3.0, size=a.shape) for a in A]
    pB = [b * rng.uniform(0.5, 3.0, size=b.shape) for b in B]
    return A, B, C, D, pA, pB


def jx(xs):
    return [jnp.asarray(x) for x in xs]


@partial(jax.jit, static_argnames=("a_deps", "b_deps"))
def reference_terms(qs, A, B, C, pA, pB, policies, a_deps, b_deps):
    """Per-policy (utility, state info gain, parameter info gain), each summed over the
    horizon, from pymdp 1.0's own term functions (vmapped over policies)."""

    def per_policy(policy):
        q = qs
        util = ig = pig = 0.0
        for t in range(policy.shape[0]):
            q_next = pc.compute_expected_state(q, B, policy[t], b_deps)
            qo = pc.compute_expected_obs(q_next, A, a_deps)
            util += pc.compute_expected_utility(qo, C, t)
            ig += pc.compute_info_gain(q_next, qo, A, a_deps)
            pig -= pc.calc_negative_pA_info_gain(pA, qo, q_next, a_deps)
            pig -= pc.calc_negative_pB_info_gain(pB, q_next, q, b_deps, policy[t])
            q = q_next
        return util, ig, pig

    return jax.vmap(per_policy)(policies)


# compiled once per model: pymdp's eager calls re-trace their scans at every call
_infer_states = filter_jit(lambda ag, obs, prior: ag.infer_states(obs, empirical_prior=prior))
_infer_policies = filter_jit(lambda ag, qs: ag.infer_policies(qs))


CASES = [
    # num_obs, num_states, num_controls, A deps, policy_len, C steps (time-indexed), B deps
    ([3, 4], [3, 2, 2], [3, 2, 1], [[0, 1], [1, 2]], 1, None, None),
    ([3, 2], [3, 2], [2, 2], [[0], [0, 1]], 2, None, None),
    ([2, 3, 2], [2, 3], [2, 2], [[0, 1], [1], [0]], 3, None, None),
    ([3, 2], [3, 2], [2, 2], [[0, 1], [1]], 2, 2, None),
    ([3, 2], [2, 3], [2, 2], [[0, 1], [1]], 2, None, [[0], [0, 1]]),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_agent_step_matches_pymdp_1(case):
    num_obs, num_states, num_controls, deps, policy_len, c_steps, b_deps = CASES[case]
    rng = np.random.default_rng(case)
    A, B, C, D, pA, pB = random_model(rng, num_obs, num_states, num_controls, deps, c_steps, b_deps)
    lnC = [log_softmax(c) for c in C]
    ref = PAgent(
        jx(A),
        jx(B),
        jx(lnC),
        jx(D),
        pA=jx(pA),
        pB=jx(pB),
        A_dependencies=deps,
        B_dependencies=b_deps,
        policy_len=policy_len,
        gamma=16.0,
        sampling_mode="marginal",
        num_iter=NUM_ITER,
        use_param_info_gain=True,
    )
    me = Agent(
        A,
        B,
        C,
        D,
        pA=pA,
        pB=pB,
        A_factor_list=deps,
        B_dependencies=b_deps,
        policy_len=policy_len,
        gamma=16.0,
        use_param_info_gain=True,
        info_gain="per_modality",
        param_info_gain="exact",
        inference_params={"num_iter": NUM_ITER, "dF_tol": 0.0},
        dtype=torch.float64,
    )
    np.testing.assert_array_equal(np.asarray(ref.policies.policy_arr), me.policies.numpy())
    prior_ref = ref.D
    for _ in range(3):
        obs = [int(rng.integers(o)) for o in num_obs]
        qs_ref = _infer_states(ref, [jnp.array([o]) for o in obs], prior_ref)
        qs = me.infer_states(tuple(obs))
        for f in range(len(num_states)):
            np.testing.assert_allclose(qs[f][0].numpy(), np.asarray(qs_ref[f][0, -1]), atol=TOL)

        q_ref, neg_efe = _infer_policies(ref, qs_ref)
        q_pi, G = me.infer_policies()
        util, ig, pig = reference_terms(
            [q[0, -1] for q in qs_ref],
            [a[0] for a in ref.A],
            [b[0] for b in ref.B],
            [c[0] for c in ref.C],
            [p[0] for p in ref.pA],
            [p[0] for p in ref.pB],
            ref.policies.policy_arr,
            tuple(map(tuple, deps)),
            tuple(map(tuple, ref.B_dependencies)),
        )
        terms = me.efe_terms
        np.testing.assert_allclose(terms["utility"][0].numpy(), util, atol=TOL)
        np.testing.assert_allclose(terms["states_info_gain"][0].numpy(), ig, atol=TOL)
        np.testing.assert_allclose(terms["param_info_gain"][0].numpy(), pig, atol=TOL)
        np.testing.assert_allclose(-G[0].numpy(), np.asarray(neg_efe[0]), atol=TOL)
        np.testing.assert_allclose(q_pi[0].numpy(), np.asarray(q_ref[0]), atol=TOL)

        marg_ref = pc.get_marginals(q_ref[0], ref.policies.policy_arr, ref.num_controls)
        for f, m in enumerate(me.action_marginals()):
            np.testing.assert_allclose(m[0].numpy(), np.asarray(marg_ref[f]), atol=TOL)

        a_ref = ref.sample_action(q_ref)
        a = me.sample_action()
        np.testing.assert_array_equal(a.numpy(), np.asarray(a_ref))

        prior_ref = ref.update_empirical_prior(a_ref, qs_ref)
        for f, p in enumerate(me.empirical_prior()):
            np.testing.assert_allclose(p[0].numpy(), np.asarray(prior_ref[f][0]), atol=TOL)


def test_dirichlet_updates_match_pymdp_1():
    """pA and pB after two steps (A over all factors: daif keeps counts per full state)."""
    num_obs, num_states, num_controls = [3, 2], [3, 2], [3, 2]
    deps = [[0, 1], [0, 1]]
    rng = np.random.default_rng(11)
    A, B, C, D, pA, pB = random_model(rng, num_obs, num_states, num_controls, deps)
    ref = PAgent(
        jx(A),
        jx(B),
        jx([log_softmax(c) for c in C]),
        jx(D),
        pA=jx(pA),
        pB=jx(pB),
        A_dependencies=deps,
        num_iter=NUM_ITER,
        sampling_mode="marginal",
        learn_A=True,
        learn_B=True,
    )
    me = Agent(
        A,
        B,
        C,
        D,
        pA=pA,
        pB=pB,
        inference_params={"num_iter": NUM_ITER, "dF_tol": 0.0},
        dtype=torch.float64,
    )
    obs_seq = [[2, 1], [0, 0]]
    qs_hist, acts, my_qs, my_acts = [], [], [], []
    prior_ref = ref.D
    for obs in obs_seq:
        qs_ref = _infer_states(ref, [jnp.array([o]) for o in obs], prior_ref)
        qs_hist.append(qs_ref)
        my_qs.append(me.infer_states(tuple(obs)))
        q_ref, _ = _infer_policies(ref, qs_ref)
        a_ref = ref.sample_action(q_ref)
        acts.append(a_ref)
        me.infer_policies()
        my_acts.append(me.sample_action())
        np.testing.assert_array_equal(my_acts[-1].numpy(), np.asarray(a_ref))
        prior_ref = ref.update_empirical_prior(a_ref, qs_ref)
    # both learn from the whole episode at its end (pymdp's infer_parameters)
    pA_me, pB_me = me.pA, me.pB
    for obs, qs in zip(obs_seq, my_qs, strict=True):
        pA_me = learning.update_obs_likelihood_dirichlet(
            pA_me, me.A, torch.tensor([obs]), qs, lr=0.7
        )
    pB_me = learning.update_state_likelihood_dirichlet(
        pB_me, me.B, my_acts[0], my_qs[1], my_qs[0], lr=0.3
    )
    beliefs = [jnp.concatenate([h[f] for h in qs_hist], 1) for f in range(len(num_states))]
    observations = [jnp.array([[o[m] for o in obs_seq]]) for m in range(len(num_obs))]
    actions = jnp.stack(acts[:-1], 1)  # [batch, T - 1, F]
    ref = ref.infer_parameters(beliefs, observations, actions, lr_pA=0.7, lr_pB=0.3)
    for m in range(len(num_obs)):
        np.testing.assert_allclose(pA_me[m][0].numpy(), np.asarray(ref.pA[m][0]), atol=TOL)
    for f in range(len(num_states)):
        np.testing.assert_allclose(pB_me[f][0].numpy(), np.asarray(ref.pB[f][0]), atol=TOL)
    for m, a in enumerate(learning.expected_parameters(pA_me)):
        np.testing.assert_allclose(a[0].numpy(), np.asarray(ref.A[m][0]), atol=TOL)
    for f, b in enumerate(learning.expected_parameters(pB_me)):
        np.testing.assert_allclose(b[0].numpy(), np.asarray(ref.B[f][0]), atol=TOL)


def test_thousand_one_step_policies_match_pymdp_1():
    rng = np.random.default_rng(5)
    A, B, C, D, _, _ = random_model(rng, [12], [8], [40], [[0]])
    qs = rng.dirichlet(np.ones(8))
    policies = pc.construct_policies([8], [40], 1)
    q_ref, neg_efe = pc.update_posterior_policies(
        policies,
        [jnp.asarray(qs)],
        jx(A),
        jx(B),
        jx([log_softmax(C[0])]),
        jnp.ones(40) / 40,
        None,
        None,
        [[0]],
        [[0]],
        gamma=4.0,
    )
    me = Agent(A, B, C, D, gamma=4.0, info_gain="per_modality", dtype=torch.float64)
    me.qs = [torch.as_tensor(qs)[None]]
    q_pi, G = me.infer_policies()
    np.testing.assert_allclose(-G[0].numpy(), np.asarray(neg_efe), atol=TOL)
    np.testing.assert_allclose(q_pi[0].numpy(), np.asarray(q_ref), atol=TOL)


@pytest.mark.parametrize("case", range(4))
def test_numpy_small_model_path_matches_pymdp_1(case):
    """The NumPy step of small models (``backend="numpy"``, daif.pomdp.small: fixed-point
    iteration, the fused policy tree, q(π) and the argmax) against pymdp 1.0."""
    num_obs, num_states, num_controls, deps, policy_len, c_steps, _ = CASES[case]
    rng = np.random.default_rng(100 + case)
    A, B, C, D, _, _ = random_model(rng, num_obs, num_states, num_controls, deps, c_steps)
    ref = PAgent(
        jx(A),
        jx(B),
        jx([log_softmax(c) for c in C]),
        jx(D),
        A_dependencies=deps,
        policy_len=policy_len,
        gamma=16.0,
        sampling_mode="marginal",
        num_iter=NUM_ITER,
    )
    me = Agent(
        A,
        B,
        C,
        D,
        A_factor_list=deps,
        policy_len=policy_len,
        gamma=16.0,
        info_gain="per_modality",
        inference_params={"num_iter": NUM_ITER, "dF_tol": 0.0},
        dtype=torch.float64,
        backend="numpy",
    )
    assert me._use_small
    prior_ref, state = ref.D, None
    for _ in range(3):
        obs = [int(rng.integers(o)) for o in num_obs]
        qs_ref = _infer_states(ref, [jnp.array([o]) for o in obs], prior_ref)
        q_ref, neg_efe = _infer_policies(ref, qs_ref)
        a_ref = ref.sample_action(q_ref)
        action, state = me.act(tuple(obs), state)
        for f in range(len(num_states)):
            np.testing.assert_allclose(
                state.qs[f][0].numpy(), np.asarray(qs_ref[f][0, -1]), atol=TOL
            )
        np.testing.assert_allclose(-state.G[0].numpy(), np.asarray(neg_efe[0]), atol=TOL)
        np.testing.assert_allclose(state.q_pi[0].numpy(), np.asarray(q_ref[0]), atol=TOL)
        np.testing.assert_array_equal(action.numpy(), np.asarray(a_ref))
        prior_ref = ref.update_empirical_prior(a_ref, qs_ref)
        for f, p in enumerate(me.empirical_prior_of(state)):
            np.testing.assert_allclose(p[0].numpy(), np.asarray(prior_ref[f][0]), atol=TOL)


@pytest.mark.parametrize("b_deps", [None, [[0], [0, 1]]])
def test_several_control_factors_per_transition_match_pymdp_1(b_deps):
    """``B_action_dependencies``: factor 0 moved by control factors 0 and 1, factor 1 by
    control factor 1 (pymdp 1.0 flattens the action axes and samples full policies)."""
    rng = np.random.default_rng(21)
    num_obs, num_states, num_controls = [3, 2], [3, 2], [2, 3]
    a_deps, act_deps = [[0, 1], [1]], [[0, 1], [1]]
    deps = b_deps or [[0], [1]]
    A, _, C, D, _, _ = random_model(rng, num_obs, num_states, [1, 1], a_deps)
    B = []
    for f, (s, ad) in enumerate(zip(num_states, act_deps, strict=True)):
        shape = (*(num_states[d] for d in deps[f]), *(num_controls[c] for c in ad))
        B.append(np.moveaxis(rng.dirichlet(np.ones(s), size=shape), -1, 0))
    ref = PAgent(
        jx(A),
        jx(B),
        jx([log_softmax(c) for c in C]),
        jx(D),
        A_dependencies=a_deps,
        B_dependencies=b_deps,
        B_action_dependencies=act_deps,
        num_controls=num_controls,
        policy_len=2,
        gamma=16.0,
        num_iter=NUM_ITER,
    )
    me = Agent(
        A,
        B,
        C,
        D,
        A_factor_list=a_deps,
        B_dependencies=b_deps,
        B_action_dependencies=act_deps,
        num_controls=num_controls,
        policy_len=2,
        gamma=16.0,
        info_gain="per_modality",
        sampling_mode="full",
        inference_params={"num_iter": NUM_ITER, "dF_tol": 0.0},
        dtype=torch.float64,
    )
    np.testing.assert_array_equal(np.asarray(ref.policies.policy_arr), me.policies.numpy())
    prior_ref, state = ref.D, None
    for _ in range(3):
        obs = [int(rng.integers(o)) for o in num_obs]
        qs_ref = _infer_states(ref, [jnp.array([o]) for o in obs], prior_ref)
        q_ref, neg_efe = _infer_policies(ref, qs_ref)
        a_ref = ref.sample_action(q_ref)
        action, state = me.act(tuple(obs), state)
        for f in range(2):
            np.testing.assert_allclose(
                state.qs[f][0].numpy(), np.asarray(qs_ref[f][0, -1]), atol=TOL
            )
        np.testing.assert_allclose(-state.G[0].numpy(), np.asarray(neg_efe[0]), atol=TOL)
        np.testing.assert_allclose(state.q_pi[0].numpy(), np.asarray(q_ref[0]), atol=TOL)
        np.testing.assert_array_equal(action.numpy(), np.asarray(a_ref))
        np.testing.assert_array_equal(
            me.decode_actions(action).numpy(), np.asarray(ref.decode_multi_actions(a_ref))
        )
        prior_ref = ref.update_empirical_prior(a_ref, qs_ref)
        for f, p in enumerate(me.empirical_prior_of(state)):
            np.testing.assert_allclose(p[0].numpy(), np.asarray(prior_ref[f][0]), atol=TOL)

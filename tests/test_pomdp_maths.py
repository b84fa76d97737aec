"""Hand-computed cases and properties of daif.pomdp's inference, planning and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from daif.pomdp import Agent, GenerativeModel, control, inference, learning
from daif.pomdp.maths import joint_from_marginals, marginals_from_joint, wnorm, wnorm_exact

F64 = torch.float64


def H(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_bayes_rule_for_one_factor():
    A = np.array([[0.8, 0.3], [0.2, 0.7]])
    D = np.array([0.4, 0.6])
    agent = Agent(A, np.eye(2)[:, :, None], D=D, dtype=F64)
    qs = agent.infer_states(0)
    # p(s|o=0) ∝ A[0, s] D[s] = [0.32, 0.18]
    np.testing.assert_allclose(qs[0][0].numpy(), [0.64, 0.36], atol=1e-12)
    # next step: prior B q = q (identity B), observe 1: ∝ [0.2·0.64, 0.7·0.36]
    agent.sample_action()
    qs = agent.infer_states(1)
    post = np.array([0.2 * 0.64, 0.7 * 0.36])
    np.testing.assert_allclose(qs[0][0].numpy(), post / post.sum(), atol=1e-12)


def test_two_state_efe_on_paper():
    A = np.array([[0.9, 0.2], [0.1, 0.8]])
    B = np.zeros((2, 2, 2))
    B[:, :, 0] = np.eye(2)  # stay
    B[1, :, 1] = 1.0  # go to state 1
    C = np.array([math.log(3.0), 0.0])  # σ(C) = [0.75, 0.25]
    agent = Agent(A, B, C=C, gamma=2.0, dtype=F64)
    agent.qs = [torch.tensor([[0.5, 0.5]], dtype=F64)]
    q_pi, G = agent.infer_policies()
    ln75, ln25 = math.log(0.75), math.log(0.25)
    amb_stay = 0.5 * H(0.9, 0.1) + 0.5 * H(0.2, 0.8)
    g_stay = -(0.55 * ln75 + 0.45 * ln25) - (H(0.55, 0.45) - amb_stay)
    g_go = -(0.2 * ln75 + 0.8 * ln25) - 0.0  # certain next state: no information to gain
    np.testing.assert_allclose(G[0].numpy(), [g_stay, g_go], atol=1e-12)
    e = np.exp(-2.0 * np.array([g_stay, g_go]))
    np.testing.assert_allclose(q_pi[0].numpy(), e / e.sum(), atol=1e-12)
    terms = agent.efe_terms
    np.testing.assert_allclose(terms["states_info_gain"][0, 0].item(), H(0.55, 0.45) - amb_stay)


def test_dirichlet_updates_by_hand():
    pA = [torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=F64)]
    A = [pA[0] / pA[0].sum(1, keepdim=True)]
    qs = [torch.tensor([[0.25, 0.75]], dtype=F64)]
    new = learning.update_obs_likelihood_dirichlet(pA, A, torch.tensor([[1]]), qs, lr=0.5, fr=0.9)
    expect = 0.9 * np.array([[1.0, 2.0], [3.0, 4.0]]) + 0.5 * np.array([[0, 0], [0.25, 0.75]])
    np.testing.assert_allclose(new[0][0].numpy(), expect)

    pB = [torch.ones(1, 2, 2, 2, dtype=F64)]
    B = [pB[0] / 2]
    q_next = [torch.tensor([[0.1, 0.9]], dtype=F64)]
    q_prev = [torch.tensor([[0.6, 0.4]], dtype=F64)]
    new_b = learning.update_state_likelihood_dirichlet(
        pB, B, torch.tensor([[1]]), q_next, q_prev, lr=2.0, fr=0.5
    )[0][0]
    # action 1's slice: 0.5·1 + 2·q_next ⊗ q_prev; action 0 untouched
    outer = np.outer([0.1, 0.9], [0.6, 0.4])
    np.testing.assert_allclose(new_b[:, :, 1].numpy(), 0.5 + 2.0 * outer)
    np.testing.assert_allclose(new_b[:, :, 0].numpy(), np.ones((2, 2)))

    pD = [torch.tensor([[1.0, 0.0, 2.0]], dtype=F64)]
    new_d = learning.update_state_prior_dirichlet(pD, [torch.tensor([[0.2, 0.3, 0.5]], dtype=F64)])
    np.testing.assert_allclose(new_d[0][0].numpy(), [1.2, 0.0, 2.5])  # zero count stays zero


def test_structural_zeros_receive_no_counts():
    A = np.array([[1.0, 0.5], [0.0, 0.5]])
    agent = Agent(A, np.eye(2)[:, :, None], pA=A * 2, dtype=F64)
    agent.infer_states(0)
    agent.update_A(0)
    assert agent.pA[0][0, 1, 0].item() == 0.0


def test_wnorm_closed_form():
    a = torch.tensor([[1.0], [3.0]], dtype=F64)
    np.testing.assert_allclose(wnorm(a).numpy().ravel(), [1 / 4 - 1, 1 / 4 - 1 / 3], atol=1e-12)


def test_fpi_exact_for_a_factorised_likelihood():
    rng = np.random.default_rng(0)
    l1, l2 = rng.uniform(0.1, 1, 3), rng.uniform(0.1, 1, 4)
    p1, p2 = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(4))
    lik = torch.tensor(np.outer(l1, l2).reshape(1, -1))
    qs = inference.fpi(torch.log(lik), [torch.tensor(p1)[None], torch.tensor(p2)[None]], [3, 4])
    np.testing.assert_allclose(qs[0][0].numpy(), l1 * p1 / (l1 * p1).sum(), atol=1e-6)
    np.testing.assert_allclose(qs[1][0].numpy(), l2 * p2 / (l2 * p2).sum(), atol=1e-6)


def test_joint_and_marginals_round_trip():
    q1, q2 = torch.tensor([[0.2, 0.8]]), torch.tensor([[0.1, 0.3, 0.6]])
    joint = joint_from_marginals([q1, q2])
    np.testing.assert_allclose(joint[0].numpy(), np.outer([0.2, 0.8], [0.1, 0.3, 0.6]).ravel())
    m1, m2 = marginals_from_joint(joint, [2, 3])
    torch.testing.assert_close(m1, q1)
    torch.testing.assert_close(m2, q2)


def _random_agent(seed: int, **kw) -> Agent:
    rng = np.random.default_rng(seed)
    A = [
        rng.dirichlet(np.ones(3), size=(3, 2)).transpose(2, 0, 1),
        rng.dirichlet(np.ones(2), size=(3, 2)).transpose(2, 0, 1),
    ]
    B = [
        rng.dirichlet(np.ones(3), size=(3, 3)).transpose(2, 0, 1),
        rng.dirichlet(np.ones(2), size=(2, 2)).transpose(2, 0, 1),
    ]
    C = [rng.normal(size=3), rng.normal(size=2)]
    return Agent(A, B, C=C, dtype=F64, **kw)


@pytest.mark.parametrize("seed", range(5))
def test_info_gain_non_negative_and_q_pi_normalised(seed):
    agent = _random_agent(seed, policy_len=2, batch_size=3)
    agent.infer_states(torch.tensor([[0, 1], [2, 0], [1, 1]]))
    q_pi, _ = agent.infer_policies()
    assert (agent.efe_terms["states_info_gain"] >= -1e-12).all()
    torch.testing.assert_close(q_pi.sum(-1), torch.ones(3, dtype=F64))
    for m in agent.action_marginals():
        torch.testing.assert_close(m.sum(-1), torch.ones(3, dtype=F64))


def test_info_gain_zero_for_identity_A_with_certain_belief():
    agent = Agent(np.eye(3), np.stack([np.eye(3)] * 2, -1), dtype=F64)
    agent.infer_states(1)
    agent.infer_policies()
    assert agent.efe_terms["states_info_gain"].abs().max().item() < 1e-12


def test_high_precision_is_argmax_and_zero_precision_is_E():
    agent = _random_agent(7, policy_len=2, gamma=1e6)
    agent.infer_states((0, 0))
    q_pi, G = agent.infer_policies()
    assert q_pi[0].argmax() == G[0].argmin()
    assert q_pi[0].max().item() > 1 - 1e-9
    E = np.random.default_rng(0).dirichlet(np.ones(36))
    flat = _random_agent(7, policy_len=2, gamma=0.0)
    flat.E = torch.tensor(E)
    flat.infer_states((0, 0))
    np.testing.assert_allclose(flat.infer_policies()[0][0].numpy(), E, atol=1e-12)


@pytest.mark.parametrize("info_gain", ["joint", "per_modality"])
@pytest.mark.parametrize("fused", [True, False])
def test_tree_evaluation_equals_policy_by_policy_rollout(info_gain, fused):
    agent = _random_agent(3, policy_len=3)
    agent.infer_states((2, 1))
    # fused: each level's terms from joint-action operators; else factor by factor
    prep = control.PreparedModel(
        agent.A, agent.B, agent.C, info_gain=info_gain, fused_limit=2**22 if fused else 0
    )
    assert (prep.fwd_values is not None) == fused
    G = control.evaluate_policies(agent.qs, prep, agent.tree)["G"]
    A = [a[0] for a in agent.A]
    B = [b[0] for b in agent.B]
    lnC = [torch.log_softmax(c[0], 0) for c in agent.C]
    for p, pol in enumerate(agent.policies[:40]):
        q = [x[0] for x in agent.qs]
        g = 0.0
        for t in range(3):
            q = [B[f][:, :, pol[t, f]] @ q[f] for f in range(2)]
            joint = torch.outer(q[0], q[1])
            qo = [torch.einsum("oij,ij->o", a, joint) for a in A]
            qo_joint = torch.einsum("aij,bij,ij->ab", A[0], A[1], joint)  # joint outcomes
            amb = -sum((joint * (a * torch.log(a)).sum(0)).sum() for a in A)
            if info_gain == "joint":
                ent = -(qo_joint * torch.log(qo_joint)).sum()
            else:
                ent = -sum((o * torch.log(o)).sum() for o in qo)
            g -= sum((o * c).sum() for o, c in zip(qo, lnC, strict=True)) + ent - amb
        np.testing.assert_allclose(G[0, p].item(), float(g), atol=1e-10)


@pytest.mark.parametrize("subset", [False, True])
def test_policy_operator_equals_level_by_level_prediction(subset):
    """The whole tree's values as one map of the joint state equal the level-by-level
    propagation, for all policies and for a subset (a tree that is not full)."""
    agent = _random_agent(3, policy_len=3)
    policies = agent.policies[::7] if subset else agent.policies
    tree = control.PolicyTree.from_policies(policies)
    prep = agent.prep
    W = control.policy_operator(prep, tree)
    assert W is not None and control.policy_operator(prep, tree) is W  # cached
    joint = torch.outer(*[q[0] for q in agent.qs]).reshape(1, 1, -1)
    level_by_level = torch.cat(control._node_values(joint, prep, tree), 1)
    n, k = level_by_level.shape[1:]
    assert n == sum(int(p.shape[0]) for p in tree.parents)
    torch.testing.assert_close((joint @ W).reshape(1, n, k), level_by_level, rtol=0, atol=1e-12)
    assert control.policy_operator(prep, control.PolicyTree.from_policies(policies), 0) is None


def test_policy_enumeration_order_and_count():
    pols = control.construct_policies([3, 2], [3, 1], policy_len=2)
    assert pols.shape == (9, 2, 2)
    assert pols[:, :, 1].eq(0).all()
    assert pols[1].tolist() == [[0, 0], [1, 0]]  # the last step varies fastest


def test_action_selection_deterministic_and_stochastic():
    m = [torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])]
    assert control.sample_action(m).tolist() == [[1], [0]]
    gen = torch.Generator().manual_seed(0)
    draws = control.sample_action([m[0][:1].expand(4000, 3)], "stochastic", 1.0, gen)
    freq = torch.bincount(draws.ravel(), minlength=3).double() / 4000
    np.testing.assert_allclose(freq.numpy(), [0.1, 0.7, 0.2], atol=0.03)
    with pytest.raises(ValueError, match="action_selection"):
        control.sample_action(m, "greedy")


def test_sophisticated_depth_one_equals_one_step_enumeration():
    a1 = _random_agent(4, planning="sophisticated", policy_len=1)
    a2 = _random_agent(4, policy_len=1)
    for ag in (a1, a2):
        ag.infer_states((1, 0))
    torch.testing.assert_close(a1.infer_policies()[1], a2.infer_policies()[1])


def test_batched_learning_agents_match_single_agents():
    rng = np.random.default_rng(11)
    A = rng.dirichlet(np.ones(3), size=4).T
    B = rng.dirichlet(np.ones(4), size=(4, 2)).transpose(2, 0, 1)
    kw = dict(pA=A * 3.0, pB=B * 2.0, policy_len=2, use_param_info_gain=True, dtype=F64)
    batch = Agent(A, B, **kw, batch_size=2)
    singles = [Agent(A, B, **kw) for _ in range(2)]
    obs_seq = [[0, 2], [1, 1], [2, 0]]
    for obs in obs_seq:
        qs_prev = [q.clone() for q in batch.qs]
        batch.infer_states(torch.tensor([[o] for o in obs]))
        q_b, _ = batch.infer_policies()
        batch.update_A(torch.tensor([[o] for o in obs]))
        if batch.action is not None:
            batch.update_B(qs_prev)
        for i, ag in enumerate(singles):
            prev_i = [q.clone() for q in ag.qs]
            ag.infer_states(obs[i])
            q_s, _ = ag.infer_policies()
            torch.testing.assert_close(q_b[i], q_s[0])
            ag.update_A(obs[i])
            if ag.action is not None:
                ag.update_B(prev_i)
            torch.testing.assert_close(batch.A[0][i], ag.A[0][0])
            torch.testing.assert_close(batch.B[0][i], ag.B[0][0])
        a_b = batch.sample_action()
        for i, ag in enumerate(singles):
            assert ag.sample_action()[0].tolist() == a_b[i].tolist()


def test_full_sampling_mode_takes_the_best_policys_first_action():
    agent = _random_agent(9, policy_len=2, sampling_mode="full")
    agent.infer_states((1, 1))
    _, G = agent.infer_policies()
    best = agent.policies[G[0].argmin()]
    assert agent.sample_action()[0].tolist() == best[0].tolist()


def _two_modality_info_gain(eps: float, info_gain: str) -> float:
    """State info gain of one step when two modalities both report the state of a
    2-state factor with error ``eps``, from a uniform belief."""
    A = np.array([[1 - eps, eps], [eps, 1 - eps]])
    agent = Agent(
        [A, A],
        np.eye(2)[:, :, None],
        D=np.array([0.5, 0.5]),
        use_utility=False,
        info_gain=info_gain,
        dtype=F64,
    )
    agent.qs = [torch.tensor([[0.5, 0.5]], dtype=F64)]
    agent.infer_policies()
    return float(agent.efe_terms["states_info_gain"][0, 0])


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_joint_and_per_modality_info_gain_by_hand(eps):
    # per modality: each o_m is a fair coin, H[A(·|s)] = H(eps): 2 (ln 2 − H(eps))
    per_mod = 2 * (math.log(2) - H(1 - eps, eps))
    # joint: q(o1 = o2) = (1−eps)² + eps² split over two outcomes, q(o1 ≠ o2) = 2 eps(1−eps)
    same, diff = ((1 - eps) ** 2 + eps**2) / 2, eps * (1 - eps)
    joint = H(same, same, diff, diff) - 2 * H(1 - eps, eps)
    assert _two_modality_info_gain(eps, "per_modality") == pytest.approx(per_mod, abs=1e-12)
    assert _two_modality_info_gain(eps, "joint") == pytest.approx(joint, abs=1e-12)
    # the second copy of the same sensor tells less than the first: joint < per modality
    assert joint < per_mod - 0.1


def test_exact_wnorm_closed_form():
    # ψ(n) = H_{n−1} − γ for integers: a = [2, 1], a₀ = 3
    # gain(0) = ψ(3) − ψ(4) + ln 3 − ln 2 = −1/3 + ln 1.5
    # gain(1) = ψ(2) − ψ(4) + ln 3 − ln 1 = −(1/2 + 1/3) + ln 3
    w = wnorm_exact(torch.tensor([[2.0], [1.0]], dtype=F64), dim=0)
    expected = [-(math.log(1.5) - 1 / 3), -(math.log(3) - 5 / 6)]
    np.testing.assert_allclose(w[:, 0].numpy(), expected, atol=1e-12)
    # large counts: gain ≈ (1/a_i − 1/a₀)/2, half of spm_wnorm
    big = torch.tensor([[3000.0], [1000.0]], dtype=F64)
    np.testing.assert_allclose(wnorm_exact(big), wnorm(big) / 2, rtol=1e-3)


def test_exact_wnorm_is_the_kl_of_a_one_count_update():
    # KL[Dir(a + e_i) ‖ Dir(a)] from the Dirichlet KL's closed form
    a = torch.tensor([1.5, 0.7, 4.0], dtype=F64)
    for i in range(3):
        b = a.clone()
        b[i] += 1
        kl = (
            torch.lgamma(b.sum())
            - torch.lgamma(b).sum()
            - torch.lgamma(a.sum())
            + torch.lgamma(a).sum()
            + ((b - a) * (torch.digamma(b) - torch.digamma(b.sum()))).sum()
        )
        assert float(-wnorm_exact(a)[i]) == pytest.approx(float(kl), abs=1e-12)


def test_param_info_gain_choice_scales_the_novelty_term():
    pA = np.array([[2.0, 1.0], [1.0, 1.0]])
    common = dict(pA=pA, use_utility=False, use_states_info_gain=False, dtype=F64)
    B = np.eye(2)[:, :, None]
    out = {}
    for kind in ("approx", "exact"):
        agent = Agent(None, B, use_param_info_gain=True, param_info_gain=kind, **common)
        agent.qs = [torch.tensor([[1.0, 0.0]], dtype=F64)]
        agent.infer_policies()
        out[kind] = float(agent.efe_terms["param_info_gain"][0, 0])
    # state 0 for sure: q(o) = [2/3, 1/3]; gain = −Σ_o q(o) W(o, 0)
    q = np.array([2 / 3, 1 / 3])
    approx = -(q * np.array([1 / 3 - 1 / 2, 1 / 3 - 1])).sum()
    exact = q[0] * (math.log(1.5) - 1 / 3) + q[1] * (math.log(3) - 5 / 6)
    assert out["approx"] == pytest.approx(approx, abs=1e-12)
    assert out["exact"] == pytest.approx(exact, abs=1e-12)


def test_unknown_info_gain_names_are_refused():
    with pytest.raises(ValueError, match="info_gain must be one of"):
        Agent(np.eye(2), np.eye(2)[:, :, None], info_gain="sum")
    with pytest.raises(ValueError, match="param_info_gain must be one of"):
        Agent(np.eye(2), np.eye(2)[:, :, None], param_info_gain="digamma")


def test_masked_modality_is_ignored_by_hand():
    A1 = np.array([[0.8, 0.3], [0.2, 0.7]])
    A2 = np.array([[0.9, 0.1], [0.1, 0.9]])
    agent = Agent([A1, A2], np.eye(2)[:, :, None], D=np.array([0.4, 0.6]), dtype=F64)
    # modality 1 missing (its index, even out of range, is ignored): p(s|o1=0) ∝ [0.32, 0.18]
    qs = agent.infer_states((0, 5), mask=(True, False))
    np.testing.assert_allclose(qs[0][0].numpy(), [0.64, 0.36], atol=1e-12)


@pytest.mark.parametrize(
    "kw", [{"inference_params": {"dF_tol": 0.0}}, {"inference_algo": "mmp", "policy_len": 2}]
)
def test_masked_modality_equals_the_model_without_it(kw):
    full = _random_agent(4, **kw)
    only_first = Agent(
        [a[0].numpy() for a in full.A[:1]],
        [b[0].numpy() for b in full.B],
        D=[d[0].numpy() for d in full.D],
        dtype=F64,
        **kw,
    )
    for o in range(3):
        full.reset()
        only_first.reset()
        qs = full.infer_states((o, 1), mask=(True, False))
        ref = only_first.infer_states((o,))
        for q, r in zip(qs, ref, strict=True):
            torch.testing.assert_close(q, r, rtol=0, atol=1e-12)


def test_fully_masked_observation_keeps_the_prior_and_its_predictive():
    agent = _random_agent(5, batch_size=2)
    rng = np.random.default_rng(5)
    D = [torch.as_tensor(rng.dirichlet(np.ones(s)))[None] for s in (3, 2)]
    agent.D = D
    mask = torch.tensor([[False, False], [True, False]])
    qs = agent.infer_states(torch.tensor([[2, 1], [2, 1]]), mask=mask)
    # row 0 saw nothing: the posterior is the prior D, so every modality's predicted
    # outcome Σ_s A(o|s) q(s) is its prior predictive
    for q, d in zip(qs, D, strict=True):
        torch.testing.assert_close(q[0], d[0], rtol=0, atol=1e-12)
    joint_q = torch.outer(qs[0][0], qs[1][0]).reshape(-1)
    joint_d = torch.outer(D[0][0], D[1][0]).reshape(-1)
    for a in agent.A:
        a = a[0].reshape(a.shape[1], -1)
        torch.testing.assert_close(a @ joint_q, a @ joint_d, rtol=0, atol=1e-12)
    # row 1 saw modality 0 and is no longer at the prior
    assert not torch.allclose(qs[0][1], D[0][0])


def test_masked_modality_learns_nothing():
    rng = np.random.default_rng(6)
    pA = [rng.uniform(0.5, 2.0, size=(3, 2)), rng.uniform(0.5, 2.0, size=(2, 2))]
    agent = Agent(None, np.eye(2)[:, :, None], pA=pA, dtype=F64)
    agent.infer_states((1, 0), mask=(True, False))
    new = agent.update_A((1, 0), mask=(True, False))
    np.testing.assert_allclose(new[1][0].numpy(), pA[1], atol=1e-12)
    assert not np.allclose(new[0][0].numpy(), pA[0])


def test_mask_shape_and_type_are_checked():
    agent = _random_agent(7)
    with pytest.raises(ValueError, match="mask has shape"):
        agent.infer_states((0, 1), mask=(True,))
    with pytest.raises(ValueError, match="mask must be boolean"):
        agent.infer_states((0, 1), mask=(1, 0))


def test_per_agent_gamma_and_alpha():
    kw = dict(policy_len=2, inference_params={"dF_tol": 0.0})
    batch = _random_agent(8, batch_size=3, gamma=[0.0, 4.0, 16.0], **kw)
    obs = torch.tensor([[2, 1]] * 3)
    batch.infer_states(obs)
    q_pi, _ = batch.infer_policies()
    # γ = 0: uniform; otherwise each row is the single agent with that γ
    torch.testing.assert_close(q_pi[0], torch.full_like(q_pi[0], 1 / q_pi.shape[1]))
    for row, gamma in ((1, 4.0), (2, 16.0)):
        single = _random_agent(8, gamma=gamma, **kw)
        single.infer_states((2, 1))
        q_single, _ = single.infer_policies()
        torch.testing.assert_close(q_pi[row], q_single[0], rtol=0, atol=1e-12)
    # α: a near-infinite precision always takes the argmax, α = 0 samples uniformly
    m = [torch.tensor([[0.7, 0.3], [0.7, 0.3]], dtype=F64)]
    alpha = torch.tensor([[1e6], [0.0]], dtype=F64)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack(
        [control.sample_action(m, "stochastic", alpha, gen)[:, 0] for _ in range(400)]
    )
    assert (draws[:, 0] == 0).all()
    assert 0.4 < draws[:, 1].float().mean() < 0.6


def test_per_agent_precision_is_checked():
    with pytest.raises(ValueError, match="one per agent"):
        _random_agent(0, batch_size=2, gamma=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at agent 1"):
        _random_agent(0, batch_size=2, alpha=[1.0, -2.0])


@pytest.mark.parametrize("fused", [True, False])
def test_time_indexed_preferences_by_hand(fused):
    # one factor, 2 states, "stay" or "go to state 1"; A = I; C per step
    B = np.zeros((2, 2, 2))
    B[:, :, 0] = np.eye(2)
    B[1, :, 1] = 1.0
    C = np.array([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])  # step 0 likes o=0, step 1 o=1
    agent = Agent(np.eye(2), B, C=C, D=np.array([1.0, 0.0]), policy_len=2, dtype=F64)
    agent.qs = [torch.tensor([[1.0, 0.0]], dtype=F64)]
    prep = control.PreparedModel(agent.A, agent.B, agent.C, fused_limit=2**22 if fused else 0)
    assert (prep.fwd_values is not None) == fused
    util = control.evaluate_policies(agent.qs, prep, agent.tree)["utility"][0]
    # ln σ(C_0) = [ln .75, ln .25], ln σ(C_1) = [ln .25, ln .75]; states are certain
    lo, hi = math.log(0.25), math.log(0.75)
    expected = {(0, 0): hi + lo, (0, 1): hi + hi, (1, 0): lo + hi, (1, 1): lo + hi}
    for p, pol in enumerate(agent.policies[:, :, 0].tolist()):
        assert float(util[p]) == pytest.approx(expected[tuple(pol)], abs=1e-12)
    # stay, then go: the only policy that meets both steps' preferences
    q_pi, _ = agent.infer_policies()
    assert agent.policies[int(q_pi[0].argmax()), :, 0].tolist() == [0, 1]


def test_time_indexed_preferences_are_checked():
    B = np.eye(2)[:, :, None].repeat(2, 2)
    with pytest.raises(ValueError, match=r"C\[0\] has preferences for 1 steps; policy_len is 2"):
        Agent(np.eye(2), B, C=np.zeros((1, 2)), policy_len=2)
    with pytest.raises(ValueError, match=r"C\[0\] has shape \(2, 3\)"):
        Agent(np.eye(2), B, C=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="needs planning='enumerate'"):
        Agent(np.eye(2), B, C=np.zeros((2, 2)), policy_len=2, inference_algo="mmp")


def test_transition_depending_on_a_second_factor_by_hand():
    # factor 0: a switch (2 states, uncontrolled, stays); factor 1: a light (2 states)
    # whose action 1 toggles it only when the switch is on: B1[s1', s0, s1, u]
    B0 = np.eye(2)[:, :, None]
    B1 = np.zeros((2, 2, 2, 2))
    for s0 in range(2):
        for s1 in range(2):
            B1[s1, s0, s1, 0] = 1.0  # wait
            B1[1 - s1 if s0 == 1 else s1, s0, s1, 1] = 1.0  # toggle (if the switch is on)
    C = [np.array([0.0, math.log(3.0)])]  # prefer seeing the light on: ln σ(C) = ln [.25, .75]
    agent = Agent(
        [np.eye(2)],
        [B0, B1],
        C=C,
        A_factor_list=[[1]],
        B_dependencies=[[0], [0, 1]],
        dtype=F64,
    )
    agent.qs = [torch.tensor([[0.3, 0.7]], dtype=F64), torch.tensor([[1.0, 0.0]], dtype=F64)]
    agent.infer_policies()
    util = agent.efe_terms["utility"][0]
    # toggle: q(light') = 0.3·[1, 0] + 0.7·[0, 1] = [0.3, 0.7]; wait: [1, 0]
    lo, hi = math.log(0.25), math.log(0.75)
    assert float(util[0]) == pytest.approx(lo, abs=1e-12)
    assert float(util[1]) == pytest.approx(0.3 * lo + 0.7 * hi, abs=1e-12)
    action = agent.sample_action()
    assert action[0].tolist() == [0, 1]
    prior = agent.empirical_prior()
    np.testing.assert_allclose(prior[0][0].numpy(), [0.3, 0.7], atol=1e-12)
    np.testing.assert_allclose(prior[1][0].numpy(), [0.3, 0.7], atol=1e-12)


def test_b_dependencies_are_checked():
    A = np.full((2, 2, 3), 0.5)
    B0 = np.eye(2)[:, :, None]
    B1 = np.eye(3)[:, :, None]
    with pytest.raises(ValueError, match=r"B\[1\] must have shape \[S, \*\[2, 3\], U\]"):
        Agent(A, [B0, B1], B_dependencies=[[0], [0, 1]])
    with pytest.raises(ValueError, match=r"B_dependencies\[1\] names factor 5"):
        Agent(A, [B0, B1], B_dependencies=[[0], [5]])
    B1_deps = np.full((3, 2, 3, 2), 1 / 3)
    with pytest.raises(ValueError, match=r"B_dependencies .* needs inference_algo='fpi'"):
        Agent(A, [B0, B1_deps], B_dependencies=[[0], [0, 1]], inference_algo="mmp")


def _random_model(seed: int) -> GenerativeModel:
    rng = np.random.default_rng(seed)
    return GenerativeModel(
        [rng.dirichlet(np.ones(3), size=(3, 2)).transpose(2, 0, 1)],
        [
            rng.dirichlet(np.ones(3), size=(3, 2)).transpose(2, 0, 1),
            rng.dirichlet(np.ones(2), size=(2, 2)).transpose(2, 0, 1),
        ],
        C=[rng.normal(size=3)],
        D=[rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(2))],
        E=rng.dirichlet(np.ones(16)),
    )


def test_a_batch_of_different_models_acts_like_each_model_alone():
    models = [_random_model(s) for s in (11, 12, 13)]
    kw = dict(policy_len=2, dtype=F64, gamma=[4.0, 8.0, 16.0])
    batch = Agent(model=models, batch_size=3, **kw)
    singles = [
        Agent(model=m, dtype=F64, policy_len=2, gamma=g)
        for m, g in zip(models, kw["gamma"], strict=True)
    ]
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = rng.integers(3, size=(3, 1))
        qs = batch.infer_states(torch.as_tensor(obs))
        q_pi, _ = batch.infer_policies()
        action = batch.sample_action()
        for i, single in enumerate(singles):
            qs_i = single.infer_states(int(obs[i, 0]))
            q_i, _ = single.infer_policies()
            a_i = single.sample_action()
            for f in range(2):
                torch.testing.assert_close(qs[f][i], qs_i[f][0], rtol=0, atol=1e-12)
            torch.testing.assert_close(q_pi[i], q_i[0], rtol=0, atol=1e-12)
            assert action[i].tolist() == a_i[0].tolist()


def test_a_batch_of_models_must_share_sizes():
    other = GenerativeModel(np.eye(3), np.eye(3)[:, :, None])
    with pytest.raises(
        ValueError,
        match=r"model\[1\] num_states is \[3\] but model\[0\]'s is \[3, 2\]",
    ):
        Agent(model=[_random_model(1), other], batch_size=2)
    with pytest.raises(ValueError, match="model has 1 entries; batch_size is 2"):
        Agent(model=[_random_model(1)], batch_size=2)

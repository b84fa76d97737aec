"""The functional (state-passing) API of daif.pomdp.Agent and its NumPy small-model path.

* ``act(obs, state, episode_start, deterministic) -> (action, state)``: the same state in
  gives the same beliefs out, separate states are separate episodes (interleaving them
  changes nothing), ``episode_start`` resets a row to the prior, the stateful pymdp calls
  are the same sequence on ``agent.state``.
* ``backend="numpy"`` (:mod:`daif.pomdp.small`) computes what ``backend="torch"`` does:
  held equal on random multi-factor, multi-modality models with masks, time-indexed C,
  per-agent γ, a batch of different models and row resets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from daif.pomdp import Agent, AgentState, GenerativeModel
from daif.pomdp.tasks import tmaze_model

F64 = torch.float64


def random_model(rng, num_obs, num_states, num_controls, a_deps, c_steps=None):
    A = []
    for o, deps in zip(num_obs, a_deps, strict=True):
        shape = tuple(num_states[f] for f in deps)
        A.append(rng.dirichlet(np.ones(o), size=shape).transpose(len(deps), *range(len(deps))))
    B = [
        np.moveaxis(rng.dirichlet(np.ones(s), size=(s, u)), -1, 0)
        for s, u in zip(num_states, num_controls, strict=True)
    ]
    C = [rng.normal(size=o if c_steps is None else (c_steps, o)) for o in num_obs]
    D = [rng.dirichlet(np.ones(s)) for s in num_states]
    return GenerativeModel(A, B, C, D, A_factor_list=a_deps)


def assert_states_equal(a: AgentState, b: AgentState, atol: float = 1e-12) -> None:
    for x, y in zip(a.qs, b.qs, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)
    torch.testing.assert_close(a.q_pi, b.q_pi, rtol=0, atol=atol)
    torch.testing.assert_close(a.G, b.G, rtol=0, atol=atol)
    assert torch.equal(a.action, b.action)
    assert torch.equal(a.has_action, b.has_action)


# ---------------------------------------------------------------- hand-computed
def test_act_threads_bayes_rule_through_the_state():
    """One factor, identity B: after o₀ then o₁ the posterior is ∝ A[o₁]·A[o₀]·D."""
    A = np.array([[0.8, 0.3], [0.2, 0.7]])
    D = np.array([0.4, 0.6])
    agent = Agent(A, np.eye(2)[:, :, None], D=D, dtype=F64)
    _, s1 = agent.act(0)
    np.testing.assert_allclose(s1.qs[0][0].numpy(), [0.32 / 0.5, 0.18 / 0.5], atol=1e-12)
    _, s2 = agent.act(1, s1)
    post = np.array([0.2 * 0.8 * 0.4, 0.7 * 0.3 * 0.6])
    np.testing.assert_allclose(s2.qs[0][0].numpy(), post / post.sum(), atol=1e-12)
    # s1 was not changed by the second call
    np.testing.assert_allclose(s1.qs[0][0].numpy(), [0.64, 0.36], atol=1e-12)
    assert s1.t.tolist() == [1] and s2.t.tolist() == [2]


def test_episode_start_resets_a_row_to_the_prior():
    A = np.array([[0.8, 0.3], [0.2, 0.7]])
    D = np.array([0.4, 0.6])
    agent = Agent(A, np.eye(2)[:, :, None], D=D, batch_size=2, dtype=F64)
    _, state = agent.act(np.array([[0], [0]]))
    _, state = agent.act(np.array([[1], [1]]), state, episode_start=np.array([True, False]))
    # row 0 started over: prior D, one observation o = 1 → ∝ [0.2·0.4, 0.7·0.6]
    fresh = np.array([0.08, 0.42]) / 0.5
    np.testing.assert_allclose(state.qs[0][0].numpy(), fresh, atol=1e-12)
    cont = np.array([0.2 * 0.32, 0.7 * 0.18])
    np.testing.assert_allclose(state.qs[0][1].numpy(), cont / cont.sum(), atol=1e-12)
    assert state.t.tolist() == [1, 2]


# ---------------------------------------------------------------- behaviour of the state
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("algo", ["fpi", "mmp"])
def test_same_state_in_gives_the_same_beliefs_out(backend, algo):
    agent = Agent(
        model=tmaze_model(),
        policy_len=2,
        inference_algo=algo,
        inference_horizon=2,
        backend=backend,
        dtype=F64,
    )
    _, state = agent.act([0, 0, 1])
    before = [q.clone() for q in state.qs]
    _, a = agent.act([3, 0, 1], state)
    _, b = agent.act([3, 0, 1], state)
    assert_states_equal(a, b, atol=0.0)
    for x, y in zip(before, state.qs, strict=True):
        assert torch.equal(x, y)  # the state passed in is not modified


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("algo", ["fpi", "mmp"])
def test_interleaved_episodes_equal_episodes_run_one_after_the_other(backend, algo):
    model = tmaze_model(cue_validity=0.8, reward_prob=0.9)
    kw = dict(policy_len=2, inference_algo=algo, inference_horizon=2, backend=backend, dtype=F64)
    agent = Agent(model=model, **kw)
    ep1 = [[0, 0, 1], [3, 0, 1], [3, 0, 1], [1, 1, 1]]
    ep2 = [[0, 0, 0], [3, 0, 0], [2, 2, 0], [2, 1, 0]]

    def run(episode, state=None):
        states = []
        for obs in episode:
            _, state = agent.act(obs, state)
            states.append(state)
        return states

    alone = run(ep1) + run(ep2)
    s1 = s2 = None
    mixed1, mixed2 = [], []
    for o1, o2 in zip(ep1, ep2, strict=True):
        _, s1 = agent.act(o1, s1)
        _, s2 = agent.act(o2, s2)
        mixed1.append(s1)
        mixed2.append(s2)
    for a, b in zip(alone, mixed1 + mixed2, strict=True):
        assert_states_equal(a, b, atol=0.0)


@pytest.mark.parametrize("algo", ["fpi", "mmp"])
def test_stateful_calls_are_act_on_agent_state(algo):
    kw = dict(policy_len=2, inference_algo=algo, inference_horizon=3, dtype=F64)
    stateful = Agent(model=tmaze_model(), **kw)
    functional = Agent(model=tmaze_model(), **kw)
    state = None
    for obs in ([0, 0, 1], [3, 0, 1], [1, 1, 1], [1, 1, 1]):
        stateful.infer_states(obs)
        stateful.infer_policies()
        a = stateful.sample_action()
        b, state = functional.act(obs, state)
        assert torch.equal(a, b)
        assert_states_equal(stateful.state, state, atol=0.0)


def test_a_row_reset_equals_a_fresh_agent_under_mmp():
    """Row-wise episode starts work under MMP: the reset row's window restarts."""
    model = tmaze_model(cue_validity=0.8, reward_prob=0.9)
    kw = dict(policy_len=2, inference_algo="mmp", inference_horizon=2, dtype=F64)
    batch = Agent(model=model, batch_size=2, **kw)
    single = Agent(model=model, **kw)
    state = None
    for obs in ([[0, 0, 1], [0, 0, 0]], [[3, 0, 1], [3, 0, 0]]):
        _, state = batch.act(np.array(obs), state)
    _, state = batch.act(np.array([[1, 1, 1], [0, 0, 1]]), state, np.array([False, True]))
    _, ref = single.act([0, 0, 1])
    torch.testing.assert_close(state.q_pi[1], ref.q_pi[0], rtol=0, atol=1e-12)
    for f in range(2):
        torch.testing.assert_close(state.qs[f][1], ref.qs[f][0], rtol=0, atol=1e-12)


def test_a_state_for_more_rows_than_the_batch_runs_on_the_torch_path():
    """Evaluation may run more environments than the agent was built for."""
    agent = Agent(model=tmaze_model(), policy_len=2, dtype=F64)
    obs = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 1]])
    a, state = agent.act(obs, agent.init_state(3))
    assert state.batch_size == 3 and a.shape == (3, 2)
    _, one = agent.act([0, 0, 1])
    torch.testing.assert_close(state.q_pi[0], one.q_pi[0], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- NumPy path = torch path
CASES = [
    # num_obs, num_states, num_controls, A deps, policy_len, C steps
    ([3, 4], [3, 2, 2], [3, 2, 1], [[0, 1], [1, 2]], 1, None),
    ([3, 2], [3, 2], [2, 2], [[0], [0, 1]], 2, None),
    ([2, 3, 2], [2, 3], [2, 2], [[0, 1], [1], [0]], 3, None),
    ([3, 2], [3, 2], [2, 2], [[0, 1], [1]], 2, 2),
    ([4], [5], [3], [[0]], 2, None),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("info_gain", ["joint", "per_modality"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_numpy_path_equals_torch_path(case, info_gain, batch):
    """One agent runs the fixed-point iteration on Python floats, a batch on arrays."""
    num_obs, num_states, num_controls, deps, policy_len, c_steps = CASES[case]
    rng = np.random.default_rng(case)
    model = random_model(rng, num_obs, num_states, num_controls, deps, c_steps)
    kw = dict(
        model=model,
        policy_len=policy_len,
        batch_size=batch,
        gamma=[2.0, 8.0, 16.0][:batch] if batch > 1 else 8.0,
        info_gain=info_gain,
        dtype=F64,
    )
    fast, slow = Agent(backend="numpy", **kw), Agent(backend="torch", **kw)
    assert fast._use_small and not slow._use_small
    sf = ss = None
    for step in range(4):
        obs = np.stack([rng.integers(o, size=batch) for o in num_obs], 1)
        mask = rng.random(obs.shape) > 0.3 if step == 2 else None
        start = np.array([False, step == 3, False][:batch]) if step else None
        af, sf = fast.act(obs, sf, start, mask=mask)
        as_, ss = slow.act(obs, ss, start, mask=mask)
        assert torch.equal(af, as_)
        assert_states_equal(sf, ss, atol=1e-10)
        for key in ("utility", "states_info_gain", "param_info_gain"):
            torch.testing.assert_close(sf.efe_terms[key], ss.efe_terms[key], rtol=0, atol=1e-10)
        for mf, ms in zip(fast.marginals_of(sf), slow.marginals_of(ss), strict=True):
            torch.testing.assert_close(mf, ms, rtol=0, atol=1e-12)


def test_numpy_path_with_a_batch_of_models_and_stochastic_actions():
    rng = np.random.default_rng(7)
    models = [random_model(rng, [3, 2], [3, 2], [2, 2], [[0, 1], [1]]) for _ in range(2)]
    kw = dict(model=models, batch_size=2, policy_len=2, dtype=F64, action_selection="stochastic")
    fast = Agent(backend="numpy", seed=3, **kw)
    slow = Agent(backend="torch", seed=3, **kw)
    sf = ss = None
    for _ in range(4):
        obs = np.stack([rng.integers(o, size=2) for o in (3, 2)], 1)
        af, sf = fast.act(obs, sf)
        as_, ss = slow.act(obs, ss)
        assert torch.equal(af, as_)  # the same generator draws from the same marginals
        assert_states_equal(sf, ss, atol=1e-10)


def test_tmaze_runs_on_the_numpy_path_by_default():
    agent = Agent(model=tmaze_model(), policy_len=2)
    assert agent._use_small
    assert not Agent(model=tmaze_model(), policy_len=2, backend="torch")._use_small
    assert not Agent(model=tmaze_model(), policy_len=2, use_param_info_gain=True)._use_small
    with pytest.raises(ValueError, match="backend must be one of"):
        Agent(model=tmaze_model(), backend="jax")


def test_numpy_path_names_a_bad_observation():
    agent = Agent(model=tmaze_model(), policy_len=1)
    with pytest.raises(ValueError, match="out of range for modality 2"):
        agent.act([0, 0, 5])
    with pytest.raises(ValueError, match="integer indices"):
        agent.act([0.5, 0, 0])
    assert math.isfinite(float(agent.act([0, 0, 1])[1].q_pi.sum()))


# ---------------------------------------------------------------- learned counts in the state
def two_state_learner(**kw) -> Agent:
    """Identity A; B uniform with Dirichlet counts 0.5 everywhere; one action."""
    pB = np.full((2, 2, 1), 0.5)
    return Agent(np.eye(2), pB=pB, D=np.array([1.0, 0.0]), dtype=F64, **kw)


def test_learned_counts_live_in_the_state_by_hand():
    agent = two_state_learner()
    _, s1 = agent.act(0)  # certain of state 0, then action 0
    s2 = agent.infer(1, s1)  # the move 0 → 1 is seen: q(s) = [0, 1]
    qs_prev = s1.qs
    learned = agent.learn_B(qs_prev, s2)
    # pB[s', s, u=0] += q(s') q_prev(s): only [1, 0, 0] gains 1 → B[:, 0, 0] = [.5, 1.5] / 2
    np.testing.assert_allclose(learned.params.pB[0][0, :, :, 0].numpy(), [[0.5, 0.5], [1.5, 0.5]])
    np.testing.assert_allclose(learned.params.B[0][0, :, 0, 0].numpy(), [0.25, 0.75])
    # the agent's own model did not change; the learned state predicts with its own B
    np.testing.assert_allclose(agent.B[0][0, :, 0, 0].numpy(), [0.5, 0.5])
    from_state_0 = learned.replace(qs=qs_prev, action=torch.zeros(1, 1, dtype=torch.long))
    np.testing.assert_allclose(agent.empirical_prior_of(from_state_0)[0][0].numpy(), [0.25, 0.75])
    np.testing.assert_allclose(
        agent.empirical_prior_of(from_state_0.replace(params=None))[0][0].numpy(), [0.5, 0.5]
    )
    # a new episode keeps what was learned
    assert agent.reset_state(learned).params is learned.params
    assert agent.reset_state(learned, np.array([True])).params is learned.params


def test_stateful_update_B_is_learn_B_on_agent_state():
    functional, stateful = two_state_learner(), two_state_learner()
    state = None
    for obs in (0, 1, 1, 0):
        prev = stateful.qs if stateful.action is not None else None
        stateful.infer_states(obs)
        if prev is not None:
            stateful.update_B(prev)
        stateful.infer_policies()
        stateful.sample_action()

        prev_f = state.qs if state is not None and bool(state.has_action.all()) else None
        state = functional.infer(obs, state if state is not None else functional.init_state())
        if prev_f is not None:
            state = functional.learn_B(prev_f, state)
        _, state = functional.choose(functional.plan(state))
    torch.testing.assert_close(state.params.pB[0], stateful.pB[0], rtol=0, atol=1e-12)
    assert functional.pB[0].shape == (1, 2, 2, 1)  # the agent's own counts never moved
    np.testing.assert_allclose(functional.pB[0].numpy(), np.full((1, 2, 2, 1), 0.5))

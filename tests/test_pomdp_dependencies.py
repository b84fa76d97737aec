"""Factor dependencies in B, by hand: several control factors per transition
(``B_action_dependencies``), and a transition depending on a second factor
(``B_dependencies``) under B learning and sophisticated planning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from daif.pomdp import Agent, GenerativeModel

F64 = torch.float64


def switch_and_light() -> tuple[np.ndarray, np.ndarray]:
    """Factor 0: a switch (2 states, uncontrolled, stays). Factor 1: a light (2 states)
    whose action 1 toggles it only when the switch is on: B1[s1', s0, s1, u]."""
    B0 = np.eye(2)[:, :, None]
    B1 = np.zeros((2, 2, 2, 2))
    for s0 in range(2):
        for s1 in range(2):
            B1[s1, s0, s1, 0] = 1.0  # wait
            B1[1 - s1 if s0 == 1 else s1, s0, s1, 1] = 1.0  # toggle (if the switch is on)
    return B0, B1


def cart_and_battery() -> tuple[np.ndarray, np.ndarray]:
    """Two control factors: c0 "move" (stay, right) and c1 "power" (off, on).
    Factor 0, a cart on 3 cells, moves right only with move = right and power = on:
    B0[s', s, move, power]. Factor 1, a battery (charged, drained), drains with power on:
    B1[b', b, power]."""
    B0 = np.zeros((3, 3, 2, 2))
    for s in range(3):
        for move in range(2):
            for power in range(2):
                B0[min(s + 1, 2) if move == 1 and power == 1 else s, s, move, power] = 1.0
    B1 = np.zeros((2, 2, 2))
    B1[:, :, 0] = np.eye(2)
    B1[1, :, 1] = 1.0
    return B0, B1


# ---------------------------------------------------------------- B_action_dependencies
def test_several_control_factors_move_one_factor_by_hand():
    B0, B1 = cart_and_battery()
    A = [np.eye(3), np.eye(2)]
    # ln σ(C): the cart prefers cell 1 (ln 0.8 against ln 0.1), indifferent to the battery
    C = [np.log([0.1, 0.8, 0.1]), np.zeros(2)]
    agent = Agent(
        A,
        [B0, B1],
        C=C,
        D=[np.array([1.0, 0, 0]), np.array([1.0, 0])],
        A_factor_list=[[0], [1]],
        B_action_dependencies=[[0, 1], [1]],
        use_states_info_gain=False,
        dtype=F64,
    )
    assert agent.num_controls_multi == [2, 2]
    assert agent.num_controls == [4, 2]  # factor 0 sees the joint (move, power): 2 · 2
    # policies over (move, power), in order; factor 0's index is move · 2 + power
    assert agent.policies_multi[:, 0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert agent.policies[:, 0].tolist() == [[0, 0], [1, 1], [2, 0], [3, 1]]
    _, state = agent.act((0, 0))
    util = state.efe_terms["utility"][0]
    stay, go = math.log(0.1) + math.log(0.5), math.log(0.8) + math.log(0.5)
    np.testing.assert_allclose(util.numpy(), [stay, stay, stay, go], atol=1e-12)
    assert state.action[0].tolist() == [3, 1]
    assert agent.decode_actions(state.action)[0].tolist() == [1, 1]  # move right, power on
    prior = agent.empirical_prior_of(state)
    np.testing.assert_allclose(prior[0][0].numpy(), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(prior[1][0].numpy(), [0, 1], atol=1e-12)
    # moving without power leaves the cart where it is but (power off) the battery too
    moved = state.replace(action=agent.encode_actions(torch.tensor([[1, 0]])))
    prior = agent.empirical_prior_of(moved)
    np.testing.assert_allclose(prior[0][0].numpy(), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(prior[1][0].numpy(), [1, 0], atol=1e-12)


@pytest.mark.parametrize("sampling_mode", ["marginal", "full"])
def test_action_marginals_are_over_control_factors(sampling_mode):
    B0, B1 = cart_and_battery()
    agent = Agent(
        [np.eye(3), np.eye(2)],
        [B0, B1],
        C=[np.log([0.1, 0.8, 0.1]), np.zeros(2)],
        D=[np.array([1.0, 0, 0]), np.array([1.0, 0])],
        A_factor_list=[[0], [1]],
        B_action_dependencies=[[0, 1], [1]],
        sampling_mode=sampling_mode,
        dtype=F64,
    )
    _, state = agent.act((0, 0))
    marg = agent.marginals_of(state)
    assert [tuple(m.shape) for m in marg] == [(1, 2), (1, 2)]
    q = state.q_pi[0].numpy()  # policies (move, power): 00, 01, 10, 11
    np.testing.assert_allclose(marg[0][0].numpy(), [q[0] + q[1], q[2] + q[3]], atol=1e-12)
    np.testing.assert_allclose(marg[1][0].numpy(), [q[0] + q[2], q[1] + q[3]], atol=1e-12)
    assert agent.decode_actions(state.action)[0].tolist() == [1, 1]


def test_encode_and_decode_actions_are_inverse():
    B0, B1 = cart_and_battery()
    agent = Agent(
        [np.eye(3), np.eye(2)],
        [B0, B1],
        A_factor_list=[[0], [1]],
        B_action_dependencies=[[0, 1], [1]],
    )
    multi = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    flat = agent.encode_actions(multi)
    assert flat.tolist() == [[0, 0], [1, 1], [2, 0], [3, 1]]
    assert agent.decode_actions(flat).tolist() == multi.tolist()


def test_b_action_dependencies_are_checked():
    B0, B1 = cart_and_battery()
    A = [np.eye(3), np.eye(2)]
    kw = dict(A_factor_list=[[0], [1]])
    with pytest.raises(ValueError, match=r"B_action_dependencies has 1 entries but B has 2"):
        GenerativeModel(A, [B0, B1], B_action_dependencies=[[0, 1]], **kw)
    with pytest.raises(ValueError, match=r"B\[1\] has 3 axes; with B_dependencies\[1\]=\[1\]"):
        GenerativeModel(A, [B0, B1], B_action_dependencies=[[0, 1], [0, 1]], **kw)
    with pytest.raises(ValueError, match=r"B_action_dependencies\[1\] names control factor 2"):
        GenerativeModel(A, [B0, B1], B_action_dependencies=[[0, 1], [2]], num_controls=[2, 2], **kw)
    B1_three = np.repeat(B1[:, :, :1], 3, axis=2)  # power with 3 actions in B1, 2 in B0
    with pytest.raises(ValueError, match=r"B\[1\] axis 2 \(control factor 1\) has 3 actions"):
        GenerativeModel(A, [B0, B1_three], B_action_dependencies=[[0, 1], [1]], **kw)
    with pytest.raises(ValueError, match="control factor 1 is in no B_action_dependencies"):
        GenerativeModel(
            A, [B0[..., 0], B1[..., 0]], B_action_dependencies=[[0], []], num_controls=[2, 2], **kw
        )
    with pytest.raises(ValueError, match="num_controls is for B_action_dependencies"):
        GenerativeModel(A, [B0[..., 0], B1], num_controls=[2, 2], **kw)
    with pytest.raises(ValueError, match=r"pB\[0\] has shape \(3, 3, 2\)"):
        GenerativeModel(A, [B0, B1], pB=[B0[..., 0], B1], B_action_dependencies=[[0, 1], [1]], **kw)


# ---------------------------------------------------------------- B_dependencies
def test_learning_a_transition_that_depends_on_a_second_factor_by_hand():
    B0, B1 = switch_and_light()
    agent = Agent(
        [np.eye(2)],
        [B0, B1],
        pB=[B0 + 0.0, B1 + 0.0],
        A_factor_list=[[1]],
        B_dependencies=[[0], [0, 1]],
        dtype=F64,
    )
    qs_prev = [torch.tensor([[0.3, 0.7]], dtype=F64), torch.tensor([[1.0, 0.0]], dtype=F64)]
    qs = [torch.tensor([[0.3, 0.7]], dtype=F64), torch.tensor([[0.3, 0.7]], dtype=F64)]
    pB = agent.update_B(qs_prev, qs, torch.tensor([[0, 1]]))
    # light: pB1[s1', s0, s1, toggle] += q(s1') q_prev(s0) q_prev(s1) where B1 > 0; the light
    # was off (s1 = 0): the switch off keeps it off (s1' = 0), the switch on turns it on
    expect1 = B1.copy()
    expect1[0, 0, 0, 1] += 0.3 * 0.3
    expect1[1, 1, 0, 1] += 0.7 * 0.7
    np.testing.assert_allclose(pB[1][0].numpy(), expect1, atol=1e-12)
    # the switch (its own factor, identity B): pB0[s0', s0, 0] += q(s0') q_prev(s0) on the diagonal
    expect0 = B0.copy()
    expect0[0, 0, 0] += 0.09
    expect0[1, 1, 0] += 0.49
    np.testing.assert_allclose(pB[0][0].numpy(), expect0, atol=1e-12)
    np.testing.assert_allclose(agent.B[1][0].sum(0).numpy(), np.ones((2, 2, 2)), atol=1e-12)


def test_sophisticated_planning_with_a_transition_on_a_second_factor():
    B0, B1 = switch_and_light()
    kw = dict(
        C=[np.array([0.0, math.log(3.0)])],
        D=[np.array([0.3, 0.7]), np.array([1.0, 0.0])],
        A_factor_list=[[1]],
        B_dependencies=[[0], [0, 1]],
        dtype=F64,
    )
    si = Agent([np.eye(2)], [B0, B1], planning="sophisticated", policy_len=1, **kw)
    enum = Agent([np.eye(2)], [B0, B1], policy_len=1, **kw)
    _, s_si = si.act((0,))
    _, s_en = enum.act((0,))
    torch.testing.assert_close(s_si.G, s_en.G, rtol=0, atol=1e-12)
    # toggle: q(light') = [0.3, 0.7] (utility 0.3 ln .25 + 0.7 ln .75, information gain
    # H[.3, .7] as the light is seen); wait: the light stays off (ln .25, no gain)
    lo, hi = math.log(0.25), math.log(0.75)
    h = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    np.testing.assert_allclose(s_si.G[0].numpy(), [-lo, -(0.3 * lo + 0.7 * hi) - h], atol=1e-12)
    deep = Agent([np.eye(2)], [B0, B1], planning="sophisticated", policy_len=3, **kw)
    action, _ = deep.act((0,))
    assert action[0].tolist() == [0, 1]  # toggle: the light may come on

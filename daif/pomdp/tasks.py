"""Generative models of daif's discrete tasks and of Gymnasium toy-text environments.

* :func:`tmaze_model` — the T-maze with a cue (two factors: location, context).
* :func:`gridworld_model` — the foraging grid from the environment's own map.
* :func:`toy_text_model` — FrozenLake, CliffWalking, …: B from the environment's
  transition table ``env.unwrapped.P``; the agent observes its cell.
* :func:`build_model` — picks one of the above for a (wrapped) environment.

Preferences for toy-text tasks: a reward reached after many steps is beyond a short
planning horizon, so C scores each cell by how close it is to the goal in the
transition graph (C[s] = −λ·steps-to-goal, terminal non-goal cells get an extra
penalty). It is a prior preference derived from the same transition table, not a
value function: no rewards beyond "the goal is the end" are used.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from daif.envs.gridworld import GridWorldEnv
from daif.envs.tmaze import CUE, LEFT, RIGHT, TMazeEnv
from daif.pomdp.model import GenerativeModel

__all__ = [
    "build_model",
    "gridworld_model",
    "steps_to_goal",
    "tmaze_model",
    "toy_text_model",
    "toy_text_transitions",
]


def tmaze_model(
    cue_validity: float = 1.0,
    reward_prob: float = 1.0,
    reward_pref: float = 3.0,
    loss_pref: float = -6.0,
) -> GenerativeModel:
    """The T-maze agent's model (factors: location [4], context [2]).

    Args:
        cue_validity: p(cue = context | at the cue).
        reward_prob: p(reward | rewarded arm) = p(loss | other arm).
        reward_pref, loss_pref: C of the reward and loss outcomes (no reward: 0).
    """
    A_loc = np.zeros((4, 4, 2))
    for loc in range(4):
        A_loc[loc, loc, :] = 1.0
    A_rew = np.zeros((3, 4, 2))
    A_rew[0, [0, CUE], :] = 1.0
    for ctx in range(2):
        for arm in (LEFT, RIGHT):
            correct = (arm == LEFT) == (ctx == 0)
            A_rew[1, arm, ctx] = reward_prob if correct else 1.0 - reward_prob
            A_rew[2, arm, ctx] = 1.0 - reward_prob if correct else reward_prob
    A_cue = np.full((2, 4, 2), 0.5)
    for ctx in range(2):
        A_cue[ctx, CUE, ctx] = cue_validity
        A_cue[1 - ctx, CUE, ctx] = 1.0 - cue_validity
    B_loc = np.zeros((4, 4, 4))
    for a in range(4):
        for loc in range(4):
            nxt = loc if loc in (LEFT, RIGHT) else a  # arms end the episode
            B_loc[nxt, loc, a] = 1.0
    B_ctx = np.eye(2)[:, :, None]
    C = [np.zeros(4), np.array([0.0, reward_pref, loss_pref]), np.zeros(2)]
    D = [np.eye(4)[0], np.full(2, 0.5)]
    return GenerativeModel([A_loc, A_rew, A_cue], [B_loc, B_ctx], C, D)


def gridworld_model(env: GridWorldEnv, scent_pref: float = 1.0) -> GenerativeModel:
    """The foraging agent's model of a :class:`~daif.envs.gridworld.GridWorldEnv`.

    One factor (the cell, N² states, 5 actions); modalities colour and scent;
    C[scent = d] = −``scent_pref``·d; D uniform over the cells other than the food's.
    """
    n = env.num_cells
    A_col = np.zeros((env.num_colours, n))
    A_col[env.colours, np.arange(n)] = 1.0
    A_scent = np.zeros((2 * env.size - 1, n))
    for s in range(n):
        A_scent[env.scent(s), s] = 1.0
    B = np.zeros((n, n, 5))
    for s in range(n):
        for a in range(5):
            B[env.next_cell(s, a), s, a] = 1.0
    C = [np.zeros(env.num_colours), -scent_pref * np.arange(2 * env.size - 1, dtype=float)]
    D = np.ones(n)
    D[env.food] = 0.0
    return GenerativeModel([A_col, A_scent], B, C, D / D.sum())


def toy_text_transitions(env: gym.Env) -> tuple[np.ndarray, set[int], set[int]]:
    """B and the terminal cells from a toy-text ``P`` table.

    Returns:
        (B ``[S, S, U]`` with terminal cells absorbing, goal cells, other terminal
        cells). Goals are cells entered by terminating transitions with the highest
        reward among terminating transitions.
    """
    u = env.unwrapped
    if not hasattr(u, "P"):
        raise ValueError(f"{type(u).__name__} has no transition table P")
    ns, na = int(env.observation_space.n), int(env.action_space.n)  # type: ignore[attr-defined]
    B = np.zeros((ns, ns, na))
    term_reward: dict[int, float] = {}
    for s in range(ns):
        for a in range(na):
            for prob, nxt, rew, done in u.P[s][a]:
                B[int(nxt), s, a] += prob
                if done:
                    term_reward[int(nxt)] = max(term_reward.get(int(nxt), -np.inf), float(rew))
    if not term_reward:
        raise ValueError("the transition table has no terminating transitions (no goal)")
    best = max(term_reward.values())
    goals = {s for s, r in term_reward.items() if r == best}
    bad = set(term_reward) - goals
    for s in term_reward:
        B[:, s, :] = 0.0
        B[s, s, :] = 1.0
    return B, goals, bad


def steps_to_goal(B: np.ndarray, goals: set[int]) -> np.ndarray:
    """Fewest moves from each state to a goal over transitions with p > 0 (inf if none)."""
    ns = B.shape[0]
    reach = (B > 0).any(-1)  # reach[s', s]
    dist = np.full(ns, np.inf)
    queue = deque(goals)
    for g in goals:
        dist[g] = 0.0
    while queue:
        nxt = queue.popleft()
        for s in np.flatnonzero(reach[nxt]):
            if np.isinf(dist[s]):
                dist[s] = dist[nxt] + 1.0
                queue.append(int(s))
    return dist


def toy_text_model(
    env: gym.Env,
    preference_scale: float = 1.0,
    terminal_penalty: float = 10.0,
    obs_noise: float = 0.0,
) -> GenerativeModel:
    """A fully observed model of a toy-text env from its own transition table.

    Args:
        env: FrozenLake, CliffWalking or any env with ``unwrapped.P`` and Discrete spaces.
        preference_scale: λ in C[s] = −λ·steps-to-goal(s).
        terminal_penalty: extra steps charged to non-goal terminal / dead-end cells.
        obs_noise: ε in A = (1 − ε)I + ε/S (0: the cell is observed exactly).
    """
    if not 0.0 <= obs_noise < 1.0:
        raise ValueError(f"obs_noise must be in [0, 1); got {obs_noise}")
    B, goals, bad = toy_text_transitions(env)
    ns = B.shape[0]
    dist = steps_to_goal(B, goals)
    finite = dist[np.isfinite(dist)].max()
    dist[list(bad)] = np.inf
    dist[np.isinf(dist)] = finite + terminal_penalty
    C = -preference_scale * dist
    A = (1.0 - obs_noise) * np.eye(ns) + obs_noise / ns
    isd = getattr(env.unwrapped, "initial_state_distrib", None)
    D = np.asarray(isd, dtype=float) if isd is not None else np.full(ns, 1.0 / ns)
    return GenerativeModel(A, B, C, D / D.sum())


def build_model(env: gym.Env, **kwargs: Any) -> GenerativeModel:
    """The generative model of a (possibly wrapped) daif or toy-text environment."""
    u = env.unwrapped
    if isinstance(u, TMazeEnv):
        return tmaze_model(u.cue_validity, u.reward_prob, **kwargs)
    if isinstance(u, GridWorldEnv):
        return gridworld_model(u, **kwargs)
    if hasattr(u, "P") and isinstance(env.observation_space, gym.spaces.Discrete):
        return toy_text_model(env, **kwargs)
    raise ValueError(
        f"no discrete generative model for {type(u).__name__}: daif.pomdp supports "
        "daif/TMaze-v0, daif/GridWorld-v0 and toy-text envs with a transition table P"
    )

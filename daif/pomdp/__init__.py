"""Discrete-POMDP active inference (pymdp's model and API), batched in torch.

* :class:`GenerativeModel` — A, B, C, D, E and Dirichlet counts, validated.
* :class:`Agent` — functional ``act(obs, state, episode_start, deterministic)`` (and
  ``infer``, ``plan``, ``choose``) over an :class:`AgentState`, or pymdp's stateful
  ``infer_states``, ``infer_policies``, ``sample_action``, ``reset``; ``update_A/B/D``;
  over a batch of agents.
* Pure functions: :mod:`~daif.pomdp.inference` (fpi, mmp), :mod:`~daif.pomdp.control`
  (policies, expected free energy, action selection, sophisticated inference),
  :mod:`~daif.pomdp.learning` (Dirichlet updates), :mod:`~daif.pomdp.maths`;
  :mod:`~daif.pomdp.small`: the same step in NumPy for small models (less overhead).
* :mod:`~daif.pomdp.tasks` — generative models of the T-maze, the foraging grid world
  and Gymnasium toy-text environments (from their transition tables).
"""

from daif.pomdp import control, inference, learning, maths, small, tasks
from daif.pomdp.agent import Agent, AgentState, ModelParams
from daif.pomdp.model import GenerativeModel

__all__ = [
    "Agent",
    "AgentState",
    "GenerativeModel",
    "ModelParams",
    "control",
    "inference",
    "learning",
    "maths",
    "small",
    "tasks",
]

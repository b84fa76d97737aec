"""Discrete-POMDP active inference (pymdp's model and API), batched in torch.

* :class:`GenerativeModel` — A, B, C, D, E and Dirichlet counts, validated.
* :class:`Agent` — ``infer_states``, ``infer_policies``, ``sample_action``,
  ``update_A/B/D``, ``reset`` over a batch of agents.
* Pure functions: :mod:`~daif.pomdp.inference` (fpi, mmp), :mod:`~daif.pomdp.control`
  (policies, expected free energy, action selection, sophisticated inference),
  :mod:`~daif.pomdp.learning` (Dirichlet updates), :mod:`~daif.pomdp.maths`.
* :mod:`~daif.pomdp.tasks` — generative models of the T-maze, the foraging grid world
  and Gymnasium toy-text environments (from their transition tables).
"""

from daif.pomdp import control, inference, learning, maths, tasks
from daif.pomdp.agent import Agent
from daif.pomdp.model import GenerativeModel

__all__ = [
    "Agent",
    "GenerativeModel",
    "control",
    "inference",
    "learning",
    "maths",
    "tasks",
]

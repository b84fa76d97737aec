"""The contract between the trainer and an agent.

The trainer (``daif.trainer``) knows nothing of a particular agent: it steps
Gymnasium vector environments, hands each batch of transitions to the agent, asks
it to learn, and checkpoints whatever ``state_dict`` returns. Any object with the
methods below can be trained by ``train.py`` — the deep agent and the POMDP planner
both are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch


@dataclass
class Transition:
    """One vectorised environment step, as numpy arrays with a leading ``[N]`` env axis.

    ``next_obs`` is the observation the step actually produced — for an env whose
    episode just ended it is the final observation, not the first one of the next
    episode. ``terminated`` marks a terminal state of the MDP (no bootstrap);
    ``truncated`` marks a time limit (the bootstrap is kept).
    """

    obs: np.ndarray  # [N, *obs_shape]
    action: np.ndarray  # [N] (discrete) or [N, act_dim]
    reward: np.ndarray  # [N] float32
    next_obs: np.ndarray  # [N, *obs_shape]
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool


@dataclass(frozen=True)
class AgentContext:
    """What the trainer knows when it builds an agent; each agent takes what it needs.

    Attributes:
        observation_space, action_space: one sub-env's spaces.
        num_envs: N, the vector envs' width (a transition batch has N rows).
        device: where tensors live.
        amp: ``off`` | ``bf16`` | ``fp16`` (``trainer.amp``).
        compile: ``torch.compile`` the learning step (``trainer.compile``).
        env_id, env_kwargs: the environment, for an agent that builds its model from it.
    """

    observation_space: gym.Space
    action_space: gym.Space
    num_envs: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str = "off"
    compile: bool = False
    env_id: str = ""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def make_env(self) -> gym.Env:
        """One fresh instance of the environment (the caller closes it)."""
        from daif.envs import make_env

        return make_env(self.env_id, **dict(self.env_kwargs))


@runtime_checkable
class Agent(Protocol):
    """What ``daif.trainer.Trainer`` needs from an agent.

    Per-episode memory (beliefs of a POMDP agent, a recurrent state) is passed in and
    out of :meth:`act` as ``state`` rather than kept inside the agent, so that the
    trainer can run training and evaluation environments side by side.
    """

    @classmethod
    def from_context(cls, ctx: AgentContext, **hparams: Any) -> Agent:
        """Build the agent from the trainer's context and its ``agent`` config (hyper-
        parameters, networks already instantiated as factories); :func:`daif.build.make_agent`
        is the only caller."""
        ...

    def initial_state(self, num_envs: int) -> Any:
        """Per-episode memory for ``num_envs`` fresh episodes (``None`` if stateless)."""
        ...

    def act(
        self,
        obs: np.ndarray,
        state: Any,
        episode_start: np.ndarray,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Choose actions for a batch of observations.

        Args:
            obs: ``[N, *obs_shape]`` current observations.
            state: per-episode memory from :meth:`initial_state` or the previous call.
            episode_start: ``[N]`` bool, True where ``obs`` is the first of an episode;
                the agent resets its memory for those rows.
            deterministic: take the mode of q(a) instead of sampling.
        Returns:
            ``([N] or [N, act_dim]`` actions, the new state).
        """
        ...

    def observe(self, transition: Transition) -> None:
        """Record a batch of transitions (replay buffer, Dirichlet counts, …)."""
        ...

    def update(self, global_step: int) -> dict[str, Any]:
        """Learn from what has been observed; called once per vectorised env step.

        Returns scalars to log, keyed by TensorBoard tag (``losses/...``,
        ``free_energy/...``, ``efe/...``). Values may be 0-d tensors: the trainer
        only turns them into floats on logging steps, so no device sync happens
        on the other steps. An empty dict means no update was made.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: parameters, optimiser, replay buffer, counters."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class SupportsImages(Protocol):
    """Optional: an agent that can draw pictures of its beliefs for TensorBoard."""

    def images(self) -> dict[str, np.ndarray]:
        """Tag → ``[3, H, W]`` uint8 image (CHW), logged at evaluation time."""
        ...

"""Hyperparameters of the deep active inference agent: defined, documented and checked once.

``configs/agent/daif.yaml`` only picks the networks; presets (``configs/experiment/``) and
the command line override single fields (``agent.discount=0.98``). An unknown key or a bad
value is refused by :meth:`DeepAgentConfig.from_mapping` with one line naming ``agent.<key>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daif.validation import (
    ConfigError,
    check_choice,
    check_int,
    check_positive,
    check_range,
)

EPISTEMIC_ESTIMATES: tuple[str, ...] = ("exact", "cached")
PLANNERS: tuple[str, ...] = ("actor", "cem")


@dataclass(frozen=True)
class DeepAgentConfig:
    """Every hyperparameter of :class:`daif.deep.DeepActiveInferenceAgent`.

    Step counts are environment steps summed over the vector envs.
    """

    latent_dim: int = 16
    """Z, the size of the latent state s."""
    discount: float = 0.99
    """γ, the discount of future expected free energy in the critic's target."""
    n_step: int = 3
    """Steps of observed outcomes summed before the critic bootstraps."""
    precision: float = 1.0
    """β of q(a|s) = softmax(−β·G(s, ·)) when training starts."""
    precision_final: float = 10.0
    """β reached after ``precision_anneal_steps`` (linear annealing)."""
    precision_anneal_steps: int = 10_000
    """Steps over which β goes from ``precision`` to ``precision_final`` (0: final at once)."""
    action_persistence: float = 0.0
    """κ, discrete actions, training only: each env keeps its previous action with
    probability κ and otherwise samples softmax(−β·G), so that q(a_t | a_{t−1}) =
    κ·[a_t = a_{t−1}] + (1 − κ)·softmax(−β·G)(a_t): runs of one action (a lander idling on
    the pad long enough to rest) become common in replay. Episodes start afresh."""
    risk_weight: float = 1.0
    """w_r, the weight of risk (−ln P̃ of the outcome) in each step's expected free energy."""
    ambiguity_weight: float = 0.01
    """w_a, the weight of ambiguity H[p(o|ŝ')]."""
    info_gain_weight: float = 0.1
    """w_i, the weight of the information gain about the transition model (0: ablated)."""
    binary_obs: tuple[int, ...] = ()
    """Observation entries that are 0/1 flags (bounds [0, 1]): their likelihood is a
    Bernoulli, whose entropy (ambiguity) lies in [0, ln 2], instead of a Gaussian."""
    free_nats: float = 1.0
    """Free bits: the complexity KL is not pushed below this many nats."""
    batch_size: int = 128
    """Sequences per gradient step."""
    buffer_size: int = 100_000
    """Transitions kept in replay."""
    learning_starts: int = 1000
    """Steps of uniformly random actions, and no learning, before training starts."""
    updates_per_step: float = 1.0
    """Gradient steps per vectorised env step (fractions accumulate: 0.5 = every other)."""
    model_update_every: int = 1
    """Train the world model on every k-th gradient step (the critic trains on all)."""
    lr: float = 1e-3
    """Adam step size of the critic (and of the world model unless ``model_lr`` is set)."""
    model_lr: float | None = None
    """Adam step size of the world model (None: ``lr``)."""
    lr_final_fraction: float = 1.0
    """Both step sizes decay linearly to this fraction of themselves ..."""
    lr_decay_steps: int = 0
    """... over this many steps (0: constant). A number, not the run's length, so that a
    resumed run can be extended."""
    grad_clip: float = 10.0
    """Global gradient-norm limit, per network group (world model, critic)."""
    target_update_rate: float = 0.005
    """Polyak rate of the target critic: θ' ← θ' + rate·(θ − θ') after every step."""
    eval_average_rate: float = 0.0
    """ρ of a Polyak–Ruppert average of the encoder and critic, θ̄ ← θ̄ + ρ·(θ − θ̄) after
    every gradient step, that deterministic acting (evaluation, ``evaluate.py``,
    ``predict(deterministic=True)``) reads in place of the online networks, whose greedy
    action flips with each step's noise where action gaps are small. Training acts on the
    online networks either way (0: deterministic acting reads them too). Discrete actions
    and the feed-forward model only. Default 0: every preset reads the online networks."""
    huber_delta: float = 1.0
    """Where the critic's Huber loss turns from quadratic to linear (in G's units)."""
    critic_trains_encoder: bool = False
    """Let the TD loss shape the encoder too, so the latent does not drift under the critic."""
    epistemic_estimate: str = "exact"
    """Where the target's ambiguity and information gain come from: ``exact`` (the model
    now, at every step of the n-step sum) or ``cached`` (annotations in replay that the
    model writes when it trains on a transition: critic-only steps then run no model)."""
    terminal_fraction: float = 0.0
    """Share of each batch drawn around stored terminations (0: uniform replay)."""
    seq_len: int = 32
    """Recurrent world model: steps per replayed sequence (``batch_size`` sequences a step)."""
    burn_in: int = 8
    """Recurrent world model: the first steps of a sequence, where the memory is still
    warming up from zero, are filtered but do not start critic targets."""
    nan_check_interval: int = 100
    """Gradient steps between checks that every loss so far was finite (one host sync)."""
    target_entropy: float | None = None
    """Continuous actions: the entropy H̄ of q(a|s) that the temperature α = 1/β is tuned
    to keep (None: −dim(A), in nats of the pre-squash Gaussian after the tanh correction).
    β starts at ``precision``; the annealing keys apply to discrete actions only."""
    planner: str = "actor"
    """Continuous actions: how an action is chosen. ``actor``: sampled from the amortised
    q(a|s) (its mean when deterministic); ``cem``: the first action of a plan that the
    cross-entropy method finds over ``plan_horizon`` steps in the world model, scored by
    expected free energy with the critic at the tail (:mod:`daif.deep.planner`). The actor
    and critic train the same way under both."""
    plan_horizon: int = 2
    """``planner=cem``: H, the steps of each plan imagined before the critic takes over."""
    plan_candidates: int = 128
    """``planner=cem``: N, the action sequences sampled per CEM iteration."""
    plan_elites: int = 16
    """``planner=cem``: E ≤ N, the sequences of least G that the next distribution fits."""
    plan_iterations: int = 3
    """``planner=cem``: CEM iterations per action."""

    def __post_init__(self) -> None:
        check_int("agent.latent_dim", self.latent_dim, minimum=1)
        check_range("agent.discount", self.discount, 0.0, 1.0)
        check_int("agent.n_step", self.n_step, minimum=1)
        for key in (
            "precision",
            "precision_final",
            "risk_weight",
            "ambiguity_weight",
            "info_gain_weight",
            "free_nats",
        ):
            check_positive(f"agent.{key}", getattr(self, key), allow_zero=True)
        if isinstance(self.binary_obs, (str, bytes)) or not isinstance(self.binary_obs, Sequence):
            raise ConfigError(
                f"agent.binary_obs: must be a list of entry indices, got {self.binary_obs!r}"
            )
        for i, entry in enumerate(self.binary_obs):
            check_int(f"agent.binary_obs[{i}]", entry, minimum=0)
        if len(set(self.binary_obs)) != len(self.binary_obs):
            raise ConfigError(f"agent.binary_obs={list(self.binary_obs)}: an entry is listed twice")
        object.__setattr__(self, "binary_obs", tuple(self.binary_obs))  # hashable, frozen
        check_int("agent.precision_anneal_steps", self.precision_anneal_steps, minimum=0)
        check_range("agent.action_persistence", self.action_persistence, 0.0, 1.0)
        if self.action_persistence == 1.0:
            raise ConfigError(
                f"agent.action_persistence: must be < 1 (1 never changes action), got "
                f"{self.action_persistence}"
            )
        check_int("agent.batch_size", self.batch_size, minimum=1)
        check_int("agent.buffer_size", self.buffer_size, minimum=1)
        check_int("agent.learning_starts", self.learning_starts, minimum=0)
        check_positive("agent.updates_per_step", self.updates_per_step)
        check_int("agent.model_update_every", self.model_update_every, minimum=1)
        check_positive("agent.lr", self.lr)
        if self.model_lr is not None:
            check_positive("agent.model_lr", self.model_lr)
        check_range("agent.lr_final_fraction", self.lr_final_fraction, 0.0, 1.0)
        check_int("agent.lr_decay_steps", self.lr_decay_steps, minimum=0)
        check_positive("agent.grad_clip", self.grad_clip)
        check_range("agent.target_update_rate", self.target_update_rate, 0.0, 1.0)
        if self.target_update_rate == 0.0:
            raise ConfigError("agent.target_update_rate: must be > 0 (0 freezes the target), got 0")
        check_range("agent.eval_average_rate", self.eval_average_rate, 0.0, 1.0)
        check_positive("agent.huber_delta", self.huber_delta)
        check_choice("agent.critic_trains_encoder", self.critic_trains_encoder, (True, False))
        check_choice("agent.epistemic_estimate", self.epistemic_estimate, EPISTEMIC_ESTIMATES)
        check_range("agent.terminal_fraction", self.terminal_fraction, 0.0, 1.0)
        check_int("agent.seq_len", self.seq_len, minimum=1)
        check_int("agent.burn_in", self.burn_in, minimum=0)
        check_int("agent.nan_check_interval", self.nan_check_interval, minimum=1)
        if self.target_entropy is not None:
            check_range("agent.target_entropy", self.target_entropy, -1e6, 1e6)
        check_choice("agent.planner", self.planner, PLANNERS)
        check_int("agent.plan_horizon", self.plan_horizon, minimum=1)
        check_int("agent.plan_candidates", self.plan_candidates, minimum=1)
        check_int("agent.plan_elites", self.plan_elites, minimum=1)
        if self.plan_elites > self.plan_candidates:
            raise ConfigError(
                f"agent.plan_elites={self.plan_elites}: must be at most "
                f"agent.plan_candidates={self.plan_candidates}"
            )
        check_int("agent.plan_iterations", self.plan_iterations, minimum=1)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DeepAgentConfig:
        """Build from ``agent.*`` keys; an unknown key is a :class:`ConfigError` naming it."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(f"agent.{key}: unknown key; known keys: {', '.join(known)}")
        return cls(**values)

    def precision_at(self, env_steps: int) -> float:
        """β after ``env_steps``: linear from ``precision`` to ``precision_final``."""
        if self.precision_anneal_steps == 0:
            return self.precision_final
        frac = min(1.0, env_steps / self.precision_anneal_steps)
        return self.precision + frac * (self.precision_final - self.precision)

    def lr_scale_at(self, env_steps: int) -> float:
        """Factor on both step sizes after ``env_steps``: 1 → ``lr_final_fraction``."""
        if self.lr_decay_steps == 0:
            return 1.0
        frac = min(1.0, env_steps / self.lr_decay_steps)
        return 1.0 - frac * (1.0 - self.lr_final_fraction)

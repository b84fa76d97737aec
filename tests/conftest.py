"""Shared fixtures for the trainer tests: a small real agent and a config composer.

``LinearReinforce`` is a genuine (if simple) learner: a linear softmax policy trained by
REINFORCE on every finished episode. It lets the trainer be tested without the deep agent.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module, loaded once per session (the scripts are not a
    package). Registered in ``sys.modules`` so that its dataclasses resolve their module."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import daif.build  # noqa: E402, F401  (registers agent/deep_defaults before any compose)
from daif.checkpoint import KEY_ENV  # noqa: E402
from daif.protocol import AgentContext, Transition  # noqa: E402
from daif.utils import NonFiniteLossError  # noqa: E402
from daif.validation import check_positive, check_range  # noqa: E402

TEST_AGENT = "tests.conftest.LinearReinforce"


class LinearReinforce:
    """π(a|s) = softmax(W s + b), trained by REINFORCE on each finished episode with
    normalised discounted returns-to-go (a genuine learner: it balances CartPole).

    ``poison_step`` ≥ 0 makes the loss NaN from that global step on (to test the trainer's
    crash checkpoint); the agent then raises :class:`NonFiniteLossError` as real agents do.
    """

    @classmethod
    def from_context(cls, ctx: AgentContext, **hparams: Any) -> LinearReinforce:
        return cls(
            ctx.observation_space,
            ctx.action_space,
            ctx.num_envs,
            amp=ctx.amp,
            compile=ctx.compile,
            **hparams,
        )

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        num_envs: int,
        amp: str = "off",
        compile: bool = False,
        lr: float = 0.01,
        gamma: float = 0.99,
        poison_step: int = -1,
    ) -> None:
        self.lr = check_positive("agent.lr", lr)
        self.gamma = check_range("agent.gamma", gamma, 0.0, 1.0)
        obs_dim = int(np.prod(observation_space.shape))
        self.policy = torch.nn.Linear(obs_dim, int(action_space.n))
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.poison_step = poison_step
        self.amp = amp
        self.compiled = compile
        # torch.compile'd forward when asked (dynamic: batch sizes vary with episode length)
        self.forward = torch.compile(self.policy, dynamic=True) if compile else self.policy
        # per-env trajectory of the running episode: (obs, action, reward) lists
        self.traj: list[list[tuple[np.ndarray, int, float]]] = [[] for _ in range(num_envs)]
        self.finished: list[list[tuple[np.ndarray, int, float]]] = []
        self.updates = 0

    def initial_state(self, num_envs: int) -> None:
        return None

    def act(
        self, obs: np.ndarray, state: Any, episode_start: np.ndarray, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        with torch.no_grad():
            logits = self.forward(torch.as_tensor(obs, dtype=torch.float32))
            if deterministic:
                a = logits.argmax(-1)
            else:
                a = torch.distributions.Categorical(logits=logits).sample()
        return a.numpy(), state

    def observe(self, transition: Transition) -> None:
        done = transition.terminated | transition.truncated
        for i in range(len(done)):
            step = (transition.obs[i], int(transition.action[i]), float(transition.reward[i]))
            self.traj[i].append(step)
            if done[i]:
                self.finished.append(self.traj[i])
                self.traj[i] = []

    def update(self, global_step: int) -> dict[str, Any]:
        if not self.finished:
            return {}
        obs, actions, returns = [], [], []
        for episode in self.finished:
            g, rtg = 0.0, []
            for _, _, r in reversed(episode):
                g = r + self.gamma * g
                rtg.append(g)
            obs += [o for o, _, _ in episode]
            actions += [a for _, a, _ in episode]
            returns += rtg[::-1]
        self.finished = []
        ret = torch.tensor(returns, dtype=torch.float32)
        adv = (ret - ret.mean()) / (ret.std() + 1e-8) if len(ret) > 1 else ret * 0
        logp = torch.log_softmax(self.forward(torch.as_tensor(np.stack(obs))), -1)
        logp_a = logp.gather(1, torch.as_tensor(actions)[:, None]).squeeze(1)
        loss = -(logp_a * adv).mean()
        if 0 <= self.poison_step <= global_step:
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            raise NonFiniteLossError("losses/policy", global_step)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        entropy = -(logp.exp() * logp).sum(-1).mean()
        return {"losses/policy": loss.detach(), "losses/entropy": entropy.detach()}

    def images(self) -> dict[str, np.ndarray]:
        w = self.policy.weight.detach()
        scaled = (w - w.min()) / (w.max() - w.min() + 1e-8) * 255
        img = scaled.to(torch.uint8).numpy()[None].repeat(3, axis=0)
        return {"agent/policy_weights": img}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "opt": self.opt.state_dict(),
            "traj": self.traj,
            "finished": self.finished,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.opt.load_state_dict(state["opt"])
        self.traj = state["traj"]
        self.finished = state["finished"]
        self.updates = state["updates"]


def write_test_configs(folder: Path) -> Path:
    """Write ``agent/linear_pg.yaml`` and ``env/cartpole_test.yaml`` under ``folder`` (added
    to Hydra's search path by :func:`tiny_overrides`); returns ``folder``."""
    (folder / "agent").mkdir(parents=True, exist_ok=True)
    (folder / "env").mkdir(parents=True, exist_ok=True)
    (folder / "agent" / "linear_pg.yaml").write_text(
        f"_target_: {TEST_AGENT}\nlr: 0.01\ngamma: 0.99\npoison_step: -1\n"
    )
    (folder / "env" / "cartpole_test.yaml").write_text("id: CartPole-v1\nkwargs: {}\n")
    return folder


def tiny_overrides(config_folder: Path, run_dir: Path) -> list[str]:
    """Overrides for a tiny, quiet CartPole run of the test agent in ``run_dir``."""
    return [
        f"hydra.searchpath=[file://{config_folder}]",
        "+agent=linear_pg",  # cartpole_test has no experiment to choose an agent
        "env=cartpole_test",
        *TINY,
        f"trainer.run_dir={run_dir}",
    ]


# Budgets for a tiny run (a few hundred env steps, evaluation and checkpoints included).
TINY = [
    "trainer.total_steps=400",
    "trainer.num_envs=2",
    "trainer.eval_interval=200",
    "trainer.eval_episodes=2",
    "trainer.log_interval=100",
    "trainer.checkpoint_interval=200",
    "trainer.progress=false",
    "trainer.device=cpu",
]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg(*overrides)`` → the repo's train config with the test agent, the
    :data:`TINY` budgets and ``trainer.run_dir`` inside ``tmp_path`` (later overrides win)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        folder = write_test_configs(tmp_path / "test_configs")

        def _compose(*overrides: str, run_dir: Path | None = None) -> DictConfig:
            rd = run_dir if run_dir is not None else tmp_path / "run"
            return compose("train", overrides=[*tiny_overrides(folder, rd), *overrides])

        yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True, scope="session")
def _signing_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Checkpoint signatures under a key of the test session's own (subprocesses inherit
    it), not the user's ``~/.config/daif/checkpoint.key``."""
    os.environ[KEY_ENV] = str(tmp_path_factory.mktemp("key") / "checkpoint.key")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """The CI box has 2 cores shared with other work: keep torch to one thread."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# The deep agent (configs/agent/daif.yaml) at a size that trains a few hundred steps in
# seconds; append to the repo's defaults (agent=daif, env=cartpole).
DEEP_TINY = [
    "agent.latent_dim=4",
    "agent.encoder.hidden=[16]",
    "agent.decoder.hidden=[16]",
    "agent.transition.hidden=[16]",
    "agent.transition.num_members=2",
    "agent.outcome.hidden=[16]",
    "agent.critic.hidden=[16]",
    "agent.batch_size=16",
    "agent.buffer_size=2000",
    "agent.learning_starts=64",
    "agent.precision_anneal_steps=200",
    "trainer.num_envs=2",
    "trainer.total_steps=300",
    "trainer.eval_interval=150",
    "trainer.eval_episodes=2",
    "trainer.log_interval=50",
    "trainer.checkpoint_interval=100",
    "trainer.progress=false",
    "trainer.device=cpu",
]


@pytest.fixture
def compose_deep(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_deep(*overrides, run_dir=...)`` → the repo's default config (deep agent on
    CartPole) at :data:`DEEP_TINY` size."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):

        def _compose(*overrides: str, run_dir: Path | None = None) -> DictConfig:
            rd = run_dir if run_dir is not None else tmp_path / "deep"
            return compose("train", overrides=[*DEEP_TINY, f"trainer.run_dir={rd}", *overrides])

        yield _compose
    GlobalHydra.instance().clear()

"""The training loop: terminated vs truncated, true final observations, episode statistics,
evaluation that leaves the training trajectory alone, and the progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from daif.envs import frames_taken, make_vector_env
from daif.evaluation import run_episodes
from daif.protocol import Transition
from daif.trainer import Trainer, train
from tests.test_trainer_tensorboard import read_scalars

COUNT_ID = "daif_test/Count-v0"
TIME_LIMIT = 5


class CountEnv(gym.Env):
    """obs = [t] (steps since reset), reward 1 per step; terminates when t == terminate_at;
    a TimeLimit of 5 steps truncates otherwise."""

    def __init__(self, terminate_at: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1e6, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t], dtype=np.float32)
        return obs, 1.0, self.t == self.terminate_at, False, {}


if COUNT_ID not in gym.registry:
    gym.register(id=COUNT_ID, entry_point=CountEnv, max_episode_steps=TIME_LIMIT)


class RecordingAgent:
    """Acts 0 always, records every Transition and every episode_start mask it is given."""

    @classmethod
    def from_context(cls, ctx: Any, **hparams: Any) -> RecordingAgent:
        return cls(ctx.observation_space, ctx.action_space, ctx.num_envs, **hparams)

    def __init__(self, observation_space, action_space, num_envs, **_: Any) -> None:
        self.transitions: list[Transition] = []
        self.starts: list[np.ndarray] = []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def initial_state(self, num_envs: int) -> None:
        return None

    def act(self, obs, state, episode_start, deterministic=False):
        self.starts.append(np.array(episode_start))
        return np.zeros(len(obs), dtype=np.int64), state

    def observe(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def update(self, global_step: int) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w.data.copy_(state["w"])


def _count_cfg(compose_cfg, terminate_at: int, run_dir: Path):
    return compose_cfg(
        "agent._target_=tests.test_trainer_loop.RecordingAgent",
        "~agent.lr",
        "~agent.gamma",
        "~agent.poison_step",
        f"env.id={COUNT_ID}",
        f"+env.kwargs.terminate_at={terminate_at}",
        "trainer.total_steps=24",
        "trainer.num_envs=2",
        "trainer.eval_interval=0",
        "trainer.eval_episodes=2",
        "trainer.log_interval=2",
        run_dir=run_dir,
    )


@pytest.mark.parametrize(("terminate_at", "length"), [(3, 3), (1000, TIME_LIMIT)])
def test_terminated_vs_truncated_and_true_final_obs(compose_cfg, tmp_path, terminate_at, length):
    trainer = Trainer(_count_cfg(compose_cfg, terminate_at, tmp_path / "r"))
    agent = trainer.agent
    result = trainer.run()
    assert result.global_step == 24
    assert len(agent.transitions) == 12  # 24 env steps / 2 envs
    for k, tr in enumerate(agent.transitions):
        # next_obs is what the action produced, even on the episode's last step
        np.testing.assert_array_equal(tr.next_obs, tr.obs + 1)
        at_end = tr.next_obs[:, 0] == length
        if terminate_at == length:
            np.testing.assert_array_equal(tr.terminated, at_end)
            assert not tr.truncated.any()
        else:  # a time limit is a truncation, never a termination
            np.testing.assert_array_equal(tr.truncated, at_end)
            assert not tr.terminated.any()
        assert tr.reward.dtype == np.float32
        if k + 1 < len(agent.transitions):
            nxt = agent.transitions[k + 1]
            np.testing.assert_array_equal(nxt.obs[at_end, 0], 0.0)  # fresh episode
            np.testing.assert_array_equal(agent.starts[k + 1], at_end)
    np.testing.assert_array_equal(agent.starts[0], [True, True])

    # episode statistics as logged: 12 steps/env → 12 // length whole episodes per env
    scalars = read_scalars(result.run_dir)
    lengths = [v for _, v in scalars["charts/episodic_length"]]
    returns = [v for _, v in scalars["charts/episodic_return"]]
    assert lengths == [length] * (2 * (12 // length))
    assert returns == lengths  # reward 1 per step
    # deterministic evaluation on the same env gives the episode return exactly
    assert result.final_eval_mean == length and result.final_eval_std == 0.0


def test_run_episodes_splits_quota_and_counts_whole_episodes():
    envs = make_vector_env(COUNT_ID, {"terminate_at": 3}, num_envs=2)
    agent = RecordingAgent(envs.single_observation_space, envs.single_action_space, 2)
    returns, lengths = run_episodes(agent, envs, episodes=5, seed=0)
    envs.close()
    assert returns.tolist() == [3.0] * 5 and lengths.tolist() == [3] * 5
    # 5 episodes over 2 envs: 3 + 2, so 3 episodes of 3 steps → 9 vector steps
    assert len(agent.starts) == 9
    with pytest.raises(ValueError, match="episodes"):
        run_episodes(agent, make_vector_env(COUNT_ID, {}, 1), episodes=0, seed=0)


def _params(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.policy.parameters()]


def test_evaluation_does_not_change_training_trajectory(compose_cfg, tmp_path):
    """Eval runs with the global RNGs saved and restored: evaluating every 100 steps or never
    yields the same trained parameters."""
    a = Trainer(compose_cfg("trainer.eval_interval=100", run_dir=tmp_path / "a"))
    a.run()
    b = Trainer(compose_cfg("trainer.eval_episodes=0", run_dir=tmp_path / "b"))
    rb = b.run()
    for x, y in zip(_params(a.agent), _params(b.agent), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert len(a.eval_history) == 4 and rb.eval_history == []
    assert np.isnan(rb.final_eval_mean)


def test_progress_bar_shows_sps_and_recent_return(compose_cfg, capsys):
    train(compose_cfg("trainer.progress=true"))
    err = capsys.readouterr().err
    assert "sps=" in err and "ret=" in err and "400/400" in err


def test_test_agent_learns_on_cartpole(compose_cfg, tmp_path):
    """The trainer actually trains: linear REINFORCE goes from the untrained policy's ~10
    to well over 100 (a uniform random policy averages ~22)."""
    res = train(
        compose_cfg(
            "trainer.total_steps=3000",
            "trainer.num_envs=4",
            "trainer.eval_interval=0",
            "trainer.eval_episodes=8",
            "logger=none",
            run_dir=tmp_path / "learn",
        )
    )
    assert res.final_eval_mean > 100, res.eval_history


def test_trainer_threads_sets_torch_intra_op_threads(compose_cfg):
    torch.set_num_threads(2)
    try:
        Trainer(compose_cfg("trainer.threads=1"))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        Trainer(compose_cfg("trainer.threads=null"))  # null leaves torch's setting alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_action_repeat_holds_actions_and_budgets_count_frames(compose_cfg, tmp_path):
    # Count env, time limit 5 frames, each action held 2 frames: an episode is decisions of
    # 2, 2 and 1 frames (obs 2, 4, 5; rewards 2, 2, 1), so 24 frames over 2 envs are
    # 7 vector steps (4 + 4 + 2 frames per episode, twice, then 4 more).
    cfg = _count_cfg(compose_cfg, 1000, tmp_path / "r")
    cfg.trainer.action_repeat = 2
    trainer = Trainer(cfg)
    agent = trainer.agent
    assert trainer.run().global_step == 24
    next_obs = [int(tr.next_obs[0, 0]) for tr in agent.transitions]
    assert next_obs == [2, 4, 5, 2, 4, 5, 2]
    assert [float(tr.reward[0]) for tr in agent.transitions] == [2.0, 2.0, 1.0] * 2 + [2.0]
    assert [bool(tr.truncated[0]) for tr in agent.transitions] == [False, False, True] * 2 + [False]
    # evaluation plays the same repeat; its lengths are frames
    envs = make_vector_env(COUNT_ID, {}, 2, action_repeat=2)
    returns, lengths = run_episodes(agent, envs, episodes=2, seed=0)
    envs.close()
    np.testing.assert_array_equal(returns, [5.0, 5.0])
    np.testing.assert_array_equal(lengths, [5, 5])


def test_frames_are_counted_when_sub_envs_end_on_different_steps():
    # CartPole pays 1 per frame, so an episode's return is its length in frames; pushing
    # left in one env and right in the other, with 3 frames per decision, ends them on
    # different vector steps, where an ended env's info is its reset's
    envs = make_vector_env("CartPole-v1", {}, 2, action_repeat=3)
    envs.reset(seed=0)
    ret, frames, staggered = np.zeros(2), np.zeros(2, dtype=np.int64), False
    ended = np.zeros(2, dtype=bool)
    while not ended.all():
        _, reward, terminated, truncated, infos = envs.step(np.array([0, 1]))
        done = terminated | truncated
        staggered |= bool(done.any() and not done.all())
        ret += np.where(ended, 0.0, reward)
        frames += np.where(ended, 0, frames_taken(infos, 2))
        ended |= done
    envs.close()
    assert staggered
    np.testing.assert_array_equal(frames, ret)

"""The discrete planner through the common trainer (``train.py agent=pomdp env=tmaze``)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from tensorboard.backend.event_processing import event_accumulator

import daif.envs  # noqa: F401
from daif.images import heatmap
from daif.pomdp.trainer_agent import POMDPAgent
from daif.protocol import Agent as AgentProtocol
from daif.protocol import Transition

ROOT = Path(__file__).resolve().parents[1]


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_tmaze_through_the_trainer_logs_efe_terms_and_belief_images(tmp_path):
    from daif.trainer import train

    cfg = compose_train(
        "agent=pomdp",
        "env=tmaze",
        "trainer.total_steps=64",
        "trainer.num_envs=4",
        "trainer.eval_interval=32",
        "trainer.eval_episodes=8",
        "trainer.log_interval=16",
        "trainer.checkpoint_interval=0",
        "trainer.progress=false",
        "trainer.device=cpu",
        f"trainer.run_dir={tmp_path}",
    )
    assert cfg.agent._target_ == "daif.pomdp.trainer_agent.POMDPAgent"
    result = train(cfg)
    # every evaluation episode visits the cue and then the rewarded arm (+1)
    assert result.final_eval_mean == pytest.approx(1.0)
    acc = event_accumulator.EventAccumulator(
        str(tmp_path), size_guidance={"images": 0, "scalars": 0}
    )
    acc.Reload()
    scalars, images = acc.Tags()["scalars"], acc.Tags()["images"]
    for tag in (
        "policy/q_pi_entropy",
        "efe/G",
        "efe/utility",
        "efe/states_info_gain",
        "charts/episodic_return",
    ):
        assert tag in scalars, tag
    assert {"beliefs/q_s_factor0", "beliefs/q_s_factor1", "beliefs/q_pi"} <= set(images)
    returns = [e.value for e in acc.Scalars("charts/episodic_return")]
    assert min(returns) > -1.0  # a stochastic policy at α = 16 still never picks the wrong arm
    # q(π) entropy is finite and within [0, ln P]
    ent = [e.value for e in acc.Scalars("policy/q_pi_entropy")]
    assert all(0.0 <= v <= np.log(16) + 1e-6 for v in ent)


def make_agent(env_id: str, n: int = 2, **kw) -> tuple[POMDPAgent, gym.Env]:
    env = gym.make(env_id, **kw.pop("env_kwargs", {}))
    return POMDPAgent(env.observation_space, env.action_space, env, num_envs=n, **kw), env


def test_adapter_satisfies_the_protocol_and_keeps_beliefs_in_state():
    agent, _ = make_agent("daif/TMaze-v0", 2, policy_len=1)
    assert isinstance(agent, AgentProtocol)
    state = agent.initial_state(2)
    obs = np.array([[0, 0, 1], [0, 0, 0]])
    a, state = agent.act(obs, state, np.array([True, True]), deterministic=True)
    assert a.tolist() == [3, 3]  # both go to the cue
    # at the cue the context is revealed and each env picks its arm
    a, state = agent.act(np.array([[3, 0, 0], [3, 0, 1]]), state, np.array([False, False]), True)
    assert a.tolist() == [1, 2]
    np.testing.assert_allclose(state.qs[1][0].numpy(), [1.0, 0.0], atol=1e-6)
    # a fresh episode in row 0 forgets its context belief
    a, state = agent.act(obs, state, np.array([True, False]), True)
    np.testing.assert_allclose(state.qs[1][0].numpy(), [0.5, 0.5], atol=1e-6)


def test_learned_B_counts_by_hand():
    agent, env = make_agent(
        "FrozenLake-v1",
        2,
        env_kwargs={"is_slippery": False},
        learn_B=True,
        pB_scale=0.5,
        use_param_info_gain=True,
    )
    state = agent.initial_state(2)
    obs = np.array([0, 0])  # FrozenLake starts in cell 0 (D is one-hot there)
    action, state = agent.act(obs, state, np.array([True, True]))
    # the successors the table gives; A is the identity, so beliefs are certain
    nxt = np.array([env.unwrapped.P[0][int(a)][0][1] for a in action])
    agent.observe(
        Transition(obs, action, np.zeros(2, np.float32), nxt, np.zeros(2, bool), np.zeros(2, bool))
    )
    pB = agent.core.pB[0][0]
    expect = torch.full_like(pB, 0.5)
    for a, s_next in zip(action, nxt, strict=True):
        expect[int(s_next), 0, int(a)] += 1.0
    torch.testing.assert_close(pB, expect)
    torch.testing.assert_close(agent.core.B[0][0].sum(0), torch.ones(16, 4))
    assert "learning/pB_total" in agent.update(1)


def test_bad_hyperparameters_name_the_agent_key():
    with pytest.raises(ValueError, match=r"agent\.gamma"):
        make_agent("daif/TMaze-v0", gamma=-1.0)
    with pytest.raises(ValueError, match=r"agent\.inference_algo"):
        make_agent("daif/TMaze-v0", inference_algo="bp")
    with pytest.raises(ValueError, match=r"agent\.inference_algo='mmp' runs with"):
        make_agent("daif/TMaze-v0", inference_algo="mmp", planning="sophisticated")
    with pytest.raises(ValueError, match=r"agent\.info_gain must be one of"):
        make_agent("daif/TMaze-v0", info_gain="sum")
    with pytest.raises(ValueError, match=r"agent\.model_kwargs"):
        make_agent("daif/TMaze-v0", model_kwargs={"nonsense": 1})
    with pytest.raises(ValueError, match="no discrete generative model"):
        make_agent("CartPole-v1")


def test_mmp_through_the_adapter_matches_the_core_agent_per_env():
    kw = {"env_kwargs": {"cue_validity": 0.8, "reward_prob": 0.9}}
    adapter, env = make_agent(
        "daif/TMaze-v0", 2, inference_algo="mmp", inference_horizon=2, policy_len=2, **kw
    )
    from daif.pomdp import Agent
    from daif.pomdp.tasks import build_model

    def core() -> Agent:
        return Agent(
            model=build_model(env), inference_algo="mmp", inference_horizon=2, policy_len=2
        )

    # env 0 runs three steps; env 1 restarts at the third step (a shorter window)
    obs = [
        np.array([[0, 0, 1], [0, 0, 0]]),
        np.array([[3, 0, 1], [3, 0, 0]]),
        np.array([[3, 0, 1], [0, 0, 1]]),
    ]
    starts = [np.array([True, True]), np.array([False, False]), np.array([False, True])]
    ref = [core(), core()]
    state = adapter.initial_state(2)
    for step, (o, st) in enumerate(zip(obs, starts, strict=True)):
        if step == 2:
            ref[1] = core()  # env 1 starts a new episode
        act, state = adapter.act(o, state, st, deterministic=True)
        q_pi = adapter._last_eval["q_pi"]
        for i in range(2):
            ref[i].infer_states(torch.as_tensor(o[i : i + 1]))
            q_ref, _ = ref[i].infer_policies()
            torch.testing.assert_close(q_pi[i], q_ref[0], atol=1e-5, rtol=1e-4)
            assert act[i] == int(ref[i].sample_action()[0, 0])


def test_heatmap_colours_and_shape():
    img = heatmap(np.array([[0.0, 1.0]]), cell=3)
    assert img.shape == (3, 3, 6) and img.dtype == np.uint8
    assert img[:, 0, 0].tolist() == [20, 20, 90]  # zero is navy
    assert img[:, 0, 5].tolist() == [250, 230, 40]  # the maximum is yellow


def test_pymdp_1_definitions_through_the_adapter():
    from daif.pomdp import Agent
    from daif.pomdp.tasks import build_model

    kw = {"info_gain": "per_modality", "param_info_gain": "exact"}
    agent, env = make_agent("daif/GridWorld-v0", **kw)
    obs, _ = env.reset(seed=0)
    obs2 = np.stack([obs, obs])
    agent.act(obs2, None, np.array([True, True]))
    core = Agent(model=build_model(env), batch_size=2, **kw)
    core.infer_states(torch.as_tensor(obs2).reshape(2, -1))
    _, G = core.infer_policies()
    torch.testing.assert_close(agent._last_train["G"], G)
    # (colour and scent both report the location: here the two definitions differ)
    joint = Agent(model=build_model(env), batch_size=2)
    joint.infer_states(torch.as_tensor(obs2).reshape(2, -1))
    assert not torch.allclose(joint.infer_policies()[1], G)

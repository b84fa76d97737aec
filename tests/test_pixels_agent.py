"""The deep agent on pixel observations: the `cartpole_pixels` preset (recurrent world model)
and the convolutional feed-forward agent on the same env (`agent=daif_conv`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from daif.build import make_agent
from daif.envs import make_env
from daif.nets.conv import ConvDecoder, ConvEncoder
from daif.protocol import AgentContext, Transition

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TINY = [
    "env=cartpole_pixels",
    "agent=daif_conv",
    "~agent.encoder.hidden",  # the preset's MLP widths, which the conv pair does not take
    "~agent.decoder.hidden",
    "env.kwargs.frame_size=[16,32]",
    "env.kwargs.frame_stack=2",
    "agent.encoder.depth=4",
    "agent.decoder.depth=4",
    "agent.latent_dim=8",
    "agent.batch_size=8",
    "agent.learning_starts=16",
    "agent.buffer_size=256",
    "agent.updates_per_step=1",
]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(config_name="train", overrides=overrides)


def test_preset_selects_the_recurrent_model_on_single_frames():
    cfg = _compose(["env=cartpole_pixels"])
    assert cfg.env.id == "daif/CartPolePixels-v0"
    assert cfg.agent._target_ == "daif.deep.RecurrentActiveInferenceAgent"
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    assert env.observation_space.shape == (1, 16, 64)  # one frame: the memory carries velocity
    agent = make_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))
    obs, _ = env.reset(seed=0)
    action, state = agent.act(obs[None], None, np.array([True]))
    assert env.action_space.contains(int(action[0]))
    assert state[0].abs().sum() > 0  # the memory h has read the frame
    env.close()


def test_conv_agent_composes_on_the_pixel_env():
    cfg = _compose(TINY[:4])
    assert cfg.agent._target_ == "daif.deep.DeepActiveInferenceAgent"
    assert cfg.agent.encoder._target_ == "daif.nets.conv.ConvEncoder"
    assert cfg.agent.decoder._target_ == "daif.nets.conv.ConvDecoder"
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    # the env's frame size must suit the conv networks' depth (divisible by 2**num_layers)
    ConvEncoder(env.observation_space.shape, 4, num_layers=cfg.agent.encoder.num_layers)
    env.close()


def test_agent_acts_and_learns_on_pixel_observations():
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = _compose(TINY)
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    agent = make_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))
    wm = agent.world_model
    assert isinstance(wm.encoder, ConvEncoder) and isinstance(wm.decoder, ConvDecoder)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 16, 32) and obs.dtype == np.uint8
    state, start = agent.initial_state(1), np.array([True])
    before = [p.detach().clone() for p in wm.encoder.parameters()]
    reconstruction, stored = [], []
    for step in range(1, 61):
        action, state = agent.act(obs[None], state, start)
        assert action.shape == (1,) and env.action_space.contains(int(action[0]))
        nxt, reward, term, trunc, _ = env.step(int(action[0]))
        agent.observe(
            Transition(
                obs=obs[None],
                action=np.asarray(action),
                reward=np.array([reward], np.float32),
                next_obs=nxt[None],
                terminated=np.array([term]),
                truncated=np.array([trunc]),
            )
        )
        stored.append(obs)
        metrics = agent.update(step)
        if metrics:
            assert all(math.isfinite(float(v)) for v in metrics.values())
            reconstruction.append(float(metrics["losses/reconstruction"]))
        done = term or trunc
        obs, start = (env.reset()[0] if done else nxt), np.array([done])
    env.close()
    assert len(reconstruction) >= 40  # updates began after learning_starts
    assert {"efe/risk", "efe/ambiguity", "efe/info_gain", "free_energy/kl"} <= set(metrics)
    # the conv networks are trained: weights moved and the image likelihood improved
    after = list(wm.encoder.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert np.mean(reconstruction[-5:]) < np.mean(reconstruction[:5])
    # TensorBoard picture: the newest frame of the last 8 stored observations (oldest
    # first) above their reconstructions
    img = agent.images()["model/reconstruction"]
    assert img.shape == (3, 2 * 16, 8 * 32) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, :16], np.concatenate([o[-1] for o in stored[-8:]], 1))
    assert (img[0] == img[1]).all() and (img[1] == img[2]).all()  # grey


def test_train_runs_end_to_end_on_pixels(tmp_path):
    from daif.trainer import train

    cfg = _compose(
        [
            *TINY,
            "trainer.total_steps=48",
            "trainer.num_envs=1",
            "trainer.eval_interval=0",
            "trainer.eval_episodes=1",
            "trainer.progress=false",
            "trainer.checkpoint_interval=0",
            f"trainer.run_dir={tmp_path}",
            "logger=none",
        ]
    )
    result = train(cfg)
    assert result.global_step == 48
    assert len(result.eval_history) == 1 and math.isfinite(result.final_eval_mean)
    assert result.final_eval_mean >= 1.0  # every CartPole episode earns at least one reward

"""The recurrent world model and the agent that carries its memory (issue: pixels and
partial observations): sequence masks, the filter's resets, the KL, acting with memory,
exact resume and a short masked-CartPole run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch._inductor.config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from daif import maths
from daif.build import make_agent
from daif.checkpoint import load_checkpoint
from daif.deep.recurrent_agent import RecurrentActiveInferenceAgent, windows
from daif.deep.recurrent_model import episode_firsts
from daif.envs import make_env
from daif.protocol import AgentContext, Transition
from daif.trainer import Trainer, train
from daif.validation import ConfigError
from tests.conftest import ROOT, load_benchmark

RSSM_TINY = [
    "env=cartpole_masked",
    "logger=none",
    "agent.latent_dim=4",
    "agent.encoder.hidden=[16]",
    "agent.decoder.hidden=[16]",
    "agent.transition.hidden=[16]",
    "agent.transition.deter_dim=16",
    "agent.transition.embed_dim=8",
    "agent.transition.num_members=2",
    "agent.outcome.hidden=[16]",
    "agent.critic.hidden=[16]",
    "agent.batch_size=4",
    "agent.seq_len=8",
    "agent.burn_in=2",
    "agent.n_step=3",
    "agent.buffer_size=2000",
    "agent.learning_starts=64",
    "trainer.num_envs=2",
    "trainer.total_steps=300",
    "trainer.eval_interval=150",
    "trainer.eval_episodes=2",
    "trainer.checkpoint_interval=100",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def _cfg(*overrides: str, run_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[*RSSM_TINY, f"trainer.run_dir={run_dir}", *overrides])


def _agent(
    tmp_path: Path, *overrides: str, amp: str = "off", compile: bool = False
) -> RecurrentActiveInferenceAgent:
    cfg = _cfg(*overrides, run_dir=tmp_path)
    env = make_env("daif/CartPoleMasked-v0")
    ctx = AgentContext(
        env.observation_space, env.action_space, num_envs=2, amp=amp, compile=compile
    )
    agent = make_agent(cfg.agent, ctx)
    assert isinstance(agent, RecurrentActiveInferenceAgent)
    return agent


# ------------------------------------------------------------------ the env


def test_masked_cartpole_observes_position_and_angle_only():
    env = make_env("daif/CartPoleMasked-v0")
    full = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    state, _ = full.reset(seed=3)
    assert env.observation_space.shape == (2,)
    np.testing.assert_array_equal(obs, state[[0, 2]])
    for a in (0, 1, 1, 0, 1):
        obs, r, term, trunc, _ = env.step(a)
        state, r_full, term_full, trunc_full, _ = full.step(a)
        np.testing.assert_array_equal(obs, state[[0, 2]])
        assert (r, term, trunc) == (r_full, term_full, trunc_full)


# ------------------------------------------------------------------ sequence batches


def test_episode_firsts_marks_the_step_after_each_end_and_the_sequence_start():
    terminated = torch.tensor([[False, True, False, False, False]])
    truncated = torch.tensor([[False, False, False, True, False]])
    first = episode_firsts(terminated, truncated)
    assert first.tolist() == [[True, False, True, False, True]]


def test_windows_are_the_n_step_slices_after_burn_in():
    x = torch.arange(12).view(2, 6)
    w = windows(x, 2, 1)  # starts 1..4 of each row, batch-major
    expected = [[1, 2], [2, 3], [3, 4], [4, 5], [7, 8], [8, 9], [9, 10], [10, 11]]
    assert w.tolist() == expected
    feats = torch.arange(24).view(2, 6, 2)  # a trailing feature axis stays last
    assert windows(feats, 3, 2)[0].tolist() == [[4, 5], [6, 7], [8, 9]]


def test_an_episode_boundary_inside_a_sequence_resets_the_memory(tmp_path):
    """The memory and posterior at the first step of a new episode do not depend on the
    episode before it: they equal those of the same observation filtered from scratch."""
    agent = _agent(tmp_path)
    model = agent.world_model
    torch.manual_seed(0)
    embed = torch.randn(1, 6, model.rssm.embed_dim)
    action = torch.tensor([[0, 1, 1, 0, 1, 0]])
    first = torch.tensor([[True, False, False, True, False, False]])  # a new episode at t=3
    with torch.no_grad():
        post = model.filter(embed, action, first)
        other = embed.clone()
        other[:, :3] = torch.randn(1, 3, model.rssm.embed_dim)  # a different past episode
        post_other = model.filter(other, torch.tensor([[1, 0, 0, 0, 1, 0]]), first)
        alone = model.filter(embed[:, 3:], action[:, 3:], first[:, 3:])
    torch.testing.assert_close(post.h[:, 3], alone.h[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(post.mean[:, 3], alone.mean[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(post_other.h[:, 3], post.h[:, 3], rtol=0, atol=0)
    assert not torch.equal(post.h[:, 2], post_other.h[:, 2])  # the past did matter before


def test_gaussian_kl_of_posterior_from_prior_hand_case():
    """KL[N(μq, σq²) ‖ N(μp, σp²)] = Σ_d ln(σp/σq) + (σq² + (μq − μp)²)/(2σp²) − ½."""
    mean_q, std_q = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0])
    mean_p, std_p = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    by_hand = (math.log(2.0) + (0.25 + 1.0) / 2 - 0.5) + (math.log(0.5) + (4.0 + 1.0) / 2 - 0.5)
    got = maths.gaussian_kl(mean_q, std_q, mean_p, std_p)
    assert got.item() == pytest.approx(by_hand, rel=1e-6)


def _fill(agent: RecurrentActiveInferenceAgent, steps: int = 40) -> None:
    """``steps`` random vectorised steps of two masked CartPoles into replay."""
    env = gym.vector.SyncVectorEnv(
        [lambda: make_env("daif/CartPoleMasked-v0")] * 2,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = rng.integers(0, 2, size=2)
        nxt, r, term, trunc, _ = env.step(a)
        agent.observe(Transition(obs, a, r.astype(np.float32), nxt, term, trunc))
        obs = nxt


def test_free_energy_terms_are_finite_and_the_kl_respects_free_bits(tmp_path):
    agent = _agent(tmp_path)
    _fill(agent)
    batch = agent.replay.sample(4, 8)
    loss, metrics, post = agent.world_model.free_energy(batch, free_nats=1.0)
    assert post.h.shape == (4, 8, 16) and post.s.shape == (4, 8, 4)
    assert torch.isfinite(loss)
    assert metrics["free_energy/kl"] >= 0.0
    loss.backward()
    grads = [p.grad for p in agent.world_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("trains", [False, True])
def test_the_critic_shapes_the_filter_only_when_asked(tmp_path, trains):
    agent = _agent(tmp_path, f"agent.critic_trains_encoder={str(trains).lower()}")
    _fill(agent)
    batch = agent.replay.sample(4, 8)
    _, _, post = agent.world_model.free_energy(batch, free_nats=1.0)
    loss, metrics, _ = agent.critic_loss_on(batch, post)
    loss.backward()
    cell = agent.world_model.rssm.cell.weight_hh
    assert (cell.grad is not None and cell.grad.abs().sum() > 0) == trains
    assert torch.isfinite(metrics["efe/G"]) and agent.critic.nets[0][0].weight.grad is not None


def test_next_embeddings_reuse_the_filter_and_encode_only_ended_episodes(tmp_path):
    agent = _agent(tmp_path)
    _fill(agent, steps=80)
    batch = agent.replay.sample(8, 16, terminal_fraction=1.0)
    done = batch["terminated"] | batch["truncated"]
    assert done[:, :-1].any()  # the case that needs the final observation
    _, _, post = agent.world_model.free_energy(batch, free_nats=1.0)
    with torch.no_grad():
        direct = agent.world_model.embed(batch["next_obs"].flatten(0, 1)).view(8, 16, -1)
        torch.testing.assert_close(agent._next_embeddings(batch, post), direct)


# ------------------------------------------------------------------ acting with memory


def test_act_resets_the_memory_of_rows_whose_episode_starts(tmp_path):
    agent = _agent(tmp_path)
    obs = np.array([[0.01, 0.02], [-0.03, 0.04]], dtype=np.float32)
    torch.manual_seed(1)
    state = agent.initial_state(2)
    for _ in range(3):
        _, state = agent.act(obs, state, np.array([False, False]))
    torch.manual_seed(2)
    _, carried = agent.act(obs, state, np.array([True, False]))
    torch.manual_seed(2)
    _, fresh = agent.act(obs, agent.initial_state(2), np.array([True, True]))
    h_carried, h_fresh = carried[0], fresh[0]
    torch.testing.assert_close(h_carried[0], h_fresh[0], rtol=0, atol=0)  # row 0 restarted
    assert not torch.allclose(h_carried[1], h_fresh[1])  # row 1 remembers its episode
    assert carried[2].shape == (2, 2) and carried[2].sum(1).tolist() == [1.0, 1.0]  # one-hot


def test_recurrent_agent_refuses_settings_it_cannot_honour(tmp_path):
    with pytest.raises(ConfigError, match=r"agent\.seq_len=4"):
        _agent(tmp_path, "agent.seq_len=4", "agent.burn_in=2", "agent.n_step=3")
    with pytest.raises(ConfigError, match=r"agent\.epistemic_estimate='cached'"):
        _agent(tmp_path, "agent.epistemic_estimate=cached")
    with pytest.raises(ConfigError, match=r"agent\.model_update_every=2"):
        _agent(tmp_path, "agent.model_update_every=2")
    with pytest.raises(ConfigError, match=r"agent\.eval_average_rate=0\.01"):
        _agent(tmp_path, "agent.eval_average_rate=0.01")
    with pytest.raises(ConfigError, match=r"agent\.action_persistence=0\.5"):
        _agent(tmp_path, "agent.action_persistence=0.5")
    env = make_env("Pendulum-v1")
    ctx = AgentContext(gym.spaces.Box(-1, 1, (2,)), env.action_space)
    with pytest.raises(ConfigError, match="Discrete actions"):
        make_agent(_cfg(run_dir=tmp_path).agent, ctx)


def test_images_show_truth_reconstruction_and_open_loop_prediction(tmp_path):
    agent = _agent(tmp_path)
    assert agent.images() == {}  # nothing observed yet
    _fill(agent)
    image = agent.images(n=16)["model/open_loop"]
    # one heatmap row (8 px) per step; truth | reconstruction | imagined, 2 entries each
    assert image.dtype == np.uint8 and image.shape == (3, 16 * 8, 3 * 2 * 8)


def test_bf16_gradient_steps_stay_finite(tmp_path):
    agent = _agent(tmp_path, amp="bf16")
    _fill(agent, 80)
    agent.env_steps = 1000
    for step in range(3):
        metrics = agent.update(step)
        assert metrics and all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.slow
@torch._inductor.config.patch(fallback_random=True)
def test_compiled_sequence_loss_matches_eager(tmp_path):
    eager = _agent(tmp_path)
    compiled = _agent(tmp_path, compile=True)
    compiled.load_state_dict(eager.state_dict())
    _fill(eager, 60)
    _fill(compiled, 60)
    eager.env_steps = compiled.env_steps = 1000
    for step in range(2):
        torch.manual_seed(step)
        me = eager.update(step)
        torch.manual_seed(step)
        mc = compiled.update(step)
        assert me.keys() == mc.keys()
        for tag, value in me.items():
            assert torch.allclose(mc[tag], value, rtol=1e-4, atol=1e-4), tag


# ------------------------------------------------------------------ trainer: resume, learning


def test_resume_continues_bit_identically(tmp_path):
    """A run stopped at 200 steps and resumed (memory of the envs' episodes included) ends
    with exactly the parameters and evaluations of an uninterrupted run."""
    every = "trainer.eval_interval=100"  # the split run's final evaluation is one of them
    full = Trainer(_cfg(every, run_dir=tmp_path / "full"))
    full_res = full.run()
    train(_cfg(every, "trainer.total_steps=200", run_dir=tmp_path / "split"))
    at_split = load_checkpoint(tmp_path / "split")["loop"]["agent_state"]
    assert at_split is not None and at_split[0].abs().sum() > 0  # the memory was saved
    resumed = Trainer(
        _cfg(every, f"trainer.resume={tmp_path / 'split'}", run_dir=tmp_path / "split")
    )
    res = resumed.run()
    for name, module in full.agent._modules().items():
        other = resumed.agent._modules()[name]
        for (k, x), (_, y) in zip(
            module.state_dict().items(), other.state_dict().items(), strict=True
        ):
            assert torch.equal(x, y), f"{name}.{k} differs"
    assert res.eval_history == full_res.eval_history


class _CoinFlipAgent:
    """Acts by torch's global RNG, as the recurrent agent samples its latent."""

    def initial_state(self, n: int) -> None:
        return None

    def act(self, obs, state, episode_start, deterministic=True):
        return (torch.rand(obs.shape[0]) < 0.5).long().numpy(), None


def test_seeded_evaluation_draws_the_same_numbers_whatever_came_before():
    from daif.envs import make_vector_env
    from daif.evaluation import run_episodes

    envs = make_vector_env("CartPole-v1", {}, 2)
    torch.manual_seed(1)
    first = run_episodes(_CoinFlipAgent(), envs, 6, seed=5)
    torch.manual_seed(2)  # a different training history before the evaluation
    second = run_episodes(_CoinFlipAgent(), envs, 6, seed=5)
    np.testing.assert_array_equal(first[1], second[1])


def test_evaluate_cli_scores_a_recurrent_checkpoint_as_the_trainer_did(tmp_path):
    """evaluate.py rebuilds the recurrent agent, carries its memory through each episode and,
    with the trainer's seeds and env split, gets the run's last evaluation back exactly
    (the latent samples included); ``video=true`` records the masked env."""
    run = train(_cfg("trainer.eval_episodes=4", run_dir=tmp_path / "run")).run_dir
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"checkpoint={run}", "episodes=4", f"output={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    final = load_checkpoint(run)["loop"]["eval_history"][-1]
    assert (summary["mean"], summary["std"]) == pytest.approx((final[1], final[2]))
    videos = tmp_path / "videos"
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"checkpoint={run}",
            "episodes=1",
            "video=true",
            f"video_dir={videos}",
            f"output={tmp_path / 'v.json'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in videos.glob("*.mp4")] == ["eval-episode-0.mp4"]


@pytest.mark.slow
def test_short_masked_cartpole_run_beats_random_policy(tmp_path):
    """Seeded, 6k steps of the preset: well above a random policy's ≈ 22 steps."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "env=cartpole_masked",
                "logger=none",
                "seed=0",
                "trainer.total_steps=6000",
                "trainer.eval_interval=0",
                "trainer.eval_episodes=10",
                "trainer.checkpoint_interval=0",
                "trainer.progress=false",
                "trainer.device=cpu",
                f"trainer.run_dir={tmp_path}",
            ],
        )
    result = train(cfg)
    assert result.final_eval_mean >= 3.0 * 22.0, result.final_eval_mean


def test_update_speed_times_the_recurrent_step_with_memory_carried(tmp_path):
    """benchmarks/update_speed.py's act row for the recurrent agent carries the memory from
    call to call (a reset each call would time a different, cheaper thing)."""
    speed = load_benchmark("update_speed")
    agent = _agent(tmp_path)
    obs = np.array([0.01, 0.02], dtype=np.float32)
    call = speed.recurrent_act(agent, obs)
    h1 = call()[0].clone()
    h2 = call()[0]
    fresh_h = agent.filter_obs(torch.as_tensor(obs[None]), agent.initial_state(1), [True])[1][0]
    torch.testing.assert_close(h1, fresh_h, rtol=0, atol=1e-6)  # the first call starts fresh
    assert not torch.allclose(h1, h2)  # the second continues from it

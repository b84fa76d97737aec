"""The pixel CartPole env: image pipeline against closed forms, and CartPole's dynamics kept."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from daif.envs import make_env
from daif.envs.pixels import CARTPOLE_ROWS, GREY_WEIGHTS, area_resize, make_cartpole_pixels


def test_area_resize_integer_factor_is_block_mean():
    img = np.arange(24, dtype=np.float64).reshape(4, 6)
    out = area_resize(img, (2, 3))
    # block (0, 0) holds 0, 1, 6, 7 -> 3.5; each block one step right adds 2, down adds 12
    expected = np.array([[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    np.testing.assert_allclose(out, expected)


def test_area_resize_uneven_bins_follow_floor_edges():
    # 3 rows -> 2: edges at floor(0*3/2)=0 and floor(1*3/2)=1 -> bins {0} and {1, 2}
    img = np.array([[10.0], [20.0], [60.0]])
    np.testing.assert_allclose(area_resize(img, (2, 1)), [[10.0], [40.0]])


def test_area_resize_averages_channels_separately():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)
    img[1, 1] = (0, 0, 255)
    np.testing.assert_allclose(area_resize(img, (1, 1)), [[[63.75, 0.0, 63.75]]])


@pytest.mark.parametrize("size", [(5, 1), (1, 0)])
def test_area_resize_rejects_upsampling_and_empty_sizes(size):
    with pytest.raises(ValueError, match="only downsampling"):
        area_resize(np.zeros((4, 4)), size)


def test_grey_weights_are_bt709_luma():
    # a uniform (r, g, b) colour becomes 0.2125 r + 0.7154 g + 0.0721 b
    assert np.asarray([100, 200, 50], np.float32) @ GREY_WEIGHTS == pytest.approx(
        0.2125 * 100 + 0.7154 * 200 + 0.0721 * 50, rel=1e-6
    )
    assert GREY_WEIGHTS.sum() == pytest.approx(1.0)


def test_observation_space_shape_dtype_and_stacking():
    env = make_env("daif/CartPolePixels-v0")
    assert env.observation_space.shape == (4, 64, 64)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(2)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (4, 64, 64) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    # a fresh episode is padded with copies of its first frame
    assert all(np.array_equal(obs[0], obs[i]) for i in range(1, 4))
    prev = obs
    for _ in range(5):
        obs, *_ = env.step(1)
        # oldest frame first: the stack shifts by one frame per step
        np.testing.assert_array_equal(obs[:-1], prev[1:])
        prev = obs
    assert not np.array_equal(obs[-1], obs[0])  # pushing right for 5 steps moved the cart
    env.close()


def test_cart_appears_where_the_state_puts_it():
    """The dark cart's column centroid is at (x·125 + 300)·W/600 (125 px per metre)."""
    env = make_cartpole_pixels(frame_size=(32, 64), frame_stack=1)
    env.reset(seed=0)
    cartpole = env.unwrapped
    top = CARTPOLE_ROWS[0]
    # the cart body spans image rows 285..315 of 400 (drawn 100 px above the bottom, ±15)
    rows = slice((285 - top) * 32 // 160, (315 - top) * 32 // 160)
    for x in (-1.5, 0.0, 0.7, 2.0):
        cartpole.state = np.array([x, 0.0, 0.0, 0.0])
        obs, *_ = env.step(0)  # renders the state after one 0.02 s step
        x_now = cartpole.state[0]
        darkness = 255.0 - obs[0, rows].astype(np.float64)
        darkness[darkness < 128] = 0.0  # keep the black cart, drop the grey track and pole
        cols = np.arange(64) + 0.5
        centroid = (darkness.sum(0) * cols).sum() / darkness.sum()
        assert centroid == pytest.approx((x_now * 125.0 + 300.0) * 64 / 600, abs=0.6)
    env.close()


def test_rewards_and_episode_ends_match_state_cartpole():
    pixels = make_env("daif/CartPolePixels-v0", frame_size=16, frame_stack=2)
    state = gym.make("CartPole-v1")
    pixels.reset(seed=7)
    state.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = int(rng.integers(2))
        _, r1, te1, tr1, _ = pixels.step(a)
        _, r2, te2, tr2, _ = state.step(a)
        assert (r1, te1, tr1) == (r2, te2, tr2)
        if te1 or tr1:
            pixels.reset(seed=11)
            state.reset(seed=11)
    pixels.close()
    state.close()


def test_same_seed_same_frames():
    frames = []
    for _ in range(2):
        env = make_env("daif/CartPolePixels-v0", frame_size=16)
        obs, _ = env.reset(seed=5)
        seq = [obs]
        for a in (0, 1, 1, 0, 1):
            seq.append(env.step(a)[0])
        frames.append(np.stack(seq))
        env.close()
    np.testing.assert_array_equal(frames[0], frames[1])


def test_uncropped_frames_and_rectangular_sizes():
    env = make_cartpole_pixels(frame_size=[20, 30], frame_stack=3, crop=False)
    assert env.observation_space.shape == (3, 20, 30)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 20, 30)
    env.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_size": 0}, "frame_size"),
        ({"frame_size": (8, 8, 8)}, "frame_size"),
        ({"frame_size": 200}, "larger than"),
        ({"frame_stack": 0}, "frame_stack"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_cartpole_pixels(**kwargs)


def test_sigterm_still_stops_a_process_that_renders():
    """SDL would install its own SIGTERM handler (turning the signal into a quit event
    nobody reads); the env must leave the default handler so a run can be stopped."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from daif.envs import make_env\n"
        "env = make_env('daif/CartPolePixels-v0', frame_size=8)\n"
        "env.reset(seed=0); env.step(0)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(2)\n"
    )
    # a clean environment: the SDL settings must come from importing daif.envs.pixels
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDL_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, env=env)
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()[-500:]

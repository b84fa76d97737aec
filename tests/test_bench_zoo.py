"""benchmarks/sample_efficiency.py builds each baseline with the RL Zoo settings it transcribes."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

bench = load_benchmark("sample_efficiency")

ENTRIES = [(algo, env_id) for algo, envs in bench.ZOO_HYPERPARAMS.items() for env_id in envs]
# settings SB3 keeps under the zoo's own name, unchanged
PLAIN = ("gamma", "batch_size", "buffer_size", "learning_starts", "n_steps", "n_epochs",
         "gae_lambda", "tau", "gradient_steps")  # fmt: skip


@pytest.mark.parametrize(("algo", "env_id"), ENTRIES, ids=[f"{a}-{e}" for a, e in ENTRIES])
def test_every_zoo_entry_builds_its_model_with_the_zoo_settings(algo, env_id):
    if "LunarLander" in env_id:
        pytest.importorskip("Box2D")
    hp = bench.ZOO_HYPERPARAMS[algo][env_id]
    steps = 2 * hp["n_timesteps"]  # longer than the zoo: schedules stretch to the run
    model, env, eval_env, normalize, learn_steps = bench.build_sb3(algo, env_id, 0, steps)
    try:
        assert learn_steps == steps
        assert env.num_envs == hp.get("n_envs", 1)
        assert normalize == bool(hp.get("normalize", False))
        for key in PLAIN:
            if key in hp:
                assert getattr(model, key) == hp[key], key
        arch = hp.get("policy_kwargs", {}).get("net_arch")
        if isinstance(arch, list):
            assert list(model.policy_kwargs["net_arch"]) == arch
        if algo == "dqn":
            # the exploration lasts the zoo's number of steps, not the same fraction
            assert model.exploration_fraction == pytest.approx(hp["exploration_fraction"] / 2)
        lr = hp.get("learning_rate")
        if isinstance(lr, str):  # "lin_x": x at the start, x/2 when the zoo's length is done
            x = float(lr[4:])
            assert model.lr_schedule(1.0) == pytest.approx(x)
            assert model.lr_schedule(0.75) == pytest.approx(x / 2)
        elif lr is not None:
            assert model.lr_schedule(0.5) == pytest.approx(lr)
        if "noise_type" in hp:
            assert model.action_noise is not None
    finally:
        env.close()
        eval_env.close()


def test_a_baseline_the_zoo_has_no_settings_for_is_refused_before_any_run(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--env", "pendulum", "--baselines", "dqn"])
    err = capsys.readouterr().err
    assert "['dqn']" in err and "Pendulum-v1" in err and "sac, td3" in err

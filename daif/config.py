"""The trainer's configuration schema and its validation.

The ``trainer``, ``logger`` and ``env`` nodes of ``configs/train.yaml`` are described by
the dataclasses below. :func:`validate_config` checks a composed config against them
*before* anything is built — type, range and choice — and raises :class:`ConfigError`
naming the dotted key and the bad value (the checks themselves are in
:mod:`daif.validation`, which agents use for their own ``agent.*`` hyperparameters).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from daif.envs import check_env_id
from daif.utils import AMP_MODES
from daif.validation import ConfigError, check_choice, check_int

LOGGER_BACKENDS: tuple[str, ...] = ("tensorboard", "wandb", "none")
WANDB_MODES: tuple[str, ...] = ("online", "offline")


@dataclass
class TrainerConfig:
    """``trainer.*``: budgets and runtime switches. All step counts are environment steps
    (frames) summed over the vector envs (one vectorised step of N envs counts N frames per
    env, or up to ``action_repeat`` times that)."""

    total_steps: int = 50_000
    num_envs: int = 4
    action_repeat: int = 1  # frames each action is held for; the agent counts its decisions
    eval_interval: int = 10_000  # 0: evaluate only at the end
    eval_episodes: int = 10  # 0: never evaluate
    log_interval: int = 1_000
    checkpoint_interval: int = 10_000  # 0: checkpoint only at the end
    amp: str = "off"  # off | bf16 | fp16
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # torch intra-op threads. 1 is fastest for daif's small networks and lets parallel
    # sweep jobs share the cores; None keeps torch's default (one per core).
    threads: int | None = 1
    resume: str | None = None  # run dir or checkpoint file to continue from
    progress: bool = True  # tqdm progress bar
    run_dir: str | None = None  # None: Hydra's output dir, else runs/api/<env>/<agent>/<seed>
    overwrite: bool = False  # replace the run already in the run dir (default: refuse)
    trust_checkpoint: bool = False  # resume from a checkpoint written by another user/machine


@dataclass
class LoggerConfig:
    """``logger.*``: where scalars, images and hparams go."""

    backend: str = "tensorboard"  # tensorboard | wandb (TensorBoard and W&B) | none
    flush_secs: int = 10
    log_images: bool = True
    log_hparams: bool = True
    # Weights & Biases, read only with backend=wandb
    project: str = "daif"
    entity: str | None = None  # W&B team or user; None: the account's default
    group: str | None = None  # e.g. one group per sweep
    mode: str = "online"  # online | offline (then `wandb sync <run>/wandb/offline-run-*`)


@dataclass
class EnvConfig:
    """``env.*``: the Gymnasium id and keyword arguments for ``gymnasium.make``."""

    id: str = "CartPole-v1"
    kwargs: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _is_instance(value: Any, tp: Any) -> bool:
    """isinstance for the few annotation shapes the schema uses (int, float, str, bool,
    ``X | None``, ``dict[...]``); bool is not accepted as an int."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(_is_instance(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if origin is dict or tp is dict:
        return isinstance(value, dict | DictConfig)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_schema(node: Any, schema: type, prefix: str) -> None:
    """Check that ``node``'s keys are the schema's fields and each value has its type.

    Raises:
        ConfigError: ``"<prefix>.<key>: expected int, got 'abc' (str)"`` or an unknown key.
    """
    if not isinstance(node, dict | DictConfig):
        raise ConfigError(f"{prefix}: expected a mapping, got {node!r}")
    hints = get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in hints:
            raise ConfigError(f"{prefix}.{key}: unknown key; known keys: {', '.join(names)}")
    for name in names:
        if name not in node:
            continue  # missing keys take the schema default
        value = node[name]
        if not _is_instance(value, hints[name]):
            raise ConfigError(
                f"{prefix}.{name}: expected {_type_name(hints[name])}, "
                f"got {value!r} ({type(value).__name__})"
            )


def trainer_settings(cfg: DictConfig) -> TrainerConfig:
    """``cfg.trainer`` as a validated :class:`TrainerConfig` (schema defaults fill gaps)."""
    node = cfg.get("trainer") or {}
    check_schema(node, TrainerConfig, "trainer")
    t = TrainerConfig(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    check_int("trainer.total_steps", t.total_steps, minimum=1)
    check_int("trainer.num_envs", t.num_envs, minimum=1)
    check_int("trainer.action_repeat", t.action_repeat, minimum=1)
    if t.threads is not None:
        check_int("trainer.threads", t.threads, minimum=1)
    check_int("trainer.eval_interval", t.eval_interval, minimum=0)
    check_int("trainer.eval_episodes", t.eval_episodes, minimum=0)
    check_int("trainer.log_interval", t.log_interval, minimum=1)
    check_int("trainer.checkpoint_interval", t.checkpoint_interval, minimum=0)
    check_choice("trainer.amp", t.amp, AMP_MODES)
    if not (t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps")):
        raise ConfigError(f"trainer.device: unknown device {t.device!r}; use auto|cpu|cuda[:N]|mps")
    return t


def logger_settings(cfg: DictConfig) -> LoggerConfig:
    """``cfg.logger`` as a validated :class:`LoggerConfig`."""
    node = cfg.get("logger") or {}
    check_schema(node, LoggerConfig, "logger")
    lg = LoggerConfig(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    check_choice("logger.backend", lg.backend, LOGGER_BACKENDS)
    check_int("logger.flush_secs", lg.flush_secs, minimum=1)
    if lg.backend == "wandb":
        check_choice("logger.mode", lg.mode, WANDB_MODES)
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "logger.backend='wandb' needs the wandb package: pip install -e '.[wandb]'"
            )
    return lg


def env_settings(cfg: DictConfig) -> EnvConfig:
    """``cfg.env`` as a validated :class:`EnvConfig`; an unknown id lists the known ones."""
    node = cfg.get("env")
    if node is None:
        raise ConfigError("env: missing; pick one with env=<name> (see configs/env/)")
    check_schema(node, EnvConfig, "env")
    env = EnvConfig(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    if not isinstance(env.id, str) or not env.id:
        raise ConfigError(f"env.id: expected a non-empty string, got {env.id!r}")
    try:
        check_env_id(env.id)
    except ValueError as exc:
        raise ConfigError(f"env.id: {exc}") from exc
    return env


def validate_config(cfg: DictConfig) -> tuple[TrainerConfig, LoggerConfig, EnvConfig]:
    """Check the whole training config before anything is built.

    Returns the typed ``trainer``, ``logger`` and ``env`` settings.

    Raises:
        ConfigError: naming the first bad key (``seed``, ``trainer.*``, ``logger.*``, ``env.*``,
            or ``agent`` when it has no ``_target_``).
    """
    seed = cfg.get("seed", 0)
    check_int("seed", seed, minimum=0)
    agent = cfg.get("agent")
    if agent is None or "_target_" not in agent:
        raise ConfigError(
            "agent: missing; configs/experiment/<env>.yaml chooses it for a preset, "
            "else pass +agent=<name> (daif, daif_conv, pomdp)"
        )
    return trainer_settings(cfg), logger_settings(cfg), env_settings(cfg)

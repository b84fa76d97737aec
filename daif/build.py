"""The one place an agent is instantiated from config: :func:`make_agent`; and Hydra's view
of the deep agent's defaults (:func:`register_configs`).

The ``agent`` node names the agent class (``_target_``); its other keys are the agent's
hyperparameters, and nested ``_target_`` nodes (networks, marked ``_partial_``) are
instantiated into factories first. The class's ``from_context`` then takes from the
:class:`daif.protocol.AgentContext` what it needs (spaces, device, an env to model).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from daif.deep.config import DeepAgentConfig
from daif.protocol import Agent, AgentContext
from daif.validation import ConfigError


def register_configs() -> None:
    """Store every :class:`DeepAgentConfig` default as the config ``agent/deep_defaults``,
    which ``configs/agent/daif*.yaml`` start from: the dataclass stays the one place where
    defaults are written, and ``agent.<field>=...`` overrides find their key."""
    defaults = dataclasses.asdict(DeepAgentConfig())
    ConfigStore.instance().store(group="agent", name="deep_defaults", node=defaults)


register_configs()


def _named_factory(key: str, value: Any) -> Any:
    """A network factory (``_partial_`` node) whose bad arguments are reported under the
    config key that set them: ``agent.encoder.hidden[0]: must be >= 1, got -3``."""
    if not isinstance(value, functools.partial):
        return value

    @functools.wraps(value)
    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            return value(*args, **kwargs)
        except ConfigError as exc:  # "<argument>: <why>" from daif.validation
            raise ConfigError(f"{key}.{exc}") from exc
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{key}: {' '.join(str(exc).split())}") from exc

    return build


def make_agent(agent_cfg: DictConfig | Mapping[str, Any], ctx: AgentContext) -> Agent:
    """Build the agent that ``agent_cfg`` describes for the envs in ``ctx``.

    Raises:
        ConfigError: no ``_target_``, an unknown class, or a hyperparameter the agent
            refuses (the message names ``agent.<key>``).
    """
    node = OmegaConf.create(agent_cfg) if not isinstance(agent_cfg, DictConfig) else agent_cfg
    target = node.get("_target_")
    if not target:
        raise ConfigError("agent: missing or has no _target_; pick one with agent=<name>")
    try:
        cls = hydra.utils.get_class(str(target))
    except Exception as exc:
        raise ConfigError(f"agent._target_: cannot import {target!r}") from exc
    hparams = {k: v for k, v in node.items() if k != "_target_"}
    try:
        # networks: `_partial_` nodes → factories; plain values → Python containers
        kwargs = hydra.utils.instantiate(OmegaConf.create(hparams), _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"agent: cannot build a network: {' '.join(str(cause).split())}") from exc
    kwargs = {k: _named_factory(f"agent.{k}", v) for k, v in kwargs.items()}
    if not hasattr(cls, "from_context"):
        raise ConfigError(f"agent._target_: {target} has no from_context (see daif.protocol.Agent)")
    try:
        return cls.from_context(ctx, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # agents name the bad `agent.<key>` in the message
        raise ConfigError(f"agent: {' '.join(str(exc).split())}") from exc

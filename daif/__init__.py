"""daif: deep active inference agents trained like any RL agent.

``daif.make(env, overrides)`` builds a :class:`~daif.api.Learner` from a preset (what
``python train.py env=<env>`` trains), ``daif.load(path)`` a saved agent or a run; see
:mod:`daif.api`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Learner", "load", "make"]


def __getattr__(name: str) -> Any:
    # lazy: `import daif.pomdp` alone does not pull in the trainer and Hydra
    if name in __all__:
        from daif import api

        return getattr(api, name)
    raise AttributeError(f"module 'daif' has no attribute {name!r}")

"""The deep active inference agent, one concern per module.

* :mod:`daif.deep.world_model` — the generative model and its variational free energy;
* :mod:`daif.deep.efe` — the expected-free-energy target and critic loss (pure functions);
* :mod:`daif.deep.epistemic` — where the target's ambiguity and information gain come from;
* :mod:`daif.deep.config` — every hyperparameter, documented and validated once;
* :mod:`daif.deep.agent` — acting, the gradient step, checkpoints;
* :mod:`daif.deep.recurrent_model` and :mod:`daif.deep.recurrent_agent` — the recurrent
  (RSSM) world model and the agent that carries its memory through an episode.
"""

from daif.deep.agent import DeepActiveInferenceAgent
from daif.deep.config import DeepAgentConfig
from daif.deep.recurrent_agent import RecurrentActiveInferenceAgent
from daif.deep.world_model import WorldModel

__all__ = [
    "DeepActiveInferenceAgent",
    "DeepAgentConfig",
    "RecurrentActiveInferenceAgent",
    "WorldModel",
]

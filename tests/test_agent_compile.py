"""torch.compile of the agent's loss function gives the eager losses (slow-ish: compiles)."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config

from tests.test_agent_core import fill, make_agent


@pytest.mark.slow
# inductor draws its own random numbers unless told to call torch's generator. config.patch
# restores the entry afterwards (monkeypatch.setattr would delete it, breaking later compiles).
@torch._inductor.config.patch(fallback_random=True)
def test_compiled_losses_match_eager() -> None:
    eager = make_agent(seed=0)
    compiled = make_agent(seed=0, compile=True)
    compiled.load_state_dict(eager.state_dict())
    fill(eager)
    fill(compiled)
    for step in range(2):
        torch.manual_seed(step)
        me = eager.update(step)
        torch.manual_seed(step)
        mc = compiled.update(step)
        for tag, value in me.items():
            # inductor reorders float32 reductions: agreement to ~1e-5 relative
            assert torch.allclose(mc[tag], value, rtol=1e-4, atol=1e-4), tag

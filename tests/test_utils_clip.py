"""daif.utils.clip_grad_norm_: the 2-norm of all gradients as one vector, and the clipping."""

from __future__ import annotations

import pytest
import torch

from daif.utils import clip_grad_norm_


def test_norm_and_scaling_by_hand() -> None:
    # ‖(3, 4, 12)‖₂ = 13; clipped to 6.5 every entry halves
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])]
    total = clip_grad_norm_(grads, 6.5)
    assert total.item() == pytest.approx(13.0)
    torch.testing.assert_close(grads[0], torch.tensor([1.5, 2.0]))
    torch.testing.assert_close(grads[1], torch.tensor([[6.0]]))


def test_below_the_limit_leaves_gradients_unchanged() -> None:
    grads = [torch.tensor([3.0, 4.0])]
    assert clip_grad_norm_(grads, 10.0).item() == pytest.approx(5.0)
    assert torch.equal(grads[0], torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_matches_torch_clip_grad_norm_bit_for_bit(max_norm: float) -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in [(64, 4), (64,), (2, 64)]]
    for p in params:
        p.grad = torch.randn_like(p)
    ref_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, ref in zip(params, ref_params, strict=True):
        ref.grad = p.grad.clone()
    expected = torch.nn.utils.clip_grad_norm_(ref_params, max_norm)
    total = clip_grad_norm_([p.grad for p in params], max_norm)
    assert torch.equal(total, expected)
    for p, ref in zip(params, ref_params, strict=True):
        assert torch.equal(p.grad, ref.grad)


def test_no_gradients_have_norm_zero() -> None:
    assert clip_grad_norm_([], 1.0).item() == 0.0

"""Closed forms for the diagonal-Gaussian functions of daif.maths used by the deep agent."""

from __future__ import annotations

import math

import pytest
import torch

from daif import maths


def test_gaussian_kl_matches_closed_form_1d() -> None:
    # KL[N(1, 2²) ‖ N(0, 1)] = ln(1/2) + (4 + 1)/2 − 1/2 = 2 − ln 2
    kl = maths.gaussian_kl(torch.tensor([1.0]), torch.tensor([2.0]), torch.zeros(1), torch.ones(1))
    assert kl.item() == pytest.approx(2.0 - math.log(2.0), abs=1e-6)


def test_gaussian_kl_sums_over_dimensions_and_is_zero_for_equal() -> None:
    mq, sq = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.5])
    mp, sp = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    # second dimension: ln 2 + 0.25/2 − 1/2
    expected = (2.0 - math.log(2.0)) + (math.log(2.0) + 0.125 - 0.5)
    assert maths.gaussian_kl(mq, sq, mp, sp).item() == pytest.approx(expected, abs=1e-6)
    assert maths.gaussian_kl(mq, sq, mq, sq).item() == pytest.approx(0.0, abs=1e-7)


def test_gaussian_entropy_closed_form() -> None:
    # H[N(μ, σ²)] = ½ ln(2πe σ²) per dimension
    std = torch.tensor([[1.0, math.e]])
    expected = 0.5 * math.log(2 * math.pi * math.e) * 2 + 1.0
    assert maths.gaussian_entropy(std).item() == pytest.approx(expected, abs=1e-6)


def test_gaussian_log_prob_at_mean_and_one_sigma() -> None:
    lp = maths.gaussian_log_prob(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    assert lp.item() == pytest.approx(-0.5 - 0.5 * math.log(2 * math.pi), abs=1e-6)


def test_mixture_info_gain_zero_when_members_agree() -> None:
    means = torch.randn(1, 3, 4).expand(5, -1, -1)
    stds = torch.rand(1, 3, 4).add(0.1).expand(5, -1, -1)
    ig = maths.gaussian_mixture_info_gain(means, stds)
    assert ig.shape == (3,)
    assert torch.allclose(ig, torch.zeros(3), atol=1e-6)


def test_mixture_info_gain_two_members_by_hand() -> None:
    # Two unit Gaussians at 0 and 1: KL = ½ each way, I = −ln((1 + e^{−½}) / 2)
    means = torch.tensor([[0.0], [1.0]])
    stds = torch.ones(2, 1)
    expected = -math.log((1.0 + math.exp(-0.5)) / 2.0)
    assert maths.gaussian_mixture_info_gain(means, stds).item() == pytest.approx(expected, abs=1e-6)


def test_mixture_info_gain_bounded_by_log_k_and_reaches_it_when_separated() -> None:
    k = 5
    torch.manual_seed(0)
    means = torch.randn(k, 64, 3)
    stds = torch.rand(k, 64, 3) + 0.05
    ig = maths.gaussian_mixture_info_gain(means, stds)
    assert (ig >= 0).all() and (ig <= math.log(k) + 1e-6).all()
    far = torch.arange(k, dtype=torch.float32).mul(100.0).view(k, 1, 1).expand(k, 1, 2)
    sep = maths.gaussian_mixture_info_gain(far, torch.ones(k, 1, 2))
    assert sep.item() == pytest.approx(math.log(k), abs=1e-6)


def test_mixture_info_gain_unequal_variances_by_hand() -> None:
    # N(0, 1) and N(0, 2²): KL[1‖2] = ln 2 + 1/8 − 1/2, KL[2‖1] = −ln 2 + 2 − 1/2,
    # I = −½ Σ_i ln ½(1 + e^{−KL_i,other})
    kl12 = math.log(2.0) + 0.125 - 0.5
    kl21 = -math.log(2.0) + 2.0 - 0.5
    expected = -0.5 * (
        math.log((1.0 + math.exp(-kl12)) / 2.0) + math.log((1.0 + math.exp(-kl21)) / 2.0)
    )
    means, stds = torch.zeros(2, 1), torch.tensor([[1.0], [2.0]])
    assert maths.gaussian_mixture_info_gain(means, stds).item() == pytest.approx(expected, abs=1e-6)


def test_mixture_info_gain_equals_its_pairwise_kl_definition() -> None:
    # −(1/K) Σ_i ln (1/K) Σ_j exp(−KL[N_i ‖ N_j]), built here from gaussian_kl in float64,
    # including means far from 0 and small σ (where an unstable expansion would cancel).
    torch.manual_seed(1)
    k = 4
    means = torch.randn(k, 32, 6, dtype=torch.float64) * 0.05 + 30.0
    stds = torch.rand(k, 32, 6, dtype=torch.float64) * 0.2 + 0.02
    kl = torch.stack(
        [
            torch.stack([maths.gaussian_kl(means[i], stds[i], means[j], stds[j]) for j in range(k)])
            for i in range(k)
        ]
    )  # [i, j, B]
    expected = -(torch.logsumexp(-kl, dim=1) - math.log(k)).mean(0)
    got = maths.gaussian_mixture_info_gain(means.float(), stds.float())
    assert got.shape == (32,)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


def test_mixture_info_gain_stays_float32_under_bf16_autocast() -> None:
    torch.manual_seed(2)
    means, stds = torch.randn(5, 16, 8), torch.rand(5, 16, 8) + 0.1
    ref = maths.gaussian_mixture_info_gain(means, stds)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = maths.gaussian_mixture_info_gain(means, stds)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref)

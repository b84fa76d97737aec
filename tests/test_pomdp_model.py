"""Validation of the generative model and of the agent's arguments: errors name the offender."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daif.pomdp import Agent, GenerativeModel

A_OK = np.array([[0.9, 0.2], [0.1, 0.8]])
B_OK = np.stack([np.eye(2), np.eye(2)[::-1]], -1)


def test_nan_in_preferences_names_its_index():
    with pytest.raises(ValueError, match=r"C\[0\] has a non-finite entry nan at index \(1,\)"):
        GenerativeModel(A_OK, B_OK, C=[np.array([0.0, np.nan])])


def test_column_not_summing_to_one_names_its_index():
    A = A_OK.copy()
    A[0, 1] = 0.5  # column 1 sums to 1.3
    with pytest.raises(ValueError, match=r"A\[0\] column \(1,\) sums to 1\.3"):
        GenerativeModel(A, B_OK)
    B = B_OK.copy()
    B[0, 1, 1] = 0.2
    with pytest.raises(ValueError, match=r"B\[0\] column \(1, 1\)"):
        GenerativeModel(A_OK, B)


def test_shape_mismatch_between_A_and_B():
    with pytest.raises(ValueError, match=r"A\[0\] has shape \(2, 3\), but B implies"):
        GenerativeModel(np.full((2, 3), 0.5), B_OK)
    with pytest.raises(ValueError, match=r"B\[0\] must have shape \[S, S, U\]"):
        GenerativeModel(A_OK, np.full((2, 3, 1), 0.5))


def test_negative_entries_and_counts():
    with pytest.raises(ValueError, match=r"pA\[0\] has a negative Dirichlet count"):
        GenerativeModel(A_OK, B_OK, pA=-A_OK)
    A = A_OK.copy()
    A[:, 0] = [1.2, -0.2]
    with pytest.raises(ValueError, match=r"A\[0\] has a negative entry -0.2 at index \(1, 0\)"):
        GenerativeModel(A, B_OK)


def test_other_arrays_are_checked():
    with pytest.raises(ValueError, match=r"C\[0\] has shape \(3,\), expected \(2,\)"):
        GenerativeModel(A_OK, B_OK, C=np.zeros(3))
    with pytest.raises(ValueError, match=r"D\[0\] sums to 0.5, not 1"):
        GenerativeModel(A_OK, B_OK, D=np.array([0.25, 0.25]))
    with pytest.raises(ValueError, match="E has 3 entries but there are 2 policies"):
        Agent(A_OK, B_OK, E=np.ones(3) / 3)
    with pytest.raises(ValueError, match="pB has 2 factors"):
        GenerativeModel(A_OK, B_OK, pB=[B_OK, B_OK])
    # counts that would define D are named themselves
    with pytest.raises(ValueError, match=r"pD\[0\] has shape \(3,\), expected \(2,\)"):
        GenerativeModel(A_OK, B_OK, pD=[np.ones(3)])


def test_observation_out_of_range_is_named():
    agent = Agent([A_OK, A_OK], B_OK, batch_size=2)
    with pytest.raises(
        ValueError, match=r"observation index 2 out of range for modality 1 .* row 1"
    ):
        agent.infer_states(torch.tensor([[0, 0], [1, 2]]))
    with pytest.raises(ValueError, match="the model has 2"):
        agent.infer_states(torch.tensor([[0], [1]]))


def test_bad_agent_arguments_are_named():
    for kw, msg in [
        ({"gamma": -1.0}, "gamma"),
        ({"policy_len": 0}, "policy_len"),
        ({"inference_algo": "bp"}, "inference_algo"),
        ({"action_selection": "greedy"}, "action_selection"),
        ({"planning": "mcts"}, "planning"),
        ({"fr_pA": 0.0}, "fr_pA"),
        ({"inference_params": {"tol": 1}}, "inference_params"),
    ]:
        with pytest.raises(ValueError, match=msg):
            Agent(A_OK, B_OK, **kw)


def test_A_factor_list_broadcasts_over_unused_factors():
    B = [B_OK, np.eye(3)[:, :, None]]
    A_small = np.array([[0.7, 0.1, 0.5], [0.3, 0.9, 0.5]])  # depends on factor 1 only
    m = GenerativeModel([A_small], B, A_factor_list=[[1]])
    assert m.A[0].shape == (2, 2, 3)
    np.testing.assert_allclose(m.A[0][:, 0, :].numpy(), A_small)
    np.testing.assert_allclose(m.A[0][:, 1, :].numpy(), A_small)


def test_model_from_counts_only():
    pA = np.array([[3.0, 1.0], [1.0, 1.0]])
    m = GenerativeModel(None, B_OK, pA=pA)
    np.testing.assert_allclose(m.A[0].numpy(), [[0.75, 0.5], [0.25, 0.5]])

"""Convolutional encoder/decoder: shapes, std clamps, input scaling, and that they learn."""

from __future__ import annotations

import pytest
import torch

from daif.nets import Decoder, Encoder
from daif.nets.conv import ConvDecoder, ConvEncoder


@pytest.mark.parametrize(
    ("obs_shape", "num_layers"), [((4, 64, 64), 4), ((3, 32, 48), 4), ((2, 16, 64), 3)]
)
def test_shapes_and_protocols(obs_shape, num_layers):
    torch.manual_seed(0)
    enc = ConvEncoder(obs_shape, latent_dim=8, depth=4, num_layers=num_layers)
    dec = ConvDecoder(8, obs_shape, depth=4, num_layers=num_layers)
    assert isinstance(enc, Encoder) and isinstance(dec, Decoder)
    obs = torch.rand(5, *obs_shape)
    mean, std = enc(obs)
    assert mean.shape == std.shape == (5, 8)
    rec_mean, rec_std = dec(mean)
    assert rec_mean.shape == rec_std.shape == (5, *obs_shape)
    assert mean.dtype == std.dtype == rec_mean.dtype == rec_std.dtype == torch.float32


def test_std_stays_inside_its_clamp_even_for_extreme_inputs():
    torch.manual_seed(0)
    enc = ConvEncoder((2, 16, 16), 4, depth=4, num_layers=2, min_std=0.05, max_std=0.5)
    dec = ConvDecoder(4, (2, 16, 16), depth=4, num_layers=2, min_std=0.05, max_std=0.5)
    obs = torch.cat([torch.zeros(1, 2, 16, 16), torch.full((1, 2, 16, 16), 1e4)])
    _, std = enc(obs)
    _, rec_std = dec(torch.tensor([[1e4] * 4, [-1e4] * 4]))
    for s in (std, rec_std):
        assert torch.all(s >= 0.05) and torch.all(s <= 0.5)


def test_uint8_frames_are_scaled_to_unit_interval():
    torch.manual_seed(0)
    enc = ConvEncoder((2, 16, 16), 4, depth=4, num_layers=2)
    frames = torch.randint(0, 256, (3, 2, 16, 16), dtype=torch.uint8)
    m_int, s_int = enc(frames)
    m_float, s_float = enc(frames.float() / 255.0)
    torch.testing.assert_close(m_int, m_float)
    torch.testing.assert_close(s_int, s_float)


def test_untrained_decoder_predicts_mid_grey():
    # the last layer's output is offset by 0.5, so zero pre-activations give mid-grey
    dec = ConvDecoder(4, (1, 8, 8), depth=2, num_layers=1)
    torch.nn.init.zeros_(dec.deconv[-1].weight)
    torch.nn.init.zeros_(dec.deconv[-1].bias)
    mean, _ = dec(torch.randn(3, 4))
    torch.testing.assert_close(mean, torch.full_like(mean, 0.5))


@pytest.mark.parametrize(
    ("obs_shape", "num_layers", "match"),
    [
        ((4, 60, 64), 4, "divisible"),
        ((4, 64), 2, "obs_shape"),
        ((4, 64, 64), 0, "num_layers"),
    ],
)
def test_bad_shapes_raise(obs_shape, num_layers, match):
    with pytest.raises(ValueError, match=match):
        ConvEncoder(obs_shape, 4, num_layers=num_layers)
    with pytest.raises(ValueError, match=match):
        ConvDecoder(4, obs_shape, num_layers=num_layers)


def test_wrong_input_shape_raises():
    enc = ConvEncoder((4, 16, 16), 4, depth=2, num_layers=2)
    with pytest.raises(ValueError, match="expects"):
        enc(torch.rand(2, 3, 16, 16))


def test_autoencoder_learns_to_tell_two_frames_apart():
    """Two complementary binary images (bright left half / bright right half): any
    reconstruction that ignores the latent can at best predict their mean, 0.5 everywhere,
    with squared error exactly 0.25. A few Adam steps must get well below that, which
    needs gradients through every layer of both networks."""
    torch.manual_seed(0)
    shape = (1, 8, 8)
    left = torch.zeros(shape)
    left[..., :4] = 1.0
    batch = torch.stack([left, left.flip(-1)])
    enc = ConvEncoder(shape, 2, depth=4, num_layers=2)
    dec = ConvDecoder(2, shape, depth=4, num_layers=2)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)

    def error() -> torch.Tensor:
        mean, _ = enc(batch)
        return ((dec(mean)[0] - batch) ** 2).mean()

    for _ in range(30):
        opt.zero_grad()
        loss = error()
        loss.backward()
        opt.step()
    assert all(p.grad is not None for p in [*enc.parameters(), *dec.parameters()])
    assert error().item() < 0.1

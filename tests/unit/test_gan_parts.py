"""MEE building blocks (issue 5): networks, losses, replay buffer, entropy, mode counters."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from embedlab.evaluation import class_histogram_kl, count_modes
from embedlab.evaluation.modes import coverage, triple_modes
from embedlab.methods.gan.losses import (
    ReplayBuffer,
    disomap_from_outputs,
    disomap_loss,
    dlle_loss,
    entropy_estimate,
    entropy_loss,
    gan_d_loss,
    gan_g_loss,
    maf_d_loss,
    maf_g_loss,
    mild_augment,
    sigma_at,
)
from embedlab.methods.gan.modes import (
    assign_modes,
    grid_modes,
    ring_modes,
    sample_mixture,
    stack_digits,
)
from embedlab.methods.gan.nets import ConvDiscriminator, ConvGenerator, EmbeddingHead, MLPDiscriminator, MLPGenerator


def test_buffer_keeps_size_and_drops_the_oldest_first():
    buffer = ReplayBuffer(size=5, dim=2)
    assert len(buffer) == 0 and not buffer.full
    for start in range(0, 12, 3):  # pushes rows 0..11, three at a time
        buffer.push(torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2))
        assert len(buffer) == min(5, start + 3)
    assert buffer.full
    assert buffer.data[:, 0].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]  # the newest five, in order
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        buffer.push(torch.zeros(3, 4))


def test_buffer_push_detaches():
    buffer = ReplayBuffer(size=4, dim=3)
    x = torch.randn(2, 3, requires_grad=True)
    buffer.push(x * 2)
    assert not buffer.data.requires_grad


def test_entropy_estimate_grows_when_points_spread_out():
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(256, 8, generator=gen)
    tight = 0.05 * torch.randn(64, 8, generator=gen)
    spread = 3.0 * torch.randn(64, 8, generator=gen)
    assert entropy_estimate(spread, reference) > entropy_estimate(tight, reference) + 1.0
    # the loss is its negative, scaled by sigma: minimising it spreads the batch out
    buffer = ReplayBuffer(256, 8)
    buffer.push(reference)
    assert entropy_loss(spread, buffer, sigma=0.5) < entropy_loss(tight, buffer, sigma=0.5)
    assert entropy_loss(spread, buffer, sigma=0.5) == pytest.approx(-0.5 * entropy_estimate(spread, reference).item())


def test_entropy_loss_is_zero_until_the_buffer_has_something():
    batch = torch.randn(4, 3, requires_grad=True)
    loss = entropy_loss(batch, ReplayBuffer(8, 3), sigma=1.0)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph: callers can add it unconditionally
    assert torch.equal(batch.grad, torch.zeros_like(batch))


def test_sigma_ramps_linearly_then_stays():
    assert [sigma_at(s, 0.2, 4) for s in (0, 2, 4, 10)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert sigma_at(0, 0.2, 0) == 0.2


def test_dlle_is_zero_when_the_augmentation_is_the_identity():
    torch.manual_seed(0)
    disc = ConvDiscriminator(image_size=16, channels=1, width=8, head="embedding", dim=4).eval()
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    assert dlle_loss(disc, x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert dlle_loss(disc, x, mild_augment(x, generator=torch.Generator().manual_seed(1))).item() > 0


def test_mild_augment_keeps_shape_and_is_identity_at_zero():
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    assert torch.allclose(mild_augment(x, max_shift=0, max_degrees=0, noise_std=0), x, atol=1e-5)
    moved = mild_augment(x, generator=torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    points = torch.randn(7, 2)
    assert mild_augment(points, noise_std=0).equal(points)


def test_disomap_is_zero_for_a_linear_discriminator():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 5))
    real, fake = torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)
    for distance in ("mse", "cosine"):
        assert disomap_loss(linear, real, fake, distance).item() == pytest.approx(0.0, abs=1e-6)
    bent = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 5), nn.Tanh(), nn.Linear(5, 5))
    assert disomap_loss(bent, real, fake, "mse").item() > 1e-6
    with pytest.raises(ValueError, match="disomap distance"):
        disomap_loss(linear, real, fake, "l1")


def test_disomap_target_is_held_fixed_as_released():
    """Gradients reach D only through D(mix), never through the mixed target a D(x_r) + (1 - a) D(x_f)."""
    torch.manual_seed(0)
    real_out, fake_out = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    mixed = torch.randn(6, 4, requires_grad=True)
    disomap_from_outputs(mixed, real_out, fake_out, torch.rand(6, 1, 1, 1)).backward()
    assert real_out.grad is None and fake_out.grad is None
    assert mixed.grad is not None and mixed.grad.abs().sum() > 0


def test_embedding_head_has_no_bias_so_spectral_norm_bounds_logvar():
    head = EmbeddingHead(32, dim=8)
    assert not any("bias" in name for name, _ in head.named_parameters())
    # One layer gives (mu, logvar); its spectral norm bounds both: with h = 0 both are exactly 0.
    head.eval()
    assert torch.equal(head(torch.zeros(3, 32)), torch.zeros(3, 8))
    head.train()
    torch.manual_seed(0)
    noisy = head(torch.zeros(2000, 32))  # logvar = 0 at h = 0: unit-variance noise, no learnable offset
    assert noisy.std().item() == pytest.approx(1.0, abs=0.05)


def test_adversarial_losses_reward_the_right_side():
    high, low = torch.full((4, 3), 2.0), torch.full((4, 3), -2.0)
    # D wants real high and fake low; G wants fake high
    for form in ("linear", "nonsaturating"):
        assert maf_d_loss(high, low, form) < maf_d_loss(low, high, form)
        assert maf_g_loss(high, form) < maf_g_loss(low, form)
    assert maf_d_loss(high, low, "linear").item() == -4.0
    assert gan_d_loss(high[:, :1], low[:, :1]) < gan_d_loss(low[:, :1], high[:, :1])
    assert gan_g_loss(high[:, :1]) < gan_g_loss(low[:, :1])
    with pytest.raises(ValueError, match="maf loss form"):
        maf_g_loss(high, "hinge")


@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (8, 3)])
def test_conv_nets_shapes_and_spectral_norm_everywhere(size, channels):
    gen = ConvGenerator(z_dim=8, image_size=size, channels=channels, width=8)
    images = gen(torch.randn(4, 8))
    assert images.shape == (4, channels, size, size) and images.abs().max() <= 1
    for head, dim in (("scalar", 1), ("embedding", 6)):
        disc = ConvDiscriminator(image_size=size, channels=channels, width=8, head=head, dim=6)
        assert disc(images).shape == (4, dim)
        weighted = [m for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert weighted and all(hasattr(m, "parametrizations") for m in weighted)
    with pytest.raises(ValueError, match="power of two"):
        ConvGenerator(image_size=12)


def test_embedding_head_is_deterministic_in_eval_only():
    disc = MLPDiscriminator(head="embedding", dim=4)
    x = torch.randn(5, 2)
    assert not torch.equal(disc(x), disc(x))
    disc.eval()
    assert torch.equal(disc(x), disc(x))


def test_one_mee_step_changes_both_networks():
    torch.manual_seed(0)
    gen, disc = MLPGenerator(z_dim=4, hidden=16), MLPDiscriminator(hidden=16, head="embedding", dim=4)
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 1e-2), torch.optim.Adam(disc.parameters(), 1e-2)
    before_g = [p.detach().clone() for p in gen.parameters()]
    before_d = [p.detach().clone() for p in disc.parameters()]
    buffer = ReplayBuffer(32, 4)
    buffer.push(torch.randn(32, 4))
    real = sample_mixture(ring_modes(), 0.05, 16)

    fake = gen(torch.randn(16, 4)).detach()
    real_emb = disc(real)
    d_loss = (maf_d_loss(real_emb, disc(fake)) + dlle_loss(disc, real, mild_augment(real))
              + disomap_loss(disc, real, fake) + entropy_loss(real_emb, buffer, 0.1))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()

    fake_emb = disc(gen(torch.randn(16, 4)))
    g_loss = maf_g_loss(fake_emb) + entropy_loss(fake_emb, buffer, 0.1)
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before_g, gen.parameters()))
    changed_d = [not torch.equal(a, b.detach()) for a, b in zip(before_d, disc.parameters())]
    assert all(changed_d)


def test_two_d_mode_counters_on_constructed_points():
    centres, std = ring_modes(8, radius=2.0), 0.05
    # 3 points on mode 0, 2 on mode 5, one far from every mode
    points = torch.cat([centres[[0, 0, 0]] + 0.01, centres[[5, 5]] - 0.02, torch.tensor([[0.0, 0.0]])])
    modes = assign_modes(points, centres, std)
    assert modes.tolist() == [0, 0, 0, 5, 5, -1]
    assert count_modes(modes, 8) == 2 and count_modes(modes, 8, min_count=3) == 1
    assert coverage(modes, 8, 1)["assigned_share"]["value"] == pytest.approx(5 / 6, abs=1e-4)
    # the true mixture covers every mode, nearly all points high quality, KL near 0
    sample = sample_mixture(grid_modes(5), std, 5000, torch.Generator().manual_seed(0))
    assigned = assign_modes(sample, grid_modes(5), std)
    assert count_modes(assigned, 25) == 25 and coverage(assigned, 25, 1)["assigned_share"]["value"] > 0.98
    assert class_histogram_kl(assigned, 25) < 0.01
    assert class_histogram_kl(torch.zeros(100, dtype=torch.long), 25) == pytest.approx(math.log(25))


def test_stacked_digits_and_triple_modes():
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 4, 4).clone()
    labels = torch.arange(10)
    stacked, triples = stack_digits(images, labels, 2000, torch.Generator().manual_seed(0))
    assert stacked.shape == (2000, 3, 4, 4)
    assert torch.equal(stacked[:, :, 0, 0].long(), triples)  # each channel is the digit its label says
    modes = triple_modes(triples)
    assert triple_modes(torch.tensor([[1, 2, 3], [9, 9, 9]])).tolist() == [123, 999]
    assert count_modes(modes, 1000) > 800  # 2,000 draws over 1,000 equally likely modes
    assert np.isclose(class_histogram_kl(torch.arange(1000), 1000), 0.0)


@pytest.mark.parametrize("arm", ["dcgan", "maf", "maf+disomap", "maf+disomap+dlle", "mee"])
def test_every_arm_trains_iteration_matched(arm):
    from embedlab.methods.gan.arms import LoopConfig, sample
    from embedlab.methods.gan.module import Run, train_runs
    from embedlab.params import TrainerParams

    centres = ring_modes(8)
    cfg = LoopConfig(steps=6, batch_size=32, buffer_size=64, sigma_ramp=2)

    def train():
        (state, history), = train_runs([Run(arm, 0, cfg)], lambda: MLPGenerator(z_dim=4, hidden=16),
                                       lambda head: MLPDiscriminator(hidden=16, head=head, dim=4),
                                       lambda n, g: sample_mixture(centres, 0.05, n, g),
                                       TrainerParams(accelerator="cpu", progress_bar=False))
        gen = MLPGenerator(z_dim=4, hidden=16)
        gen.load_state_dict(state)
        return gen.eval(), history

    gen, history = train()
    assert len(history["g_loss"]) == len(history["d_loss"]) == 6  # same number of G updates per arm
    assert all(np.isfinite(history["g_loss"])) and history["seconds"] > 0
    assert sample(gen, 10, seed=0).shape == (10, 2)
    # seeded: the same arm and seed give the same generator
    again, _ = train()
    assert torch.equal(sample(gen, 10, seed=1), sample(again, 10, seed=1))


def test_conv_generator_exports_with_a_free_batch_size():
    from torch.export import Dim, export

    gen = ConvGenerator(z_dim=4, image_size=8, channels=3, width=4).eval()
    program = export(gen, (torch.randn(4, 4),), dynamic_shapes={"z": {0: Dim.DYNAMIC}})
    z = torch.randn(5, 4)
    assert torch.allclose(program.module()(z), gen(z), atol=1e-6)

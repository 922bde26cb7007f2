"""PPAP groundwork (issue 4): schedule formulas, DDIM and guidance, LoRA, expert routing."""

import pytest
import torch
from torch import nn

from embedlab.classifiers.nets import BackboneNet
from embedlab.methods.diffusion.experts import MultiExpert, distillation_loss, expert_index, expert_range
from embedlab.methods.diffusion.lora import LoRAConv2d, LoRALinear, add_lora, trainable_parameters
from embedlab.methods.diffusion.schedule import Schedule, classifier_grad, ddim_sample, ddim_timesteps
from embedlab.methods.diffusion.unet import UNet


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_and_posterior_match_their_closed_forms(kind):
    s = Schedule(100, kind)
    assert torch.all((s.betas > 0) & (s.betas < 1))
    assert torch.allclose(s.alphabar, torch.cumprod(1 - s.betas, 0))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 4, 4, generator=g).double(), torch.randn(3, 1, 4, 4, generator=g).double()
    t = torch.tensor([0, 50, 99])
    xt = s.q_sample(x0, t, noise)
    for i, ti in enumerate(t.tolist()):
        ab = s.alphabar[ti]
        assert torch.allclose(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * noise[i])
    assert torch.allclose(s.predict_x0(xt, t, noise), x0)
    # Posterior by Bayes on the Gaussians: precision-weighted combination of the two factors
    # q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) and q(x_{t-1} | x_0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}).
    mean, var = s.posterior(x0, xt, t)
    for i, ti in enumerate(t.tolist()[1:], start=1):
        alpha, beta, abp = s.alphas[ti], s.betas[ti], s.alphabar_prev[ti]
        prec = alpha / beta + 1 / (1 - abp)
        expected_mean = (alpha.sqrt() / beta * xt[i] + abp.sqrt() / (1 - abp) * x0[i]) / prec
        assert torch.allclose(mean[i], expected_mean)
        assert torch.allclose(var[i].flatten()[0], 1 / prec)
    assert torch.allclose(mean[0], x0[0]) and var[0].abs().max() < 1e-12  # t = 0 lands on x0


def test_ddim_timesteps_span_the_schedule():
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="ddim steps 0"):
        ddim_timesteps(10, 0)


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_with_scale_zero_is_the_unguided_sampler_and_guidance_moves_samples(clip):
    torch.manual_seed(0)
    net = UNet((8, 8), attention=False).eval()
    s = Schedule(50)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    y = torch.arange(4)
    grad = classifier_grad(lambda x, t: clf(x), y)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = ddim_sample(net, s, (4, 1, 8, 8), 5, x_T=x_T, clip=clip)
    zero = ddim_sample(net, s, (4, 1, 8, 8), 5, x_T=x_T, grad_fn=grad, scale=0.0, clip=clip)
    assert torch.equal(plain, zero)
    guided = ddim_sample(net, s, (4, 1, 8, 8), 5, x_T=x_T, grad_fn=grad, scale=5.0, clip=clip)
    assert not torch.allclose(plain, guided)
    # With the exact eps of N(0, I) data (eps* = sqrt(1 - ab_t) x_t), guidance must raise the
    # requested class's log-probability of every sample.
    exact = lambda x, t: (1 - s._at(s.alphabar, t, x)).sqrt() * x  # noqa: E731
    plain = ddim_sample(exact, s, (4, 1, 8, 8), 5, x_T=x_T, clip=clip)
    guided = ddim_sample(exact, s, (4, 1, 8, 8), 5, x_T=x_T, grad_fn=grad, scale=2.0, clip=clip)
    logp = lambda x: torch.log_softmax(clf(x), -1)[torch.arange(4), y]  # noqa: E731
    assert torch.all(logp(guided) > logp(plain))


def test_a_clipped_ddim_step_stays_on_the_line_through_x_t_and_its_clamped_x0():
    from embedlab.methods.diffusion.schedule import ddim_step

    a, a_next = torch.tensor(0.3), torch.tensor(0.8)
    x, eps = torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 2, 2)  # x0 = x / sqrt(a) > 1: clamped
    x0 = ddim_step(x, eps, a, None, clip=True)
    assert torch.all(x0 == 1.0)
    out = ddim_step(x, eps, a, a_next, clip=True)
    eps_used = (x - a.sqrt() * x0) / (1 - a).sqrt()  # the eps consistent with x_t and the clamped x0
    assert torch.allclose(out, a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps_used)
    assert torch.equal(ddim_step(x, eps, a, a_next, clip=False), a_next.sqrt() * x / a.sqrt())


def test_a_small_step_along_the_guidance_gradient_raises_log_p():
    torch.manual_seed(0)
    clf = BackboneNet(width=4, feature_dim=8).eval()
    y = torch.tensor([3, 7])
    x = torch.randn(2, 1, 16, 16)
    g = classifier_grad(lambda x, t: clf(x), y)(x, torch.zeros(2, dtype=torch.long))
    logp = lambda x: torch.log_softmax(clf(x), -1)[torch.arange(2), y]  # noqa: E731
    step = 1e-2 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # a small step of fixed length
    assert torch.all(logp(x + step) > logp(x))


def test_lora_with_b_zero_leaves_outputs_identical_and_trains_only_its_parts():
    torch.manual_seed(0)
    clf = BackboneNet(width=4, feature_dim=8).eval()
    expert = add_lora(clf, rank=2, alpha=4).eval()
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(expert(x), clf(x))
    assert any(isinstance(m, LoRAConv2d) for m in expert.modules())
    assert any(isinstance(m, LoRALinear) for m in expert.modules())
    assert isinstance(expert.head, nn.Linear) and not expert.head.weight.requires_grad  # head frozen
    trainable = {n for n, p in expert.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or ("norm" in n) or n.endswith(("bias", ".1.weight")) for n in trainable)
    assert trainable_parameters(expert) < 0.5 * sum(p.numel() for p in clf.parameters())
    assert all(p.requires_grad for p in clf.parameters())  # the original is untouched
    # W' = W + (alpha / r) B A: a non-zero B changes the output by exactly that term.
    lin = next(m for m in expert.modules() if isinstance(m, LoRALinear))
    with torch.no_grad():
        lin.lora_b.normal_()
        z = torch.randn(5, lin.base.in_features)
        expected = z @ (lin.base.weight + lin.scale * lin.lora_b @ lin.lora_a).T + lin.base.bias
        assert torch.allclose(lin(z), expected, atol=1e-5)


def test_each_timestep_goes_to_the_expert_that_owns_it_at_the_boundaries():
    T, N = 1000, 5
    assert expert_index(torch.tensor([0, 199, 200, 399, 400, 799, 800, 999]), T, N).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    for i in range(N):
        lo, hi = expert_range(i, T, N)
        assert expert_index(torch.tensor([lo, hi - 1]), T, N).tolist() == [i, i]
    assert [expert_range(i, 7, 3) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert expert_index(torch.arange(7), 7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]

    class Tag(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return torch.full((len(x), 1), float(self.k))

    routed = MultiExpert([Tag(k) for k in range(N)], T)(torch.zeros(4, 1), torch.tensor([999, 0, 400, 399]))
    assert routed.flatten().tolist() == [4.0, 0.0, 2.0, 1.0]


def test_distillation_loss_is_zero_only_when_the_student_matches_the_sharpened_teacher():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    sharpened = teacher / 0.25
    assert distillation_loss(teacher, sharpened, tau=0.25).abs() < 1e-6
    assert distillation_loss(teacher, teacher, tau=0.25) > 0.1


def test_the_distillation_set_is_images_only_and_the_expert_step_takes_no_labels():
    from embedlab.methods.diffusion.experts import expert_module
    from embedlab.methods.diffusion.method import kd_images
    from embedlab.params import Params

    params = Params(diffusion={"ddpm": {"timesteps": 50, "channels": [8, 8]}, "ddim_steps": 2})
    torch.manual_seed(0)
    kd = kd_images(UNet((8, 8), attention=False), params, 6, seed=0, image_size=8)
    assert isinstance(kd, tuple) and len(kd) == 1 and kd[0].shape == (6, 1, 8, 8)  # no label tensor
    assert kd[0].dtype == torch.float32 and kd[0].abs().max() <= 1
    from embedlab.methods.diffusion.experts import teacher_logits

    clf = BackboneNet(width=4, feature_dim=8, image_size=8).eval()
    expert = add_lora(clf, 2, 4)
    module = expert_module(expert, Schedule(50), (10, 20), lr=1e-3, tau=0.25)
    targets = teacher_logits(clf.train(), kd[0])  # read in eval mode whatever the caller left
    assert not clf.training and torch.allclose(targets, clf(kd[0]))
    torch.manual_seed(3)
    loss = module.training_step((kd[0], targets), 0)  # the images and the teacher's logits: no label
    # the table gives exactly the loss of the classifier reading the batch in the step
    torch.manual_seed(3)
    t = torch.randint(10, 20, (6,))
    xt = Schedule(50).q_sample(kd[0], t, torch.randn_like(kd[0]))
    assert torch.allclose(loss, distillation_loss(clf(kd[0]), expert(xt), 0.25))
    with pytest.raises(ValueError, match="labels have no place"):
        module.training_step((kd[0], torch.zeros(6, dtype=torch.long)), 0)  # a labelled batch is refused


def test_a_lora_conv_is_its_base_plus_the_rank_r_branch_and_trains_a_and_b():
    import torch.nn.functional as F

    torch.manual_seed(0)
    base = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    layer = LoRAConv2d(base, rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 3, 9, 9)
    two_branch = base(x) + layer.scale * F.conv2d(F.conv2d(x, layer.lora_a, None, 2, 1), layer.lora_b)
    assert torch.allclose(layer(x), two_branch, atol=1e-5)  # one conv of the merged weight
    layer(x).square().sum().backward()
    assert layer.lora_a.grad.abs().sum() > 0 and layer.lora_b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="groups"):
        LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2), rank=2, alpha=4.0)


def test_min_snr_weights_count_low_noise_steps_less():
    from embedlab.methods.diffusion.models import min_snr_weight

    s = Schedule(1000)
    t = torch.tensor([0, 100, 500, 999])
    w = min_snr_weight(s, t, gamma=5.0)
    snr = s.alphabar[t] / (1 - s.alphabar[t])
    assert torch.allclose(w.double(), torch.where(snr > 5, 5 / snr, torch.ones_like(snr)), atol=1e-6)
    assert w[0] < w[1] <= 1 and w[-1] == 1  # the noisiest steps keep weight 1
    assert torch.equal(min_snr_weight(s, t, gamma=0.0), torch.ones(4))

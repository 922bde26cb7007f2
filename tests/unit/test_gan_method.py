"""The gan method's plumbing (issue 5): jobs, sigma choice, mode reading, generators on disk."""

import json

import numpy as np
import torch
from torch import nn

from embedlab.io import save_weights
from embedlab.methods.gan.method import (
    Job,
    choose_sigma,
    gen_config,
    load_generator,
    loop_config,
    planned_jobs,
    real_sampler,
    restore_generator,
    run_job,
    selection_jobs,
    stacked_mode_count,
    stacked_modes,
)
from embedlab.params import Params, parse_params

# Ten grey levels, one per class: a channel filled with LEVELS[c] reads as class c.
LEVELS = torch.linspace(-0.9, 0.9, 10)


class LevelClassifier(nn.Module):
    """Classifies an image by its mean intensity: the nearest of LEVELS."""

    num_features = 1

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # predict() reads the device from a parameter
        self.head = lambda f: -(f - LEVELS) ** 2
        self.head.out_features = 10

    def features(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) + self.anchor


class TripleGenerator(nn.Module):
    """Always the same stacked sample: channels of classes (1, 2, 3)."""

    z_dim = 4

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, z):
        levels = LEVELS[torch.tensor([1, 2, 3])].view(1, 3, 1, 1)
        return levels.expand(len(z), 3, 16, 16) + self.anchor


def test_planned_jobs_cover_every_benchmark_with_distinct_files():
    params = Params()
    jobs = planned_jobs(params, sigma=0.1)
    g = params.gan
    expected = (2 * len(g.toy.arms) * len(g.toy.seeds) + len(g.image.arms) * len(g.image.seeds)
                + len(g.image.compare_arms) * (len(g.image.full_seeds) + len(g.image.seeds)))
    assert len(jobs) == expected == 77
    assert len({j.weights for j in jobs}) == len(jobs)  # one file per job, flat names
    assert {j.bench for j in jobs} == {"ring", "grid", "stacked_weak", "stacked_full", "digits"}
    assert {j.arm for j in jobs if j.bench == "digits"} == {"dcgan", "maf", "mee"}


def test_the_sigma_sweep_runs_mee_on_held_out_seeds_per_choosing_benchmark():
    params = Params()
    jobs = selection_jobs(params)
    assert {j.arm for j in jobs} == {"mee"} and all(j.selection for j in jobs)
    assert {(j.bench, j.sigma) for j in jobs} == {(b, s) for b in ("ring", "grid", "stacked_weak")
                                                  for s in params.gan.loss.sigma_sweep}
    reported = set(params.gan.toy.seeds) | set(params.gan.image.seeds) | set(params.gan.image.full_seeds)
    assert not {j.seed for j in jobs} & reported
    assert len({j.key for j in jobs}) == len(jobs)


def test_choose_sigma_prefers_modes_then_lower_kl_then_smaller_sigma():
    assert choose_sigma({0.03: {"modes": 700, "mode_kl": 0.5}, 0.1: {"modes": 720, "mode_kl": 0.9}}) == 0.1
    assert choose_sigma({0.03: {"modes": 700, "mode_kl": 0.5}, 0.1: {"modes": 700, "mode_kl": 0.4}}) == 0.1
    assert choose_sigma({0.3: {"modes": 700, "mode_kl": 0.4}, 0.1: {"modes": 700, "mode_kl": 0.4}}) == 0.1


def test_stacked_modes_reads_each_channel_in_order():
    modes = stacked_modes(TripleGenerator(), LevelClassifier(), n=7, seed=0)
    assert modes.tolist() == [123] * 7  # channel 0 is the hundreds, channel 2 the units
    assert stacked_mode_count(LevelClassifier()) == 1000  # K^3 for K = 10 classes


def test_real_batches_per_benchmark():
    params = Params()
    images = torch.rand(50, 1, 16, 16) * 2 - 1
    labels = torch.arange(50) % 10
    gen = torch.Generator().manual_seed(0)
    ring = real_sampler(params, "ring", images, labels)(200, gen)
    radius = ring.norm(dim=1)
    assert ring.shape == (200, 2) and (radius - params.gan.toy.ring_radius).abs().max() < 6 * params.gan.toy.ring_std
    stacked = real_sampler(params, "stacked_weak", images, labels)(8, gen)
    assert stacked.shape == (8, 3, 16, 16)
    # every channel of a stacked sample is one of the real digits
    flat = images.flatten(1)
    assert all((flat == c.flatten()).all(1).any() for c in stacked.reshape(-1, 1, 16, 16))
    assert real_sampler(params, "digits", images, labels)(5, gen).shape == (5, 1, 16, 16)


def test_loop_config_takes_the_benchmark_settings_and_ramps_sigma_over_a_share_of_steps():
    params = parse_params({"gan": {"toy": {"steps": 400}, "image": {"steps": 100, "weak_disc_width": 2},
                                   "loss": {"sigma_ramp": 0.5}}})
    toy, image = loop_config(params, "ring", 0.2), loop_config(params, "stacked_weak", 0.2)
    assert (toy.steps, toy.sigma_ramp, toy.sigma) == (400, 200, 0.2)
    assert (image.steps, image.sigma_ramp) == (100, 50)
    assert image.aug_shift == params.gan.image.aug_shift and toy.aug_noise == params.gan.toy.aug_noise


def test_a_job_trains_a_generator_that_loads_back_from_a_flat_folder(tmp_path):
    params = parse_params({"gan": {"image": {"steps": 2, "batch_size": 8, "gen_width": 4, "weak_disc_width": 2},
                                   "loss": {"buffer_size": 16}}})
    images, labels = torch.rand(20, 1, 16, 16) * 2 - 1, torch.arange(20) % 10
    job = Job("stacked_weak", "mee", 0, sigma=0.1)
    state, history = run_job(job, params, images, labels)
    assert len(history["g_loss"]) == 1 and history["seconds"] > 0  # curves keep every 10th step
    config = gen_config(params, "stacked_weak", 16)
    gen = restore_generator(params, "stacked_weak", 16, state)
    # A registry bundle downloads files side by side: config.json + the generator's file.
    (tmp_path / "config.json").write_text(json.dumps({"generators": {"stacked_weak": config}}))
    save_weights(gen, tmp_path / job.weights.split("/")[-1])
    loaded = load_generator(tmp_path, "stacked_weak", "mee", 0)
    z = torch.randn(3, config["z_dim"])
    assert torch.equal(loaded(z), gen(z)) and not gen.training
    # the same job again gives the same generator (seeded)
    again, _ = run_job(job, params, images, labels)
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_missing_generator_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"generators": {"digits": gen_config(Params(), "digits", 16)}}))
    try:
        load_generator(tmp_path, "digits", "mee", 4)
    except FileNotFoundError as exc:
        assert "digits-mee-seed4.safetensors" in str(exc) and "train@gan" in str(exc)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_save_grid_writes_rgb_for_three_channels(tmp_path):
    from PIL import Image

    from embedlab.evaluation.grids import save_grid

    images = -np.ones((4, 3, 8, 8), np.float32)
    images[:, 0] = 1.0  # red channel on
    path = save_grid(images, tmp_path / "rgb.png", per_row=2, scale=1)
    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[2] == 3
    assert tuple(img[1, 1]) == (255, 0, 0)

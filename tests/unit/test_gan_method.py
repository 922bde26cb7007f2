"""The gan method's plumbing (issue 5): jobs, sigma choice, mode reading, generators on disk."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from embedlab.io import save_weights
from embedlab.methods.gan.method import choose_value, planned_jobs, run_job, selection_jobs
from embedlab.methods.gan.modes import score_stacked, stacked_mode_count, stacked_readings
from embedlab.methods.gan.parts import (
    Job,
    gen_config,
    load_generator,
    loop_config,
    real_sampler,
    restore_generator,
)
from embedlab.methods.gan.scoring import published_seed
from embedlab.params import Params, ParamsError, parse_params

# Ten grey levels, one per class: a channel filled with LEVELS[c] reads as class c.
LEVELS = torch.linspace(-0.9, 0.9, 10)


class LevelClassifier(nn.Module):
    """Classifies an image by its mean intensity: the nearest of LEVELS."""

    num_features = 1

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # predict() reads the device from a parameter
        self.head = lambda f: -1000 * (f - LEVELS) ** 2  # sharp: a level's reading is confident
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


def test_planned_jobs_cover_every_benchmark_with_distinct_files_and_take_the_tuned_values():
    import yaml

    paper = yaml.safe_load((Path(__file__).resolve().parents[2] / "params" / "paper.yaml").read_text())["gan"]
    params = parse_params({"gan": paper})  # the paper preset
    jobs = planned_jobs(params)
    g = params.gan
    expected = (2 * len(g.toy.arms) * len(g.toy.seeds) + len(g.image.arms) * len(g.image.seeds)
                + len(g.image.compare_arms) * (len(g.image.full_seeds) + len(g.image.seeds)))
    assert len(jobs) == expected == 77
    assert len({j.weights for j in jobs}) == len(jobs)  # one file per job, flat names
    assert {j.bench for j in jobs} == {"ring", "grid", "stacked_weak", "stacked_full", "digits"}
    assert {j.arm for j in jobs if j.bench == "digits"} == {"dcgan", "maf", "mee"}
    chosen = {("stacked_weak", "mee"): 0.3, ("ring", "mee"): 0.03}
    tuned = planned_jobs(params, chosen)
    # stacked_full and digits take stacked_weak's choice; an arm without a choice keeps None
    assert {j.value for j in tuned if j.arm == "mee" and j.bench in IMAGE_BENCHES} == {0.3}
    assert {j.value for j in tuned if j.arm == "mee" and j.bench == "ring"} == {0.03}
    assert {j.value for j in tuned if j.arm == "mee" and j.bench == "grid"} == {None}


IMAGE_BENCHES = ("stacked_weak", "stacked_full", "digits")


def test_tuning_gives_every_arm_the_same_budget_on_held_out_seeds():
    params = parse_params({"gan": {"image": {"stacked": True}, "toy": {"run": True}}})
    jobs = selection_jobs(params)
    assert all(j.selection for j in jobs) and len({j.key for j in jobs}) == len(jobs)
    per_arm = {}
    for j in jobs:
        per_arm.setdefault((j.bench, j.arm), []).append(j.value)
    assert {b for b, _ in per_arm} == {"ring", "grid", "stacked_weak"}
    assert len({len(v) for v in per_arm.values()}) == 1  # the same number of configurations each
    assert per_arm[("stacked_weak", "mee")] == params.gan.tuning.mee.values and max(params.gan.tuning.mee.values) >= 1.0
    reported = set(params.gan.toy.seeds) | set(params.gan.image.seeds) | set(params.gan.image.full_seeds)
    assert not {j.seed for j in jobs} & reported
    with pytest.raises(ParamsError, match="same number of tuning values"):
        parse_params({"gan": {"tuning": {"dcgan": {"key": "lr_scale", "values": [1.0, 2.0]}}}})


def test_choose_value_prefers_modes_then_lower_kl_then_smaller_value():
    assert choose_value({0.03: {"modes_covered": 700, "mode_kl": 0.5}, 0.1: {"modes_covered": 720, "mode_kl": 0.9}}) == 0.1
    assert choose_value({0.03: {"modes_covered": 700, "mode_kl": 0.5}, 0.1: {"modes_covered": 700, "mode_kl": 0.4}}) == 0.1
    assert choose_value({0.3: {"modes_covered": 700, "mode_kl": 0.4}, 0.1: {"modes_covered": 700, "mode_kl": 0.4}}) == 0.1


def test_stacked_readings_read_each_channel_in_order_and_only_when_confident():
    from embedlab.methods.gan.arms import sample

    images = sample(TripleGenerator(), 7, seed=0)
    share, modes = stacked_readings(images, LevelClassifier(), threshold=0.9)
    assert modes.tolist() == [123] * 7 and share["value"] == 1.0  # channel 0 is the hundreds, channel 2 the units
    assert stacked_mode_count(LevelClassifier()) == 1000  # K^3 for K = 10 classes
    blurred = images.clone()
    blurred[:3, 1] = (LEVELS[2] + LEVELS[3]) / 2  # halfway between two classes: no confident reading
    share, modes = stacked_readings(blurred, LevelClassifier(), threshold=0.9)
    assert modes.tolist() == [-1] * 3 + [123] * 4 and share["value"] == pytest.approx(18 / 21, abs=1e-4)
    scores = score_stacked(blurred, LevelClassifier(), 0.9, min_count=5)
    assert scores["modes_covered"] == 0 and scores["modes_any"] == 1  # 4 samples do not make a mode at 5


def test_published_seed_is_the_backbones_choice():
    config = {"backbone_reads": {"per_seed": {"0": {"modes_covered": 10, "mode_kl": 1.0},
                                              "1": {"modes_covered": 12, "mode_kl": 2.0},
                                              "2": {"modes_covered": 12, "mode_kl": 1.5}}}}
    assert published_seed(config) == 2


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


def test_loop_config_takes_the_benchmark_settings_and_the_arms_tuned_value():
    params = parse_params({"gan": {"toy": {"steps": 400}, "image": {"steps": 100, "weak_disc_width": 2},
                                   "loss": {"sigma_ramp": 0.5}}})
    toy, image = loop_config(params, "ring", "mee", 0.2), loop_config(params, "stacked_weak")
    assert (toy.steps, toy.sigma_ramp, toy.sigma) == (400, 200, 0.2)
    assert (image.steps, image.sigma_ramp, image.sigma) == (100, 50, params.gan.loss.sigma)
    assert image.aug_shift == params.gan.image.aug_shift and toy.aug_noise == params.gan.toy.aug_noise
    assert loop_config(params, "ring", "dcgan", 2.0).lr == pytest.approx(2 * params.gan.toy.lr)  # lr_scale
    assert loop_config(params, "ring", "maf+disomap+dlle", 0.3).lambda_dlle == 0.3


def test_a_job_trains_a_generator_that_loads_back_from_a_flat_folder(tmp_path):
    params = parse_params({"gan": {"image": {"steps": 2, "batch_size": 8, "gen_width": 4, "weak_disc_width": 2},
                                   "loss": {"buffer_size": 16}}})
    images, labels = torch.rand(20, 1, 16, 16) * 2 - 1, torch.arange(20) % 10
    job = Job("stacked_weak", "mee", 0, value=0.1)
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


@pytest.mark.parametrize("size", [8, 16, 32])
def test_plain_images_in_colour_train_a_colour_generator_at_each_size(size):
    """Issue 31: plain digits are the prepared images as they are; a colour batch in, a colour
    sample out (stacked digits stay three grey digits)."""
    from embedlab.methods.gan.arms import sample

    params = parse_params({"gan": {"image": {"steps": 2, "batch_size": 8, "gen_width": 4, "disc_width": 4},
                                   "loss": {"buffer_size": 16}}})
    images, labels = torch.rand(20, 3, size, size) * 2 - 1, torch.arange(20) % 10
    state, _ = run_job(Job("digits", "mee", 0), params, images, labels)
    assert gen_config(params, "digits", size, 3)["channels"] == 3
    assert gen_config(params, "stacked_weak", size, 3)["channels"] == 3
    assert gen_config(params, "digits", size)["channels"] == 1  # grey data: the configs as before
    out = sample(restore_generator(params, "digits", size, state, channels=3), 5, 0)
    assert out.shape == (5, 3, size, size) and torch.isfinite(out).all()
    assert (out[:, 0] - out[:, 1]).abs().max() > 0  # the channels are not one grey copied three times


def test_stacked_digits_refuse_colour_data_naming_the_keys():
    from embedlab.methods.gan.parts import check_stacked

    stacked = parse_params({"gan": {"image": {"stacked": True}}})
    check_stacked(stacked, 1)
    check_stacked(Params(), 3)  # the default (stacked: false) takes colour
    with pytest.raises(ParamsError, match=r"gan.image.stacked: true .* 3 channels.*data.channels: 1"):
        check_stacked(stacked, 3)

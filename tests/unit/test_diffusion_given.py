"""The given DDPM (pretrain@ddpm) on tiny settings: trained once into models/ddpm, then read, never
retrained, by train@diffusion, whose experts distil from its samples."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from embedlab.params import Params, TrainerParams
from embedlab.paths import Paths

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "seeds": [0, 1], "workers": 1, "ddim_steps": 2, "scales": [1.0], "sweep_per_class": 1, "samples_per_class": 1,
    "ddpm": {"timesteps": 20, "channels": [4, 4], "attention": False, "steps": 3, "batch_size": 8},
    "ppap": {"experts": 2, "steps": 2, "kd_samples": 4, "batch_size": 4},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_prepared):
    from embedlab.data.prepare import write_prepared
    from embedlab.methods.diffusion import given, method

    paths = Paths(tmp_path_factory.mktemp("diffusion"))
    write_prepared(digits_prepared, paths.prepared)
    shutil.copytree(REPO / "models" / "backbone", paths.model_dir("backbone"))
    params = Params(trainer=TrainerParams(progress_bar=False), diffusion=TINY)
    given.train(params, paths)
    method.train(params, paths)
    return params, paths


def test_the_given_ddpm_is_written_once_with_what_rebuilds_it(trained):
    from embedlab.io import load_tensors
    from embedlab.methods.diffusion.given import load_ddpm

    params, paths = trained
    folder = paths.model_dir("ddpm")
    assert folder == paths.root / "models" / "ddpm"
    assert {f.name for f in folder.iterdir()} == {"ddpm_uncond.safetensors", "config.json", "train.json"}
    config = json.loads((folder / "config.json").read_text())
    assert config["channels"] == [4, 4] and config["timesteps"] == 20 and config["image_size"] == 16
    assert len(config["data_sha256"]) == 64
    assert json.loads((folder / "train.json").read_text()).keys() >= {"wall_seconds", "steps", "seed"}
    unet, d = load_ddpm(folder)  # rebuilt from config.json alone, no params
    assert d == params.diffusion.ddpm
    saved = load_tensors(folder / "ddpm_uncond.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in unet.state_dict().items())
    assert unet(torch.zeros(2, 1, 16, 16), torch.tensor([0, 19])).shape == (2, 1, 16, 16)


def test_train_at_diffusion_reads_the_given_ddpm_and_trains_none(trained):
    params, paths = trained
    info = json.loads((paths.model_dir("diffusion") / "train.json").read_text())
    assert not any("ddpm" in key for key in info["seconds"])  # no DDPM timing: none was trained
    assert {"seed0/kd_sampling", "seed0/expert_0", "seed0/supervised_1"} <= info["seconds"].keys()
    seed0 = paths.model_dir("diffusion") / "seed0"
    assert {f.name for f in seed0.iterdir()} == {"experts.safetensors", "supervised.safetensors"}


def test_the_experts_distil_from_models_ddpm(trained):
    from embedlab.io import load_tensors, save_tensors
    from embedlab.methods.diffusion.given import build_unet
    from embedlab.methods.diffusion.method import train_experts

    params, paths = trained
    seed0, weights = paths.model_dir("diffusion") / "seed0", paths.model_dir("ddpm") / "ddpm_uncond.safetensors"
    joined = load_tensors(seed0 / "experts.safetensors")[0]
    train_experts(params, paths, 0, [0])  # again, on the same given DDPM: the same expert
    again = load_tensors(seed0 / "expert_0.safetensors")
    assert all(torch.equal(v, joined[k]) for k, v in again.items())
    original = load_tensors(weights)
    try:
        torch.manual_seed(1)
        save_tensors(build_unet(params.diffusion.ddpm).state_dict(), weights)  # another given DDPM
        train_experts(params, paths, 0, [0])
        other = load_tensors(seed0 / "expert_0.safetensors")
        assert not all(torch.equal(v, joined[k]) for k, v in other.items())  # another distillation set
    finally:
        save_tensors(original, weights)
        (seed0 / "expert_0.safetensors").unlink(missing_ok=True)


def test_a_stale_given_ddpm_is_refused(trained):
    from embedlab.methods.diffusion.given import check_current

    params, paths = trained
    check_current(params, paths)
    changed = Params(trainer=params.trainer, diffusion={**TINY, "ddpm": {**TINY["ddpm"], "steps": 4}})
    with pytest.raises(ValueError, match="steps.*pretrain ddpm"):
        check_current(changed, paths)
    # train@diffusion refuses it as bad params (the CLI's clear exit 2), before any work
    from embedlab.methods.diffusion import method
    from embedlab.params import ParamsError

    before = sorted(p.name for p in paths.model_dir("diffusion").rglob("*"))
    with pytest.raises(ParamsError, match="stale.*pretrain ddpm"):
        method.train(changed, paths)
    assert sorted(p.name for p in paths.model_dir("diffusion").rglob("*")) == before  # nothing written


def test_the_exported_bundle_carries_the_given_ddpm(trained, tmp_path):
    from embedlab.classifiers.nets import load_classifier
    from embedlab.io import save_tensors
    from embedlab.methods.diffusion import method
    from embedlab.methods.diffusion.parts import Parts

    params, paths = trained
    shutil.copytree(REPO / "models" / "evaluator", paths.model_dir("evaluator"), dirs_exist_ok=True)
    params = Params(trainer=params.trainer, diffusion=TINY, evaluation={"samples": 10, "bootstrap": 5})
    metrics = method.evaluate(params, paths, load_classifier(paths.model_dir("evaluator")))
    assert metrics["ddpm"]["weights"] == "models/ddpm/ddpm_uncond.safetensors"
    bundle = method.export(params, paths)
    folder = tmp_path / "bundle"  # what registry.download_bundle hands back: artifacts and files, flat
    folder.mkdir()
    for artifact in bundle.artifacts:
        shutil.copy(artifact, folder)
    for name, content in bundle.files.items():
        if name.endswith(".json"):
            (folder / name).write_text(json.dumps(content))
        else:
            save_tensors(content, folder / name)
    assert (folder / "ddpm_uncond.safetensors").exists()
    parts, stage = method.load_bundle(folder), Parts.from_stage(params, paths, 0)
    labels = torch.arange(2)
    assert torch.equal(parts.sample("unguided", labels, 0.0, 3), stage.sample("unguided", labels, 0.0, 3))


@pytest.mark.parametrize("size", [8, 16, 32])
def test_a_colour_ddpm_trains_and_samples_in_colour_at_each_size(size, tmp_path):
    """Issue 31: the given DDPM takes the images' channels (its config records them for colour
    only); a colour batch in, a colour sample out."""
    from embedlab.io import save_tensors
    from embedlab.methods.diffusion.given import ddpm_from, fit_ddpm, schedule_of
    from embedlab.methods.diffusion.schedule import ddim_sample

    params = Params(trainer=TrainerParams(progress_bar=False), diffusion=TINY)
    d = params.diffusion.ddpm
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3, size, size, generator=gen) * 2 - 1, torch.arange(16) % 10
    save_tensors(fit_ddpm(params, d, x, y, 0, "colour"), tmp_path / "ddpm.safetensors")
    unet, _ = ddpm_from({**d.model_dump(), "image_channels": 3}, tmp_path / "ddpm.safetensors")
    out = ddim_sample(unet, schedule_of(d), (4, 3, size, size), 2, generator=torch.Generator().manual_seed(0), clip=True)
    assert out.shape == (4, 3, size, size) and torch.isfinite(out).all()
    assert (out[:, 0] - out[:, 1]).abs().max() > 0  # three channels, not one grey copied
    with pytest.raises(RuntimeError):  # a config without image_channels is a grey DDPM: colour weights do not fit
        ddpm_from(d.model_dump(), tmp_path / "ddpm.safetensors")

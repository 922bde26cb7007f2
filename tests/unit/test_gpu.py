"""The GPU path (issue 16): every method trains and evaluates with its data and model on a CUDA
device, in the precision the Trainer factory picks there (bf16-mixed). Skipped where no CUDA
device is visible; `benchmarks/gpu_check.sh` runs them on a lent H200."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import RunIf

pytestmark = [pytest.mark.gpu, RunIf(gpu=True)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    """A scratch root with prepared data, partitions, the committed reference weights and the given
    DDPM (trained here, on the tiny params), and the integration tests' tiny params on
    `trainer.accelerator: gpu`."""
    import yaml

    from embedlab.catalogue import get_model
    from embedlab.data.partition import run_partition
    from embedlab.data.prepare import read_prepared, run_prepare
    from embedlab.methods.diffusion import given
    from embedlab.params import parse_params
    from embedlab.paths import Paths
    from tests.integration.conftest import TINY, merge

    root = tmp_path_factory.mktemp("gpu")
    raw = merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                {k: v for k, v in TINY.items() if k not in ("evaluator", "backbone")})
    raw["trainer"].update(accelerator="gpu", precision="auto")
    params, paths = parse_params(raw), Paths(root)
    for ref in ("evaluator", "backbone"):
        shutil.copytree(REPO / "models" / ref, paths.model_dir(ref))
    run_prepare(params.data, paths.prepared, root=root)
    run_partition(read_prepared(paths.prepared), params.partition, paths.partitions, paths.partition_report)
    get_model("backbone").evaluate(params, paths, None)  # metrics/backbone.json: federated reads it
    given.train(params, paths)  # models/ddpm: the given DDPM diffusion guides (its own stage)
    return params, paths


def test_the_trainer_factory_puts_a_model_on_the_gpu_in_bf16():
    from embedlab.params import TrainerParams
    from embedlab.training import make_trainer

    trainer, device = make_trainer(TrainerParams(accelerator="gpu", progress_bar=False), name="t", max_epochs=1,
                                   seed=0, monitor=None)
    assert device.type == "cuda" and trainer.precision == "bf16-mixed"


def test_a_gan_stack_trains_on_the_gpu_in_bf16_and_samples_there():
    from embedlab.methods.gan.arms import ARMS, LoopConfig, sample
    from embedlab.methods.gan.modes import stack_digits
    from embedlab.methods.gan.module import GanStack, Run
    from embedlab.methods.gan.nets import ConvDiscriminator, ConvGenerator
    from embedlab.params import TrainerParams
    from embedlab.training import make_trainer

    images, labels = (torch.rand(40, 1, 8, 8) * 2 - 1).cuda(), (torch.arange(40) % 10).cuda()
    cfg = LoopConfig(steps=4, batch_size=8, buffer_size=16, sigma_ramp=2)
    module = GanStack([Run(arm, 0, cfg) for arm in ARMS], lambda: ConvGenerator(4, 8, 3, 4),
                      lambda head: ConvDiscriminator(8, 3, 4, head, 4), lambda n, g: stack_digits(images, labels, n, g)[0])
    trainer, _ = make_trainer(TrainerParams(accelerator="gpu", progress_bar=False), name="gan", max_epochs=1, seed=0, monitor=None)
    trainer.fit(module, train_dataloaders=range(cfg.steps))
    assert trainer.precision == "bf16-mixed" and module.device.type == "cuda"
    assert next(module.gen.parameters()).is_cuda and module.buffer_real.is_cuda
    assert torch.isfinite(module.history()).all() and module.history().shape == (len(ARMS), cfg.steps, 2)
    gen = ConvGenerator(4, 8, 3, 4)
    gen.load_state_dict(module.gen.plain_state(0))
    assert sample(gen.cuda().eval(), 16, seed=0).shape == (16, 3, 8, 8)


@pytest.mark.parametrize("name", ["vq", "gan", "federated", "diffusion"])
def test_a_method_trains_and_evaluates_with_its_work_on_the_gpu(gpu_setup, name):
    import json

    from embedlab.catalogue import get_model
    from embedlab.classifiers.nets import load_classifier

    params, paths = gpu_setup
    model = get_model(name)
    torch.cuda.reset_peak_memory_stats()
    model.train(params, paths)
    assert torch.cuda.max_memory_allocated() > 0, f"train@{name} put nothing on the GPU"
    torch.cuda.reset_peak_memory_stats()
    evaluator = load_classifier(paths.model_dir("evaluator")) if model.needs_evaluator else None
    metrics = model.evaluate(params, paths, evaluator)
    assert torch.cuda.max_memory_allocated() > 0, f"evaluate@{name} sampled nothing on the GPU"
    assert json.loads(paths.metrics(name).read_text()).keys() == metrics.keys()

"""Image sizes (issue 31): 8, 16, 32 and 64, grey or colour, run through every model's networks;
a size a network cannot take stops its stage before any work, naming data.image_size."""

import json
import subprocess
import sys

import numpy as np
import pytest

from embedlab.params import Params, ParamsError
from embedlab.sizes import check_image_size

MODELS = ("gan", "federated", "vq", "tokenizer", "diffusion", "ddpm")


def prepared(folder, size: int, channels: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"image_size": size, "num_classes": 10}))
    np.save(folder / "images.npy", np.zeros((2, channels, size, size), np.float32))
    return folder


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_takes_the_supported_sizes(tmp_path, size, channels):
    folder = prepared(tmp_path / "prepared", size, channels)
    for name in MODELS:
        check_image_size(name, Params(), folder)


@pytest.mark.parametrize(("name", "size", "why"), [("gan", 12, "power of two"), ("gan", 24, "power of two"),
                                                   ("federated", 10, "divisible by 4"), ("vq", 10, ""),
                                                   ("tokenizer", 18, "")])
def test_a_size_a_network_cannot_take_names_the_key(tmp_path, name, size, why):
    folder = prepared(tmp_path / "prepared", size)
    with pytest.raises(ParamsError, match=rf"data.image_size: {size}: {name}'s networks cannot take .*{why}"):
        check_image_size(name, Params(), folder)
    check_image_size("diffusion", Params(), folder)  # the UNet takes any size


def test_the_stage_refuses_before_any_work(tmp_path):
    prepared(tmp_path / "data" / "prepared", 12)
    out = subprocess.run([sys.executable, "-m", "embedlab.cli", "train", "gan", "--root", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "data.image_size: 12" in out.stderr and "power of two" in out.stderr
    assert not (tmp_path / "models").exists()


def test_bytecode_caches_never_change_a_stage_dependency():
    """Without PYTHONDONTWRITEBYTECODE (Python's default) importing the package writes
    __pycache__/ beside the sources; DVC must not count them in the src/ folders stages depend
    on, or every run would leave its own stages stale (seen this session)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([str(Path(sys.executable).parent / "dvc"), "check-ignore", "-d",
                          "src/embedlab/methods/gan/__pycache__/method.cpython-311.pyc"],
                         cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0 and "__pycache__" in out.stdout, (out.stdout, out.stderr)

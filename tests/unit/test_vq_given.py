"""The given tokenizer (`embedlab pretrain tokenizer`): trained once on tiny settings into
models/tokenizer/, which holds only the small files git commits, and loads without params."""

import json

import pytest
import torch

from embedlab.params import Params, TrainerParams
from embedlab.paths import Paths
from tests.unit.test_vq_method import TINY


def test_train_writes_a_tokenizer_that_loads_without_params(tmp_path, digits_prepared):
    from embedlab.data.prepare import write_prepared
    from embedlab.methods.vq import given

    paths = Paths(tmp_path)
    write_prepared(digits_prepared, paths.prepared)
    given.train(Params(trainer=TrainerParams(progress_bar=False), vq=TINY), paths)
    folder = paths.model_dir(given.name)
    assert folder == tmp_path / "models" / "tokenizer"
    # No checkpoint folder: the committed folder holds the weights, config and training record.
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "tokenizer.safetensors", "train.json"]
    record = json.loads((folder / "train.json").read_text())
    assert record["seed"] == 0 and record["epochs"] == 1 and record["best_val_psnr"] > 0 and record["wall_seconds"] > 0
    tokenizer, config = given.load_tokenizer(folder)
    assert config["num_quantizers"] == 2 and config["image_size"] == 16
    assert not any(p.requires_grad for p in tokenizer.parameters()) and not tokenizer.training
    x = torch.as_tensor(digits_prepared.split("test")[0][:3])
    assert tokenizer.tokenize(x).shape == (3, 16, 2) and tokenizer.decode_indices(tokenizer.tokenize(x)).shape == x.shape
    with pytest.raises(FileNotFoundError, match="pretrain tokenizer"):
        given.load_tokenizer(tmp_path / "nowhere")


class _Labels:
    """Stands where the labels would be: any use of it fails the test."""

    def _read(self, *args, **kwargs):
        raise AssertionError("the tokenizer's training read a label")

    __getitem__ = __len__ = __iter__ = __array__ = __getattr__ = _read


def test_the_tokenizer_trains_without_ever_reading_a_label(tmp_path, digits_prepared):
    """Federated label skew classifies the tokenizer's embeddings because no label shaped them:
    its training gets the labels as an object that fails on any use, and finishes."""
    from embedlab.methods.vq.given import fit, tokenizer_config

    params = Params(trainer=TrainerParams(progress_bar=False), vq=TINY)
    images = {s: torch.from_numpy(digits_prepared.split(s)[0]) for s in ("train", "val")}
    split = {s: (x, _Labels()) for s, x in images.items()}
    config = tokenizer_config(TINY.tokenizer, images["train"].shape[-1])
    tokenizer, epochs, best = fit(params, Paths(tmp_path), config, split, tmp_path / "ckpt")
    assert epochs == 1 and best is not None
    with pytest.raises(AssertionError, match="read a label"):  # the stand-in does catch a read
        len(split["train"][1])


def test_a_colour_source_trains_a_colour_tokenizer(tmp_path, digits_prepared):
    """Issue 31: the tokenizer takes the prepared images' channels (its config records them for
    colour only); colour images in, colour reconstructions out, and the federated heads' embedder
    (this tokenizer's encoder) reads them."""
    import dataclasses

    import numpy as np

    from embedlab.data.prepare import write_prepared
    from embedlab.embedders import build_embedding
    from embedlab.methods.vq import given

    rng = np.random.default_rng(0)
    tint = rng.uniform(0.6, 1.0, (1, 3, 1, 1)).astype(np.float32)  # three channels that differ
    colour = dataclasses.replace(digits_prepared, images=np.clip(np.repeat(digits_prepared.images, 3, 1) * tint, -1, 1))
    paths = Paths(tmp_path)
    write_prepared(colour, paths.prepared)
    given.train(Params(trainer=TrainerParams(progress_bar=False), vq=TINY), paths)
    tokenizer, config = given.load_tokenizer(paths.model_dir(given.name))
    assert config["channels"] == 3
    x = torch.as_tensor(colour.split("test")[0][:3])
    assert tokenizer.decode_indices(tokenizer.tokenize(x)).shape == x.shape == (3, 3, 16, 16)
    folder = paths.model_dir(given.name)
    assert build_embedding("vq", config, folder / "tokenizer.safetensors")(x).shape[0] == 3


@pytest.mark.parametrize("size", [8, 32])
def test_a_colour_tokenizer_round_trips_at_each_size(size):
    from embedlab.methods.vq.given import tokenizer_config
    from embedlab.methods.vq.tokenizer import RVQTokenizer

    assert "channels" not in tokenizer_config(TINY.tokenizer, size)  # grey: the config as before
    tokenizer = RVQTokenizer(**tokenizer_config(TINY.tokenizer, size, 3)).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    recon, _, indices = tokenizer(x)
    assert recon.shape == x.shape and tokenizer.decode_indices(indices).shape == x.shape

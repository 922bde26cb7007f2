"""The vq method end to end on tiny settings: train, evaluate, export, publish."""

import json

import numpy as np
import pytest
import torch

from embedlab.methods.vq.params import VQParams, VQPriorParams, VQTokenizerParams
from embedlab.params import Params, TrainerParams
from embedlab.paths import Paths

TINY = VQParams(
    seeds=[0, 1], workers=1,
    tokenizer=VQTokenizerParams(hidden=16, latent_dim=8, num_quantizers=2, codebook_size=8, max_epochs=1, batch_size=128),
    prior=VQPriorParams(width=16, layers=1, heads=2, mixtures=2, max_epochs=1, augment_copies=1, steps=2, batch_size=256),
    eval_depths=[1, 2], samples_per_class=3, timing_depths=[1, 2], timing_samples=10,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_prepared):
    from embedlab.data.prepare import write_prepared
    from embedlab.methods.vq import method

    paths = Paths(tmp_path_factory.mktemp("vq"))
    write_prepared(digits_prepared, paths.prepared)
    params = Params(trainer=TrainerParams(progress_bar=False), vq=TINY)
    method.train(params, paths)
    return params, paths


def test_train_writes_all_three_parts(trained):
    from embedlab.methods.vq.parts import load_parts

    _, paths = trained
    tokenizer, resgen, ar, config = load_parts(paths.model_dir("vq") / "seed0")
    assert config["tokenizer"]["num_quantizers"] == 2 and set(config["training"]) == {"tokenizer", "resgen", "ar"}
    # Matched compute is recorded: tokens each prior processed in training (AR: L x D + 1 per image).
    assert config["training"]["ar"]["tokens_processed"] > config["training"]["resgen"]["tokens_processed"] > 0
    other = load_parts(paths.model_dir("vq") / "seed1")[0]
    assert not torch.equal(other.codebooks, tokenizer.codebooks)  # each training seed trains its own tokenizer
    # The prior's frozen codebooks are the tokenizer's own.
    assert torch.allclose(resgen.codebooks, tokenizer.codebooks)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert tokenizer.tokenize(x).shape == (3, 16, 2)
    assert (paths.dvclive("vq") / "seed0" / "resgen").is_dir()


def test_evaluate_and_publish(trained, monkeypatch, tmp_path):
    from embedlab.classifier import EvaluatorNet
    from embedlab.methods.vq import method
    from embedlab.registry import load_model, publish

    params, paths = trained
    torch.manual_seed(0)
    evaluator = EvaluatorNet(num_classes=10, image_size=16, width=4, feature_dim=8).eval()
    params = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"bootstrap": 20})})
    metrics = method.evaluate(params, paths, evaluator)
    assert set(metrics["psnr"]) == {"d1", "d2"} and np.isfinite(metrics["psnr"]["d2"]["value"])
    assert metrics["psnr"]["d2"]["seeds"] == 2 and 0 < metrics["codebook_usage"]["value"] <= 1
    assert metrics["bits_per_image"] == 16 * 2 * 3
    for kind in ("resgen", "ar", "real"):  # every prior beside the real floor at the same N
        assert np.isfinite(metrics["fd"][kind]["value"]) and 0 <= metrics["class_accuracy"][kind]["value"] <= 1
        assert metrics["kid"][kind]["n"] == 30
    for kind in ("resgen", "ar"):
        assert set(metrics["sampling_seconds"][kind]) == {"d1", "d2", "ratio_d2_d1"}
    for claim in metrics["claims"].values():
        assert claim["verdict"] in ("reproduced", "refuted", "inconclusive") and len(claim["per_seed"]) == 2
    assert metrics["published"]["seed"] in (0, 1)
    assert json.loads(paths.metrics("vq").read_text()) == metrics
    for picture in ("reconstructions.png", "samples_resgen.png", "samples_ar.png", "psnr_vs_depth.png",
                    "sampling_time_vs_depth.png"):
        assert (paths.plots("vq") / picture).stat().st_size > 500, picture

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    receipt = publish("vq", method.export(params, paths), params, paths)
    assert receipt["alias"] == "champion" and receipt["metric"] == "published.psnr"
    assert receipt["value"] == metrics["published"]["psnr"]["value"]
    assert receipt["interval"] == [metrics["published"]["psnr"]["lo"], metrics["published"]["psnr"]["hi"]]
    champion = load_model("vq", "champion", paths=paths)
    tokenizer, _, _, _ = method.load_bundle(paths.model_dir("vq") / f"seed{metrics['published']['seed']}")
    x = torch.as_tensor(np.load(paths.prepared / "images.npy")[:4])
    assert torch.allclose(torch.as_tensor(np.asarray(champion(x))), tokenizer.decode_indices(tokenizer.tokenize(x)), atol=1e-5)

    # The bundle's files are enough to sample: config + weights of tokenizer and both priors.
    from embedlab.methods.vq.scoring import sample_images
    from embedlab.registry import download_bundle

    folder = download_bundle("vq", tmp_path / "bundle", paths=paths)
    tok2, resgen2, ar2, _ = method.load_bundle(folder)
    assert torch.equal(tok2.codebooks, tokenizer.codebooks)
    samples = sample_images(tok2, resgen2, torch.tensor([0, 1]), params.vq.prior, "resgen")
    assert samples.shape == (2, 1, 16, 16) and samples.abs().max() <= 1


class _Labels:
    """Stands where the labels would be: any use of it fails the test."""

    def _read(self, *args, **kwargs):
        raise AssertionError("the tokenizer's training read a label")

    __getitem__ = __len__ = __iter__ = __array__ = __getattr__ = _read


def test_the_tokenizer_trains_without_ever_reading_a_label(tmp_path, digits_prepared):
    """Federated label skew classifies the tokenizer's embeddings because no label shaped them:
    its training gets the labels as an object that fails on any use, and finishes."""
    from embedlab.methods.vq.method import _configs, train_tokenizer

    params = Params(trainer=TrainerParams(progress_bar=False), vq=TINY)
    images = {s: torch.from_numpy(digits_prepared.split(s)[0]) for s in ("train", "val")}
    split = {s: (x, _Labels()) for s, x in images.items()}
    meta = {"num_classes": 10, "image_size": int(images["train"].shape[-1])}
    tokenizer, epochs, best = train_tokenizer(params, Paths(tmp_path), _configs(params, meta), split, seed=0)
    assert epochs == 1 and best is not None
    with pytest.raises(AssertionError, match="read a label"):  # the stand-in does catch a read
        len(split["train"][1])


def test_federated_embeds_with_a_copy_of_the_trained_tokenizer(trained, digits_prepared):
    from embedlab.methods.federated.runs import EMBEDDING_DIR, copy_embedder, load_embedder
    from embedlab.methods.vq.parts import load_parts

    params, paths = trained
    folder = copy_embedder(params, paths.root)
    assert folder == paths.model_dir("federated") / EMBEDDING_DIR
    assert json.loads((folder / "source.json").read_text())["from"] == "models/vq/seed0"
    images = digits_prepared.split("test")[0][:7]
    got = load_embedder(folder, num_classes=10)(images)
    tokenizer = load_parts(paths.model_dir("vq") / "seed0")[0]
    assert got.shape == (7, 16 * TINY.tokenizer.latent_dim)  # 4 x 4 latent grid, flattened
    assert torch.allclose(got, tokenizer.encode(torch.from_numpy(images)).flatten(1), atol=1e-6)
    bad = params.model_copy(update={"federated": params.federated.model_copy(
        update={"embedding": params.federated.embedding.model_copy(update={"seed": 7})})})
    with pytest.raises(FileNotFoundError, match=r"federated.embedding \(source vq\).*seed7/config.json"):
        copy_embedder(bad, paths.root)

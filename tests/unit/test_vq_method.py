"""The vq method end to end on tiny settings: the given tokenizer, then train, evaluate, export, publish."""

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


def _no_tokenizer_training(*args, **kwargs):
    raise AssertionError("train@vq trained a tokenizer")


@pytest.fixture(scope="module", params=[False, True], ids=["cpu-default", "ar-baseline"])
def trained(request, tmp_path_factory, digits_prepared):
    from embedlab.classifiers.nets import BackboneNet, save_classifier
    from embedlab.data.prepare import write_prepared
    from embedlab.methods.vq import given, method

    paths = Paths(tmp_path_factory.mktemp("vq"))
    write_prepared(digits_prepared, paths.prepared)
    torch.manual_seed(0)  # an untrained backbone: evaluate@vq's precondition reads the samples with it
    kwargs = {"num_classes": 10, "image_size": 16, "width": 4, "feature_dim": 8}
    paths.model_dir("backbone").mkdir(parents=True)
    save_classifier(BackboneNet(**kwargs).eval(), "backbone", kwargs, paths.model_dir("backbone"))
    # The CPU default trains ResGen alone; the paper preset (vq.ar_baseline) the AR baseline beside it.
    params = Params(trainer=TrainerParams(progress_bar=False), vq=TINY.model_copy(update={"ar_baseline": request.param}))
    given.train(params, paths)
    before = (paths.model_dir("tokenizer") / "tokenizer.safetensors").read_bytes()
    with pytest.MonkeyPatch.context() as mp:  # train@vq reads the given tokenizer, never fits one
        mp.setattr(given, "fit", _no_tokenizer_training)
        mp.setattr("embedlab.methods.vq.tokenizer_training.LitTokenizer", _no_tokenizer_training)
        method.train(params, paths)
    assert (paths.model_dir("tokenizer") / "tokenizer.safetensors").read_bytes() == before
    return params, paths


def test_train_fits_the_priors_on_the_given_tokenizer(trained):
    from embedlab.evaluation.samples import weights_id
    from embedlab.methods.vq.given import load_tokenizer
    from embedlab.methods.vq.parts import load_parts, load_priors

    params, paths = trained
    kinds = {"resgen", "ar"} if params.vq.ar_baseline else {"resgen"}
    tokenizer, _ = load_tokenizer(paths.model_dir("tokenizer"))
    for seed in (0, 1):  # every training seed: its own priors over the one tokenizer
        folder = paths.model_dir("vq") / f"seed{seed}"
        assert {p.name for p in folder.glob("*.safetensors")} == {f"{kind}.safetensors" for kind in kinds}
        resgen, ar, config = load_priors(folder, tokenizer)
        assert config["tokenizer_sha256"] == weights_id(tokenizer) and set(config["training"]) == kinds
        assert (ar is None) == (not params.vq.ar_baseline)
        # The prior's frozen codebooks are the given tokenizer's own.
        assert torch.allclose(resgen.codebooks, tokenizer.codebooks)
        assert not (paths.dvclive("vq") / f"seed{seed}" / "tokenizer").exists()
    # Matched compute is recorded: tokens each prior processed in training (AR: L x D + 1 per image).
    assert config["training"]["resgen"]["tokens_processed"] > 0
    if params.vq.ar_baseline:
        assert config["training"]["ar"]["tokens_processed"] > config["training"]["resgen"]["tokens_processed"]
    assert config["tokenizer"]["num_quantizers"] == 2
    loaded = load_parts(folder, tokenizer_dir=paths.model_dir("tokenizer"))[0]
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert loaded.tokenize(x).shape == (3, 16, 2) and torch.equal(loaded.tokenize(x), tokenizer.tokenize(x))
    assert (paths.dvclive("vq") / "seed0" / "resgen").is_dir()


def test_evaluate_and_publish(trained, monkeypatch, tmp_path, digits_prepared):
    from embedlab.classifiers.nets import EvaluatorNet
    from embedlab.methods.vq import method
    from embedlab.methods.vq.given import load_tokenizer
    from embedlab.registry import load_model, publish

    params, paths = trained
    digits_test = digits_prepared.split("test")[0]
    torch.manual_seed(0)
    evaluator = EvaluatorNet(num_classes=10, image_size=16, width=4, feature_dim=8).eval()
    params = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"bootstrap": 20})})
    metrics = method.evaluate(params, paths, evaluator)
    assert set(metrics["psnr"]) == {"d1", "d2"} and np.isfinite(metrics["psnr"]["d2"]["value"])
    # The one tokenizer's PSNR: an interval over the test images, not over training seeds.
    assert metrics["psnr"]["d2"]["n"] == len(digits_test) and "seeds" not in metrics["psnr"]["d2"]
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["tokenizer"]["seed"] == 0
    assert metrics["bits_per_image"] == 16 * 2 * 3
    kinds = ("resgen", "ar") if params.vq.ar_baseline else ("resgen",)
    for kind in (*kinds, "real"):  # every trained prior beside the real floor at the same N
        assert np.isfinite(metrics["fd"][kind]["value"]) and 0 <= metrics["class_accuracy"][kind]["value"] <= 1
        assert metrics["kid"][kind]["n"] == 30
    assert set(metrics["fd"]) == {*kinds, "real", "reconstruction"} and set(metrics["per_seed"]) == set(kinds)
    for kind in ("resgen", "ar"):  # sampling cost per depth: untrained priors, both architectures either way
        assert set(metrics["sampling_seconds"][kind]) == {"d1", "d2", "ratio_d2_d1"}
    if params.vq.ar_baseline:
        assert set(metrics["claims"]) == {"resgen_vs_ar_fd", "resgen_vs_ar_accuracy"} and "not_run" not in metrics
    else:  # no baseline, no claim: `not_run` says why
        assert metrics["claims"] == {} and set(metrics["not_run"]) == {"resgen_vs_ar_fd", "resgen_vs_ar_accuracy"}
        assert all("vq.ar_baseline is false" in why for why in metrics["not_run"].values())
    for claim in metrics["claims"].values():  # tiny priors at chance: the recognisability gate holds them back
        assert claim["verdict"] == "untested" and len(claim["per_seed"]) == 2
        checks = claim["precondition"]["checks"]
        assert [c["description"].split("'")[0] for c in checks] == ["resgen", "ar"]
        assert all(len(c["per_seed"]) == 2 and not c["met"] for c in checks)
    assert metrics["published"]["seed"] in (0, 1)
    assert json.loads(paths.metrics("vq").read_text()) == metrics
    for picture in ("reconstructions.png", "samples_resgen.png", "psnr_vs_depth.png", "sampling_time_vs_depth.png",
                    *(("samples_ar.png",) if params.vq.ar_baseline else ())):
        assert (paths.plots("vq") / picture).stat().st_size > 500, picture
    assert (paths.plots("vq") / "samples_ar.png").exists() == params.vq.ar_baseline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    receipt = publish("vq", method.export(params, paths), params, paths)
    assert receipt["alias"] == "champion" and receipt["metric"] == "published.psnr"
    assert receipt["value"] == metrics["published"]["psnr"]["value"]
    assert receipt["interval"] == [metrics["published"]["psnr"]["lo"], metrics["published"]["psnr"]["hi"]]
    champion = load_model("vq", "champion", paths=paths)
    tokenizer, _ = load_tokenizer(paths.model_dir("tokenizer"))  # every seed's, the published one's too
    x = torch.as_tensor(np.load(paths.prepared / "images.npy")[:4])
    assert torch.allclose(torch.as_tensor(np.asarray(champion(x))), tokenizer.decode_indices(tokenizer.tokenize(x)), atol=1e-5)

    # The bundle's files are enough to sample: config + weights of the tokenizer and the priors.
    from embedlab.methods.vq.scoring import sample_images
    from embedlab.registry import download_bundle

    folder = download_bundle("vq", tmp_path / "bundle", paths=paths)
    tok2, resgen2, ar2, _ = method.load_bundle(folder)
    assert torch.equal(tok2.codebooks, tokenizer.codebooks) and (ar2 is None) == (not params.vq.ar_baseline)
    samples = sample_images(tok2, resgen2, torch.tensor([0, 1]), params.vq.prior, "resgen")
    assert samples.shape == (2, 1, 16, 16) and samples.abs().max() <= 1


def test_federated_embeds_with_a_copy_of_the_given_tokenizer(trained, digits_prepared, tmp_path):
    from embedlab.methods.federated.parts import EMBEDDING_DIR, copy_embedder, load_embedder
    from embedlab.methods.vq.given import load_tokenizer

    params, paths = trained
    folder = copy_embedder(params, paths.root)
    assert folder == paths.model_dir("federated") / EMBEDDING_DIR
    assert json.loads((folder / "source.json").read_text())["from"] == "models/tokenizer"
    images = digits_prepared.split("test")[0][:7]
    got = load_embedder(folder, num_classes=10)(images)
    tokenizer, _ = load_tokenizer(paths.model_dir("tokenizer"))
    assert got.shape == (7, 16 * TINY.tokenizer.latent_dim)  # 4 x 4 latent grid, flattened
    assert torch.allclose(got, tokenizer.encode(torch.from_numpy(images)).flatten(1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match=r"federated.embedding \(source vq\).*tokenizer/config.json.*pretrain"):
        copy_embedder(params, tmp_path)  # no models/tokenizer there

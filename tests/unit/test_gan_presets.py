"""train / evaluate / export / publish of the gan method on tiny settings, with and without
stacked digits (`gan.image.stacked`): the CPU default runs ring, grid and plain digits and
publishes MEE's plain-digit generator; the paper preset adds the stacked benchmarks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.params import Params, parse_params
from embedlab.paths import Paths

TINY = {
    "trainer": {"progress_bar": False},
    "evaluation": {"samples": 60, "bootstrap": 20},
    "gan": {
        "loss": {"buffer_size": 16},
        "tuning": {"dcgan": {"key": "lr_scale", "values": [1.0, 2.0]}, "maf": {"key": "lr_scale", "values": [1.0, 2.0]},
                   "maf+disomap": {"key": "lambda_disomap", "values": [0.3, 1.0]},
                   "maf+disomap+dlle": {"key": "lambda_dlle", "values": [0.1, 0.3]},
                   "mee": {"key": "sigma", "values": [0.3, 1.0]}},
        "toy": {"seeds": [0], "arms": ["maf", "mee"], "steps": 2, "batch_size": 16, "hidden": 8, "eval_samples": 80},
        "image": {"seeds": [0, 1], "arms": ["maf", "mee"], "steps": 2, "batch_size": 8, "gen_width": 2,
                  "disc_width": 2, "weak_disc_width": 2, "eval_samples": 40},
        "workers": 1,
    },
}


def paper_gan() -> dict:
    """The paper preset's gan section (params/paper.yaml)."""
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[2] / "params" / "paper.yaml").read_text())["gan"]


def tiny(stacked: bool) -> Params:
    raw = json.loads(json.dumps(TINY))
    raw["gan"]["image"]["stacked"] = stacked
    raw["gan"]["toy"]["run"] = stacked  # the paper preset runs both; the CPU default neither
    return parse_params(raw)


@pytest.fixture(scope="module", params=[False, True], ids=["cpu-default", "stacked"])
def evaluated(request, tmp_path_factory, digits_prepared):
    from embedlab.classifiers.nets import BackboneNet, EvaluatorNet, save_classifier
    from embedlab.data.prepare import write_prepared
    from embedlab.methods.gan import method

    params = tiny(request.param)
    paths = Paths(tmp_path_factory.mktemp("gan"))
    write_prepared(digits_prepared, paths.prepared)
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "image_size": 16, "width": 4, "feature_dim": 8}
    paths.model_dir("backbone").mkdir(parents=True)
    save_classifier(BackboneNet(**kwargs).eval(), "backbone", kwargs, paths.model_dir("backbone"))
    method.train(params, paths)
    evaluator = EvaluatorNet(**kwargs).eval()
    return params, paths, method.evaluate(params, paths, evaluator)


def test_the_stacked_and_toy_switches_decide_every_run(evaluated):
    params, paths, metrics = evaluated
    stacked = params.gan.image.stacked
    config = json.loads((paths.model_dir("gan") / "config.json").read_text())
    benches = {j["bench"] for j in config["jobs"]}
    tuned = {k.split("/")[0] for k in config["tuning"]["scores"]}
    if stacked:  # the paper preset: today's runs
        assert benches == {"ring", "grid", "stacked_weak", "stacked_full", "digits"}
        assert tuned == {"ring", "grid", "stacked_weak"}
        assert {"stacked", "stacked_full"} <= set(metrics)
        assert not {"stacked", "stacked_full"} & set(metrics.get("not_run", {}))
        assert "mee_vs_maf_stacked" in metrics["claims"]
        assert (paths.plots("gan") / "stacked_mode_histogram.png").exists()
        assert "mee_vs_maf_ring" in metrics["claims"] and metrics["settings"]["toy"]
    else:  # the CPU default: no stacked or 2-D run, no tuning, no reading of either anywhere
        assert benches == {"digits"} and tuned == set() and config["tuning"]["chosen"] == {}
        assert not any(j["bench"].startswith("stacked") for j in config["jobs"])
        assert not any(k.startswith(("stacked", "select/stacked")) for k in
                       json.loads((paths.model_dir("gan") / "history.json").read_text())["runs"])
        assert set(config["generators"]) == {"digits"}
        assert "digits" in config["tuning"]["untuned"]
        # digits untuned: every arm at its params default (value None)
        assert {j["value"] for j in config["jobs"] if j["bench"] == "digits"} == {None}
        assert not {"stacked", "stacked_full"} & set(metrics)
        digits_claim = {"dcgan", "mee"} <= set(params.gan.image.compare_arms)
        assert set(metrics["not_run"]) == {"stacked", "stacked_full", "ring", "grid", "mee_vs_maf_stacked",
                                           "mee_vs_maf_ring", "mee_vs_maf_grid"} | (
            set() if digits_claim else {"mee_quality_vs_dcgan_digits"})
        assert "gan.image.stacked is false" in metrics["not_run"]["stacked"]
        assert "gan.toy.run is false" in metrics["not_run"]["ring"] == metrics["not_run"]["grid"]
        assert not {"ring", "grid"} & set(metrics) and not metrics["settings"]["toy"]
        assert not any(k.endswith(("stacked", "ring", "grid")) for k in metrics["claims"])
        assert not metrics["settings"]["stacked"]
        assert not list(paths.plots("gan").glob("*stacked*")) and not list(paths.plots("gan").glob("scatter_*"))
    # either way: the digits modes beside the real ceiling and the untrained floor, and the plots
    assert set(metrics["digits"]["modes_covered"]) == set(params.gan.image.compare_arms) | {"real", "untrained"}
    assert metrics["digits"]["min_count"] >= 1 and metrics["digits"]["modes_covered"]["real"] <= 10
    for picture in ("scatter_ring.png",) * stacked + ("samples_digits_mee.png", "losses.png", "modes_covered.png"):
        assert (paths.plots("gan") / picture).stat().st_size > 0, picture


def test_the_published_generator_is_the_backbones_choice_of_the_benchmark_that_ran(evaluated, monkeypatch, tmp_path):
    from embedlab.methods.gan import method
    from embedlab.methods.gan.parts import load_generator
    from embedlab.methods.gan.scoring import published_seed
    from embedlab.registry import download_bundle, load_model, publish

    params, paths, metrics = evaluated
    config = json.loads((paths.model_dir("gan") / "config.json").read_text())
    bench = "stacked_weak" if params.gan.image.stacked else "digits"
    pub = metrics["published"]
    assert (pub["bench"], pub["arm"]) == (bench, "mee") == (config["backbone_reads"]["bench"], "mee")
    assert set(config["backbone_reads"]["per_seed"]) == {"0", "1"}  # every reported mee run read by the backbone
    assert pub["seed"] == published_seed(config) and pub["modes"] == (1000 if bench == "stacked_weak" else 10)
    seed_index = [j["seed"] for j in config["jobs"] if (j["bench"], j["arm"]) == (bench, "mee")].index(pub["seed"])
    per_seed = metrics["per_seed"]["stacked" if bench == "stacked_weak" else "digits"]["mee"]
    assert pub["modes_covered"] == per_seed[seed_index]["modes_covered"]  # the evaluator's reading of that run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    receipt = publish("gan", method.export(params, paths), params, paths)
    assert receipt["metric"] == "published.modes_covered" == method.primary_metric
    assert receipt["value"] == pub["modes_covered"]
    # The quality floor reads the published run's confident share: a tiny run's blobs stay below
    # it, so the version is registered as a challenger, never champion (registry.publish).
    quality = receipt["quality"]
    from embedlab.evaluation.intervals import value_of

    assert quality["value"] == pytest.approx(value_of(pub["confident_share"]), abs=1e-4) and quality["threshold"] >= 0.5
    assert not quality["met"] and receipt["alias"] == "challenger"
    z = torch.randn(5, params.gan.image.z_dim, generator=torch.Generator().manual_seed(1))
    expected = load_generator(paths.model_dir("gan"), bench, "mee", pub["seed"])(z)
    assert expected.shape == (5, 3 if bench == "stacked_weak" else 1, 16, 16)
    assert torch.allclose(torch.as_tensor(np.asarray(load_model("gan", "challenger", paths=paths)(z))), expected, atol=1e-5)
    folder = download_bundle("gan", tmp_path / "bundle", "challenger", paths=paths)
    assert torch.equal(load_generator(folder, bench, "mee", pub["seed"])(z), expected)
    generators = method.load_bundle(folder)
    assert set(generators) == ({"stacked", "digits"} if bench == "stacked_weak" else {"digits"})
    if bench == "digits":  # the bundle's digits generator is the published one
        assert torch.equal(generators["digits"](z), expected)


@pytest.mark.parametrize("stacked", [False, True])
def test_planned_and_tuning_runs_follow_the_stacked_and_toy_switches(stacked):
    from embedlab.methods.gan.method import planned_jobs, selection_jobs

    # the CPU default, and the paper preset's GAN (params/paper.yaml)
    params = parse_params({"gan": paper_gan()} if stacked else {})
    g = params.gan
    jobs = planned_jobs(params)
    stacked_runs = len(g.image.arms) * len(g.image.seeds) + len(g.image.compare_arms) * len(g.image.full_seeds)
    toy_runs = 2 * len(g.toy.arms) * len(g.toy.seeds)
    assert len(jobs) == len(g.image.compare_arms) * len(g.image.seeds) + (stacked_runs + toy_runs if stacked else 0)
    assert len(jobs) == (77 if stacked else 1)  # the CPU default: MEE's plain-digit generator alone
    assert {j.bench for j in selection_jobs(params)} == ({"ring", "grid", "stacked_weak"} if stacked else set())
    # the CPU default; the paper preset turns both on
    assert Params().gan.image.stacked is False and Params().gan.toy.run is False

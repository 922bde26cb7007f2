"""The whole DAG through real `dvc repro` on tiny params.

One tiny run of the DAG (`tiny_pipeline`, a session fixture in conftest.py, built once for all
xdist workers) serves every test that starts from a finished pipeline. This module works in the
run itself, in this order: what the run made, which edits make which stages stale, then
`embedlab report` on a param change. test_pipeline_team.py and test_pipeline_rerun.py clone it
(a teammate, a pull request, a second training); test_gate_and_data.py needs no run.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import commit, run, set_params

pytestmark = pytest.mark.slow

MODELS = ("evaluator", "backbone", "vq", "gan", "federated", "diffusion")
STAGES = ["prepare", "validate", "partition", "reference@evaluator", "reference@backbone", "pretrain_ddpm",
          "pretrain_tokenizer"] + [
    f"train@{m}" for m in MODELS[2:]] + [f"{stage}@{m}" for stage in ("evaluate", "publish") for m in MODELS]


def is_score(entry) -> bool:
    """The settled format: value inside its own 95% interval, with the N behind it."""
    return (isinstance(entry, dict) and entry["lo"] <= entry["value"] <= entry["hi"] and entry["n"] >= 1)


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


@pytest.fixture(scope="module")
def pipeline_run(tiny_pipeline) -> SimpleNamespace:
    """The tiny run itself (committed, with the team remote): this module's to change."""
    return tiny_pipeline


def test_dvc_repro_end_to_end_then_nothing_reruns(pipeline_run, tmp_path, monkeypatch):
    repo_copy = pipeline_run.repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in pipeline_run.first, stage

    metrics = json.loads((repo_copy / "metrics/evaluator.json").read_text())
    assert is_score(metrics["test_accuracy"]) and 0.0 < metrics["test_accuracy"]["value"] <= 1.0
    assert is_score(metrics["real_floor"]["fd"]) and metrics["real_floor"]["fd"]["n"] == 20  # evaluation.samples
    assert (repo_copy / "reports/validation/summary.json").exists()
    assert json.loads((repo_copy / "reports/validation/summary.json").read_text())["success"] is True
    assert (repo_copy / "data/partitions/label_skew.npz").exists()
    receipt = json.loads((repo_copy / "registry/evaluator.json").read_text())
    assert receipt["name"] == "embedlab-evaluator" and receipt["alias"] == "champion"
    assert receipt["value"] == metrics["test_accuracy"]["value"]
    assert receipt["interval"] == [metrics["test_accuracy"]["lo"], metrics["test_accuracy"]["hi"]]
    assert receipt["tracking_uri"].startswith("sqlite:///") and (repo_copy / "mlflow.db").exists()
    assert receipt["data_hash"] and receipt["data_hash"] != "unknown"

    # models:/embedlab-evaluator@champion predicts exactly what the trained weights predict.
    import torch

    from embedlab.classifiers.nets import load_classifier
    from embedlab.data.prepare import read_prepared
    from embedlab.paths import Paths
    from embedlab.registry import load_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = Paths(repo_copy)
    x, _ = read_prepared(paths.prepared).split("test")
    x = torch.as_tensor(x[:16])
    champion = load_model("evaluator", "champion", paths=paths)
    local = load_classifier(paths.model_dir("evaluator"))
    assert torch.allclose(torch.as_tensor(np.asarray(champion(x))), local(x), atol=1e-5)

    # The vq bundle: published on psnr at the tokenizer's full depth, and the registered
    # program reconstructs test images exactly as the trained tokenizer does.
    vq_metrics = json.loads((repo_copy / "metrics/vq.json").read_text())
    vq_receipt = json.loads((repo_copy / "registry/vq.json").read_text())
    assert vq_receipt["name"] == "embedlab-vq" and vq_receipt["metric"] == "published.psnr"
    assert vq_receipt["value"] == vq_metrics["published"]["psnr"]["value"]
    assert set(vq_metrics["claims"]) == {"resgen_vs_ar_fd", "resgen_vs_ar_accuracy"}
    for kind in ("resgen", "ar", "real"):
        assert is_score(vq_metrics["fd"][kind]) and is_score(vq_metrics["kid"][kind])
    assert vq_metrics["evaluator"]["sha256"] == metrics["weights"]["sha256"]  # which evaluator read the scores
    from embedlab.methods.vq.given import load_tokenizer

    tokenizer = load_tokenizer(paths.model_dir("tokenizer"))[0]  # the one every seed's priors share
    expected = tokenizer.decode_indices(tokenizer.tokenize(x))
    assert torch.allclose(torch.as_tensor(np.asarray(load_model("vq", "champion", paths=paths)(x))), expected, atol=1e-4)

    # The gan bundle: published on the modes covered by mee where collapse is measured (stacked
    # digits with gan.image.stacked, the paper preset; plain digits in the CPU default); the
    # registered program maps z to samples exactly as the trained generator does, and every arm was scored.
    gan_metrics = json.loads((repo_copy / "metrics/gan.json").read_text())
    gan_receipt = json.loads((repo_copy / "registry/gan.json").read_text())
    published = gan_metrics["published"]
    stacked = gan_metrics["settings"]["stacked"]
    assert (published["bench"], published["arm"]) == ("stacked_weak" if stacked else "digits", "mee")
    assert gan_receipt["metric"] == "published.modes_covered"
    assert gan_receipt["value"] == published["modes_covered"]
    for bench in ("ring", "grid") + (("stacked",) if stacked else ()):
        # every arm beside the real ceiling and the untrained floor, at the min count the ceiling gives
        assert set(gan_metrics[bench]["modes_covered"]) == {"dcgan", "maf", "mee", "real", "untrained"}
        assert set(gan_metrics["ablation"][bench]["modes_covered"]) == {"maf+disomap", "maf+disomap+dlle"}
        assert gan_metrics[bench]["min_count"] >= 1
    if not stacked:  # the CPU default says what it left to the paper preset
        assert "stacked" not in gan_metrics
        assert set(gan_metrics["not_run"]) == {"stacked", "stacked_full", "mee_vs_maf_stacked"}  # benchmarks and claim
    assert set(gan_metrics["digits"]["fd"]) == {"dcgan", "mee", "real", "untrained"}  # gan.image.compare_arms
    assert set(gan_metrics["digits"]["modes_covered"]) == {"dcgan", "mee", "real", "untrained"}
    assert len(gan_metrics["per_seed"]["ring"]["mee"]) == 2  # toy seeds [0, 1]
    assert set(gan_metrics["claims"]) == {"mee_vs_maf_ring", "mee_vs_maf_grid", "mee_quality_vs_dcgan_digits"} \
        | ({"mee_vs_maf_stacked"} if stacked else set())
    # tuning: every arm tuned on each tuning benchmark with the same number of values
    scores = gan_metrics["tuning"]["scores"]
    assert {k.split("/")[0] for k in scores} == {"ring", "grid"} | ({"stacked_weak"} if stacked else set())
    assert {len(v) for v in scores.values()} == {2}
    from embedlab.methods.gan.parts import load_generator
    from embedlab.registry import download_bundle

    z = torch.randn(5, 32)
    expected = load_generator(paths.model_dir("gan"), published["bench"], "mee", published["seed"])(z)
    assert expected.shape == (5, 3 if stacked else 1, 16, 16)
    # The tiny run's generator draws blobs: below the quality floor it is registered, never champion.
    assert gan_receipt["quality"]["met"] is False and gan_receipt["alias"] == "challenger"
    assert gan_receipt["quality"]["value"] == published["confident_share"]["value"]
    from embedlab.registry import RegistryError

    with pytest.raises(RegistryError, match="champion"):
        load_model("gan", "champion", paths=paths)
    assert torch.allclose(torch.as_tensor(np.asarray(load_model("gan", "challenger", paths=paths)(z))), expected, atol=1e-5)
    bundle = download_bundle("gan", tmp_path / "downloaded", "challenger", paths=paths)
    assert torch.equal(load_generator(bundle, published["bench"], "mee", published["seed"])(z), expected)
    assert load_generator(bundle, "digits", "mee", published["seed"] if not stacked else 0)(z).shape == (5, 1, 16, 16)
    pictures = ["scatter_ring.png", "scatter_grid.png", "samples_digits_mee.png", "losses.png", "modes_covered.png"]
    pictures += ["samples_stacked_weak_mee.png", "stacked_mode_histogram.png"] if stacked else []
    for picture in pictures:
        assert (repo_copy / "plots/gan" / picture).stat().st_size > 0, picture

    # The federated runs: every algorithm at every size / alpha, over both seeds; published on
    # FRAug's feature-shift accuracy; the program is every client's personalised network.
    fed = json.loads((repo_copy / "metrics/federated.json").read_text())
    fs, ls = fed["feature_shift"], fed["label_skew"]
    assert set(fs["accuracy"]) == {"local", "fedavg", "fedprox", "fedbn", "fraug", "fedavg_head", "ggeur"}
    assert set(fs["by_size"]) == {"10", "20"} and fs["samples_per_client"] == 10
    assert set(ls["accuracy"]) == {"central", "fedavg", "fedavg_ggeur"}
    assert set(ls["by_alpha"]) == {"0.05", "0.1"} and ls["alpha"] == 0.05
    assert len(fs["comparisons"]["fraug-fedbn"]["per_seed"]) == 2 and is_score(fs["accuracy"]["fedbn"])
    assert len(ls["comparisons"]["fedavg_ggeur-fedavg"]["per_seed"]) == 2
    assert fed["claims"]["fraug_vs_fedbn"]["precondition"]["description"].startswith("FedBN leaves room")
    assert fed["claims"]["ggeur_vs_fedavg"]["precondition"]["description"].startswith("FedAvg leaves room: central")
    # Equal val budgets on the selection seed, never a scored one; the label-free embedder was copied.
    assert fed["tuning"]["budget"] == {arm: 2 for arm in ("local", "fedavg", "fedprox", "fedbn", "fraug")}
    assert fed["tuning"]["fedbn"]["seeds"] == [100]
    assert fed["embedding"]["source"] == "vq"
    assert (repo_copy / "models/federated/embedding/tokenizer.safetensors").stat().st_size > 0
    assert fs["bytes_per_round"]["local"] == 0 < fs["bytes_per_round"]["fedbn"] < fs["bytes_per_round"]["fedavg"]
    assert set(fs["per_client"]["fraug"]) == {"original", "synth", "mnistm", "svhn", "usps", "inverted"}
    assert len(ls["per_client"]["fedavg"]) == 20
    fed_receipt = json.loads((repo_copy / "registry/federated.json").read_text())
    assert fed_receipt["metric"] == "published.accuracy"
    assert fed_receipt["value"] == fed["published"]["accuracy"]["value"]
    assert fed["published"]["chosen_by"].startswith("final-round val accuracy")
    from embedlab.methods.federated.parts import load_runs
    from embedlab.methods.federated.scoring import _rebuild

    info, states = load_runs(paths.model_dir("federated"))
    fed_bundle = download_bundle("federated", tmp_path / "downloaded_federated", paths=paths)
    published = json.loads((fed_bundle / "config.json").read_text())["published"]
    assert set(published) == {"feature_shift", "label_skew"} and (fed_bundle / "feature_shift.safetensors").exists()
    assert published["feature_shift"] == fed["published"]["feature_shift"]["run"]
    run_info = next(r for r in info["runs"] if r["key"] == published["feature_shift"])
    images = torch.randn(3, 6, 1, 16, 16, generator=torch.Generator().manual_seed(0))  # (B, clients, ...)
    expected = _rebuild(run_info, states[run_info["key"]]).eval()(images.transpose(0, 1)).transpose(0, 1)
    got = torch.as_tensor(np.asarray(load_model("federated", "champion", paths=paths)(images)))
    assert torch.allclose(got, expected, atol=1e-5)
    from embedlab.methods.federated.scoring import load_bundle

    rebuilt = load_bundle(fed_bundle)
    assert torch.allclose(rebuilt["feature_shift"](images.transpose(0, 1)).transpose(0, 1), expected, atol=1e-5)
    # The label-skew head classifies the bundled frozen embedder's output (tiny vq: 4 x 4 x 8 = 128-d).
    embedded = rebuilt["embedding"](x[:2])
    assert embedded.shape == (2, 128)
    k = rebuilt["label_skew"].clients
    assert rebuilt["label_skew"](embedded.expand(k, 2, 128)).shape == (k, 2, 10)
    for picture in ("accuracy_vs_round.png", "per_client_accuracy.png"):
        assert (repo_copy / "plots/federated" / picture).stat().st_size > 0, picture

    # The diffusion bundle: published on PPAP's guided accuracy; the program is the unguided
    # DDIM sampler, and the downloaded parts sample every arm.
    diff = json.loads((repo_copy / "metrics/diffusion.json").read_text())
    assert set(diff["guided_accuracy"]) == {"naive", "supervised", "ppap", "cfg", "real"}
    assert set(diff["fd"]) == {"unguided", "naive", "supervised", "ppap", "cfg", "real"}
    assert diff["fd"]["ppap"]["seeds"] == 2 and diff["fd"]["cfg"]["seeds"] == 1  # cfg_seeds [0]
    assert is_score(diff["kid"]["real"]) and is_score(diff["confident_share"]["real_test"])
    assert len(diff["per_seed"]["ppap"]) == 2
    assert set(diff["claims"]) == {"ppap_vs_naive", "ppap_vs_supervised"}
    assert 0 < diff["trainable_fraction"]["ppap"] < 1 and diff["trainable_params"]["ppap"] > 0
    assert diff["scale"]["0"]["naive"] in (1.0, 10.0) and diff["scale"]["0"]["cfg"] == 1.0
    diff_receipt = json.loads((repo_copy / "registry/diffusion.json").read_text())
    assert diff_receipt["metric"] == "published.guided_accuracy"
    assert diff_receipt["value"] == diff["published"]["guided_accuracy"]["value"]
    from embedlab.methods.diffusion.scoring import load_bundle

    parts = load_bundle(download_bundle("diffusion", tmp_path / "downloaded_diffusion", paths=paths))
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    from embedlab.methods.diffusion.schedule import ddim_sample

    expected = ddim_sample(parts.uncond, parts.schedule, noise.shape, 3, x_T=noise)
    got = torch.as_tensor(np.asarray(load_model("diffusion", "champion", paths=paths)(noise)))
    assert torch.allclose(got, expected, atol=1e-4)
    assert parts.sample("ppap", torch.tensor([1, 2]), parts.scales["ppap"], seed=0).shape == (2, 1, 16, 16)
    for picture in ("accuracy_vs_scale.png", "samples_ppap.png", "samples_cfg.png", "samples_unguided.png"):
        assert (repo_copy / "plots/diffusion" / picture).stat().st_size > 0, picture

    # The registry page's snippets run as written, against this registry (cwd: the repo). They
    # are written for a run whose generator passed the quality floor: on this copy the tiny
    # GAN's challenger stands in as its champion.
    from mlflow import MlflowClient

    from embedlab.registry import registered_name, tracking_uri

    MlflowClient(tracking_uri(paths)).set_registered_model_alias(registered_name("gan"), "champion",
                                                                  str(gan_receipt["version"]))
    monkeypatch.chdir(repo_copy)
    namespace = {"images": np.asarray(x[:4], dtype=np.float32)}
    page = (Path(__file__).resolve().parents[2] / "docs/registry.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(snippets) >= 5
    for code in snippets:
        exec(compile(code, "docs/registry.md", "exec"), namespace)
    assert tuple(namespace["samples"].shape) == (10, 1, 16, 16) and tuple(namespace["digits"].shape) == (64, 1, 16, 16)
    assert set(namespace["nets"]) == {"feature_shift", "label_skew", "embedding"} and tuple(namespace["logits"].shape) == (4, 6, 10)
    assert tuple(namespace["label_skew"].shape) == (4, 10)
    assert tuple(namespace["guided"].shape) == (80, 1, 16, 16)
    assert namespace["card"].startswith("# embedlab-gan") and "## Claims" in namespace["card"]
    from embedlab.catalogue import get_model

    reloaded = get_model("evaluator").load_bundle(download_bundle("evaluator", tmp_path / "eval-bundle", paths=paths))
    assert torch.allclose(reloaded(x), local(x))

    second = run(["dvc", "repro"], repo_copy)
    assert "Running stage" not in second.stdout
    status = run(["dvc", "status"], repo_copy)
    assert "up to date" in status.stdout


def stale_stages(repo: Path) -> set[str]:
    out = run(["dvc", "status", "--json"], repo).stdout
    return set(json.loads(out or "{}"))


def test_harness_plumbing_reruns_nothing_and_a_method_change_reruns_that_method_only(pipeline_run):
    """Stage deps name what changes a result (dvc.yaml): the Trainer factory, the host record and
    the CLI are plumbing; a method's package reruns that method's stages alone."""
    repo = pipeline_run.repo
    assert stale_stages(repo) == set()
    plumbing = ["src/embedlab/training.py", "src/embedlab/host.py", "src/embedlab/cli.py", "src/embedlab/io.py"]
    try:
        for rel in plumbing:
            with open(repo / rel, "a") as f:
                f.write("\n# a comment: no number can move\n")
        assert stale_stages(repo) == set()
        with open(repo / "src/embedlab/methods/gan/losses.py", "a") as f:
            f.write("\n# a change to the GAN's code\n")
        assert stale_stages(repo) == {"train@gan", "evaluate@gan"}  # publish@gan follows evaluate's outputs
    finally:
        run(["git", "checkout", "--"] + plumbing + ["src/embedlab/methods/gan/losses.py"], repo)
    assert stale_stages(repo) == set()


def section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def test_report_shows_param_change_and_its_metrics(pipeline_run):
    """`embedlab report` on a real two-commit history: a param change shows up with its effect.
    The change is one method's budget (gan.toy.steps), so only that method reruns."""
    repo = pipeline_run.repo
    base = commit(repo, "the run the branch starts from")   # dvc.lock, metrics/, plots/, dvclive/

    run(["git", "checkout", "-qb", "longer-training"], repo)
    set_params(repo, {"gan": {"toy": {"steps": 8}}})
    second = run(["dvc", "repro"], repo)
    reran = set(re.findall(r"Running stage '([^']+)'", second.stdout))
    assert reran == {"train@gan", "evaluate@gan", "publish@gan"}, reran
    commit(repo, "gan: 8 toy steps")

    out = run(["embedlab", "report", "--base", base], repo)
    assert "reports/pr.md" in out.stdout
    text = (repo / "reports/pr.md").read_text()

    assert f"## embedlab report vs `{base[:12]}`" in text
    params = section(text, "Params")
    assert f"| {base[:12]} " in params   # the base heads its column
    assert re.search(r"\|\s*gan\.toy\.steps\s*\|\s*4\s*\|\s*8\s*\|", params), text

    # At least one metric row with old, new and change, and the change is new - old.
    metrics_md = section(text, "Metrics")
    rows = re.findall(rf"\|\s*metrics/\w+\.json\s*\|\s*(\S+)\s*\|\s*({NUMBER})\s*\|\s*({NUMBER})\s*\|\s*({NUMBER})\s*\|",
                      metrics_md)
    assert rows, text
    for _, old, new, change in rows:
        assert float(new) - float(old) == pytest.approx(float(change), abs=1e-4)
    assert "seconds" not in metrics_md and "host." not in metrics_md   # timings have their own section
    assert "wall_seconds" in section(text, "Timings and traces")

    # The second publish of the GAN: its blobs stay below the quality floor, so it stays a challenger.
    registry = section(text, "Registry decisions")
    assert re.search(r"\| embedlab-gan \| v2 \| \*\*challenger\*\* \| published\.modes_covered \| "
                     rf"{NUMBER} \| (?:{NUMBER}|-) \| below the quality floor", registry), registry

    pictures = section(text, "Pictures")
    assert re.search(r"!\[plots/gan/scatter_ring\.png\]\(\.\./plots/gan/scatter_ring\.png\)", pictures), pictures
    assert "label_histograms" not in pictures   # partition did not rerun
    assert (repo / "reports/pr_plots/index.html").exists()

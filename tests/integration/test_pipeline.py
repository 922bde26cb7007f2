"""The whole DAG through real `dvc repro` on tiny params, and the gate stopping bad data.

One tiny run of the DAG (`pipeline_run`, a module fixture) serves the tests that start from a
finished pipeline, in this order: what the run made, then a teammate's round trip through a DVC
remote and a pull request's rerun, then `embedlab report` on a param change. Each would
otherwise start with its own `dvc repro` of the whole DAG (minutes each on 2 cores).
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import commit, copy_repo, run, set_params

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
def pipeline_run(tmp_path_factory) -> SimpleNamespace:
    """A repository copy after one `dvc repro` of the whole DAG, committed as "baseline run"."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    first = run(["dvc", "repro"], repo)
    return SimpleNamespace(repo=repo, first=first.stdout, base=commit(repo, "baseline run"))


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

    from embedlab.classifier import load_classifier
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
        assert "stacked" not in gan_metrics and set(gan_metrics["not_run"]) == {"stacked", "stacked_full"}
    assert set(gan_metrics["digits"]["fd"]) == {"dcgan", "mee", "real", "untrained"}  # gan.image.compare_arms
    assert set(gan_metrics["digits"]["modes_covered"]) == {"dcgan", "mee", "real", "untrained"}
    assert len(gan_metrics["per_seed"]["ring"]["mee"]) == 2  # toy seeds [0, 1]
    assert set(gan_metrics["claims"]) == {"mee_vs_maf_ring", "mee_vs_maf_grid", "mee_quality_vs_dcgan_digits"} \
        | ({"mee_vs_maf_stacked"} if stacked else set())
    # tuning: every arm tuned on each tuning benchmark with the same number of values
    scores = gan_metrics["tuning"]["scores"]
    assert {k.split("/")[0] for k in scores} == {"ring", "grid"} | ({"stacked_weak"} if stacked else set())
    assert {len(v) for v in scores.values()} == {2}
    from embedlab.methods.gan.benchmarks import load_generator
    from embedlab.registry import download_bundle

    z = torch.randn(5, 32)
    expected = load_generator(paths.model_dir("gan"), published["bench"], "mee", published["seed"])(z)
    assert expected.shape == (5, 3 if stacked else 1, 16, 16)
    assert torch.allclose(torch.as_tensor(np.asarray(load_model("gan", "champion", paths=paths)(z))), expected, atol=1e-5)
    bundle = download_bundle("gan", tmp_path / "downloaded", paths=paths)
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
    assert fed["tuning"]["budget"] == {"fedbn": 2, "fraug": 2} and fed["tuning"]["fedbn"]["seeds"] == [100]
    assert fed["embedding"]["source"] == "vq"
    assert (repo_copy / "models/federated/embedding/tokenizer.safetensors").stat().st_size > 0
    assert fs["bytes_per_round"]["local"] == 0 < fs["bytes_per_round"]["fedbn"] < fs["bytes_per_round"]["fedavg"]
    assert set(fs["per_client"]["fraug"]) == {"original", "synth", "mnistm", "svhn", "usps", "inverted"}
    assert len(ls["per_client"]["fedavg"]) == 20
    fed_receipt = json.loads((repo_copy / "registry/federated.json").read_text())
    assert fed_receipt["metric"] == "published.accuracy"
    assert fed_receipt["value"] == fed["published"]["accuracy"]["value"]
    assert fed["published"]["chosen_by"].startswith("final-round val accuracy")
    from embedlab.methods.federated.runs import load_runs
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

    # The registry page's snippets run as written, against this registry (cwd: the repo).
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
    from embedlab.methods import get_model

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


def test_a_teammate_pulls_from_a_remote_and_a_pull_request_reruns_only_what_it_changed(pipeline_run):
    repo_copy = pipeline_run.repo
    # A teammate's round trip through a DVC remote (README, "Sharing results: a DVC remote"):
    # push, a fresh clone pulls, and nothing reruns there. The registry is this machine's
    # (mlflow.db is not in git): the clone gets the receipts, not the registrations.
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    remote, clone = repo_copy.parent / "remote", repo_copy.parent / "teammate"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], repo_copy)
    run(git + ["add", "-A"], repo_copy)
    run(git + ["commit", "-qm", "a run, and the team's remote"], repo_copy)
    run(["dvc", "push"], repo_copy)
    run(["git", "clone", "-q", str(repo_copy), str(clone)], repo_copy.parent)
    run(["dvc", "pull"], clone)
    assert (clone / "models/gan/config.json").exists() and (clone / "registry/gan.json").exists()
    pulled = run(["dvc", "repro"], clone)
    assert "Running stage" not in pulled.stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert not (clone / "mlflow.db").exists()

    # A pull request, as .github/workflows/pr-report.yml runs it with a remote configured:
    # `dvc pull --allow-missing`, then `dvc exp run`, on a fresh clone reruns only the stages whose params
    # the PR changed (here the registry gate's: the publish stages), and fetches what they read
    # (the trained models) from the remote instead of retraining.
    pr = repo_copy.parent / "pull-request"
    run(["git", "clone", "-q", str(repo_copy), str(pr)], repo_copy.parent)
    set_params(pr, {"registry": {"min_delta": 0.001}})
    workflow = (Path(__file__).resolve().parents[2] / ".github/workflows/pr-report.yml").read_text()
    assert "dvc pull --allow-missing" in workflow and "dvc exp run\n" in workflow
    for key, value in (("user.email", "t@t"), ("user.name", "t")):  # `dvc exp run` commits the experiment
        run(["git", "config", key, value], pr)
    run(["dvc", "pull", "--allow-missing"], pr)
    exp = run(["dvc", "exp", "run"], pr)
    reran = re.findall(r"Running stage '([^']+)'", exp.stdout)
    assert sorted(reran) == sorted(f"publish@{m}" for m in MODELS), exp.stdout[-3000:]
    assert (pr / "models/gan/config.json").exists()  # publish@gan's input came from the remote
    assert json.loads((pr / "registry/gan.json").read_text())["version"] == 1  # the PR runner's own registry


def flat(tree, prefix: str = "") -> dict:
    """{"a.b.0.c": leaf}: dicts and lists flattened, as `dvc metrics diff` names the leaves."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {prefix: tree}
    out: dict = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def test_each_method_trained_again_in_one_process_gives_the_same_metrics(pipeline_run):
    """Seeded runs are reproducible whatever the worker count: every method retrained in this
    process (workers: 1, where the run above used 2 spawned workers) scores exactly the same,
    wall times and the host record aside (embedlab.numerics pins the kernels and the threads)."""
    from embedlab.report import is_timing

    repo_copy = pipeline_run.repo
    again = repo_copy.parent / "one-worker"
    run(["git", "clone", "-q", str(repo_copy), str(again)], repo_copy.parent)
    run(["dvc", "pull"], again)  # the team remote of the test above: the inputs, not retrained
    methods = ("vq", "gan", "federated", "diffusion")
    set_params(again, {m: {"workers": 1} for m in methods})
    out = run(["dvc", "repro", "-s"] + [f"{stage}@{m}" for m in methods for stage in ("train", "evaluate")], again)
    for m in methods:
        assert f"Running stage 'train@{m}'" in out.stdout, m
        before = flat(json.loads((repo_copy / f"metrics/{m}.json").read_text()))
        after = flat(json.loads((again / f"metrics/{m}.json").read_text()))
        kept = {k for k in before if not is_timing(f"metrics/{m}.json", k)}
        assert kept == {k for k in after if not is_timing(f"metrics/{m}.json", k)}, m
        differ = {k: (before[k], after[k]) for k in kept if before[k] != after[k]}
        assert not differ, f"{m}: {len(differ)} of {len(kept)} values differ, e.g. {list(differ.items())[:5]}"
        assert before["host.evaluate.pins"] == after["host.evaluate.pins"] != "native"


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

    # The second publish of the GAN met the first as the champion to beat.
    registry = section(text, "Registry decisions")
    assert re.search(r"\| embedlab-gan \| v2 \| \*\*(champion|challenger)\*\* \| published\.modes_covered \| "
                     rf"{NUMBER} \| {NUMBER} \|", registry), registry

    pictures = section(text, "Pictures")
    assert re.search(r"!\[plots/gan/scatter_ring\.png\]\(\.\./plots/gan/scatter_ring\.png\)", pictures), pictures
    assert "label_histograms" not in pictures   # partition did not rerun
    assert (repo / "reports/pr_plots/index.html").exists()


def test_bad_data_stops_at_validate_and_nothing_downstream_runs(repo_copy):
    from embedlab.data.sources import load_digits_source

    raw = load_digits_source()
    images = np.stack(raw.images)
    images[7, 2, 3] = np.nan
    np.savez(repo_copy / "data/raw/bad.npz", images=images, labels=raw.labels)
    run(["dvc", "add", "data/raw/bad.npz"], repo_copy)  # the documented way (data/raw/README.md)
    set_params(repo_copy, {"data": {"source": "npz:data/raw/bad.npz", "pixel_range": [0.0, 16.0]}})

    committed = {p: p.read_text() for p in repo_copy.glob("metrics/*.json")}
    weights = {p: p.read_bytes() for p in repo_copy.glob("models/*/model.safetensors")}  # the committed references
    out = run(["dvc", "repro"], repo_copy, check=False)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "NaN" in message or "nan" in message
    assert "bad-000007" in message  # the offending sample is named
    for never in ("registry/evaluator.json", "mlflow.db", "data/partitions", "reports/partition", "models/vq"):
        assert not (repo_copy / never).exists(), never
    assert weights and {p: p.read_bytes() for p in weights} == weights  # the fixed networks untouched
    # Metrics a clone carries are untouched: nothing was evaluated.
    assert {p: p.read_text() for p in committed} == committed
    summary = json.loads((repo_copy / "reports/validation/summary.json").read_text())
    assert summary["success"] is False


def test_own_data_is_versioned_one_changed_byte_reruns_prepare(repo_copy):
    """data/raw under `dvc add` is a dependency of prepare: DVC sees a one-byte change."""
    from embedlab.data.sources import load_digits_source

    raw = load_digits_source()
    images = np.stack(raw.images).astype(np.uint8)
    np.savez(repo_copy / "data/raw/mine.npz", images=images, labels=raw.labels)
    run(["dvc", "add", "data/raw/mine.npz"], repo_copy)
    tracked = (repo_copy / "data/raw/mine.npz.dvc").read_text()
    set_params(repo_copy, {"data": {"source": "npz:data/raw/mine.npz", "pixel_range": [0.0, 16.0]}})
    assert "Running stage 'prepare'" in run(["dvc", "repro", "prepare"], repo_copy).stdout
    assert "up to date" in run(["dvc", "status", "prepare"], repo_copy).stdout
    first = np.load(repo_copy / "data/prepared/images.npy")

    images[0, 3, 3] ^= 1  # one bit of one pixel of one image
    np.savez(repo_copy / "data/raw/mine.npz", images=images, labels=raw.labels)
    status = run(["dvc", "status", "prepare"], repo_copy).stdout
    assert re.search(r"prepare:\s+changed deps:\s+modified:\s+data/raw", status), status
    again = run(["dvc", "repro", "prepare"], repo_copy).stdout
    assert "Running stage 'prepare'" in again
    second = np.load(repo_copy / "data/prepared/images.npy")
    assert (first != second).sum() >= 1 and np.array_equal(np.delete(first, 0, 0), np.delete(second, 0, 0))
    # repro also re-records the data's hash: committing mine.npz.dvc versions the new bytes
    assert (repo_copy / "data/raw/mine.npz.dvc").read_text() != tracked

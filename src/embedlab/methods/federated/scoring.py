"""evaluate@federated: test accuracy of every trained run, tables over seeds, plots; export and
load_bundle for the registry.

The test split is read here only. Each run's final networks are rebuilt from runs.safetensors and
scored on every client's own test shard:
  feature_shift.accuracy  mean over clients of per-client test accuracy
  label_skew.accuracy     pooled test accuracy (all clients' test shards: the whole test split)
Means over seeds with their intervals; for each method pair, the per-seed paired gains.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from embedlab.evaluation.claims import precondition, verdict
from embedlab.evaluation.intervals import mean_interval, over_seeds, score, wilson
from embedlab.io import load_tensors, write_json_atomic
from embedlab.methods.base import ModelBundle
from embedlab.methods.federated.engine import accuracies, build_model
from embedlab.methods.federated.parts import EMBEDDING_DIR, NAME, PRIMARY_METRIC, Job, job_clients, label_skew_settings, load_runs
from embedlab.methods.federated.plots import plot_all
from embedlab.params import Params
from embedlab.paths import Paths

MARGIN = 0.005  # accuracy differences inside +-0.5 points count as no effect
ROOM = 0.05     # the precondition: what the baseline must leave to fix before a claim is tested
FS_PAIRS = (("fraug", "fedbn"), ("fedbn", "fedavg"), ("fedprox", "fedavg"), ("fedbn", "local"), ("ggeur", "fedavg_head"))
LS_PAIRS = (("fedavg_ggeur", "fedavg"), ("fedprox_ggeur", "fedprox"), ("fedprox", "fedavg"))


def _rebuild(run: dict, states: dict) -> torch.nn.Module:
    net = build_model(run["config"]["model"], len(run["clients"]))
    net.load_state_dict(states["net"])
    return net


def score_run(run: dict, states: dict, params: Params, root: Path) -> tuple[list[float], list[int]]:
    """Each client's test accuracy, and its number of test samples."""
    job = Job(**run["job"])
    clients, _ = job_clients(params, root, job, "test", run["config"]["model"]["num_classes"])
    return accuracies(_rebuild(run, states), clients), [len(c.y_eval) for c in clients]


def _r(x: float) -> float | None:
    """Rounded for the metrics file; None (JSON null) for a client that has no test samples."""
    return round(float(x), 4) if np.isfinite(x) else None


def _table(per_seed: dict[str, list[float]]) -> dict:
    """{"accuracy": {algorithm: mean over seeds with its t interval}} (evaluation.intervals)."""
    return {"accuracy": {a: over_seeds(v) for a, v in per_seed.items()}}


def _comparisons(per_seed: dict[str, list[float]], pairs, seeds, requires: dict | None = None) -> dict:
    """Paired verdicts (evaluation.claims) of a over b for every pair present."""
    out = {}
    for a, b in pairs:
        if a in per_seed and b in per_seed:
            out[f"{a}-{b}"] = verdict(per_seed[a], per_seed[b], claim=f"{a} is more accurate than {b}",
                                      metric="accuracy", arms=(a, b), margin=MARGIN, seeds=seeds,
                                      requires=(requires or {}).get((a, b)))
    return out


ROOMS = {
    # claim (a, b): the differences whose smallest mean is the room, and what it says
    ("fraug", "fedbn"): ([("fedbn", "fedavg"), ("fedbn", "local")],
                         "FedBN leaves room: min(fedbn - fedavg, fedbn - local) >= {room}"),
    ("fedavg_ggeur", "fedavg"): ([("central", "fedavg")],
                                 "FedAvg leaves room: central (one client holding every row) - fedavg >= {room}"),
}


def preconditions(val: dict[str, list[float]], test: dict[str, list[float]] | None = None) -> dict:
    """Does the setting leave the paper's effect room? Decided on val before any test score is
    read: the final-round val accuracy of each reported training seed's run. FRAug (over FedBN):
    the shift must defeat FedAvg and federating must pay over training alone, each by >= ROOM;
    GGEUR (over FedAvg): FedAvg must stay >= ROOM below the centralised ceiling (`central`: the
    same head and steps on every client's rows at once). Each difference carries its interval
    over seeds; the same room in the test scores is reported beside it (`test_value`), never as
    the gate."""
    out = {}
    for claim, (pairs, text) in ROOMS.items():
        names = {n for pair in pairs for n in pair}
        if not names <= set(val):
            continue
        differences = {}
        for a, b in pairs:
            mean, lo, hi = mean_interval([x - y for x, y in zip(val[a], val[b])])
            differences[f"{a} - {b}"] = score(mean, lo, hi, len(val[a]))
        # No val score (a run whose clients hold no val rows): the room is unknown, the claim untested.
        values = [d["value"] for d in differences.values()]
        room = float("nan") if None in values else min(values)
        test_room = min(float(np.mean(test[a]) - np.mean(test[b])) for a, b in pairs) \
            if test is not None and names <= set(test) else None
        out[claim] = precondition(text.format(room=ROOM), room, ROOM, test_value=test_room,
                                  decided_on="val: final-round val accuracy of the reported training seeds' runs",
                                  differences=differences)
    return out


def evaluate(params: Params, paths: Paths, evaluator: torch.nn.Module) -> dict:
    """`evaluator` is unused: these models classify for themselves, scored against test labels."""
    info, all_states = load_runs(paths.model_dir(NAME))
    f = params.federated
    per_seed: dict = defaultdict(lambda: defaultdict(list))  # (setting, size) -> algo -> [acc]
    val: dict = defaultdict(lambda: defaultdict(list))  # the same runs' final-round val accuracy
    per_client: dict = defaultdict(lambda: defaultdict(list))
    curves: dict = defaultdict(lambda: defaultdict(list))
    nbytes: dict = defaultdict(dict)
    seconds: dict = defaultdict(float)
    for run in info["runs"]:
        job = run["job"]
        accs, sizes = score_run(run, all_states[run["key"]], params, paths.root)
        if job["setting"] == "feature_shift":
            value = float(np.nanmean(accs))
        else:  # pooled over the clients' test shards (a client without test samples adds nothing)
            sizes = np.asarray(sizes)
            held = sizes > 0
            value = float((np.asarray(accs)[held] * sizes[held]).sum() / sizes[held].sum())
        group = (job["setting"], job["size"])
        per_seed[group][job["algorithm"]].append(value)
        val[group][job["algorithm"]].append(float(run["val_curve"][-1]))
        per_client[group][job["algorithm"]].append(accs)
        curves[group][job["algorithm"]].append(run["val_curve"])
        nbytes[group][job["algorithm"]] = {"per_round": run["bytes_per_round"], "setup": run["setup_bytes"]}
        seconds[job["algorithm"]] += run["seconds"]

    def block(group, pairs, names_for):
        seeds = per_seed[group]
        out = _table(seeds)
        out["comparisons"] = _comparisons(seeds, pairs, list(f.seeds), preconditions(val[group], seeds))
        out["per_client"] = {a: dict(zip(names_for, [_r(x) for x in np.nanmean(v, axis=0)])) for a, v in per_client[group].items()}
        out["bytes_per_round"] = {a: b["per_round"] for a, b in nbytes[group].items()}
        out["setup_bytes"] = {a: b["setup"] for a, b in nbytes[group].items() if b["setup"]}
        out["per_seed"] = {a: [_r(x) for x in v] for a, v in seeds.items()}
        return out

    fs_names = [str(n) for n in np.load(paths.partitions / "feature_shift.npz")["client_names"]]
    fs = f.feature_shift
    by_size = {str(n): block(("feature_shift", n), FS_PAIRS, fs_names) for n in fs.sizes}
    metrics: dict = {"feature_shift": {"samples_per_client": fs.samples_per_client, **by_size[str(fs.samples_per_client)],
                                       "by_size": {n: {k: b[k] for k in ("accuracy", "comparisons")}
                                                   for n, b in by_size.items()}}}
    settings = label_skew_settings(params)
    by_alpha = {}
    for setting, alpha in settings.items():
        names = [str(n) for n in np.load(paths.partitions / f"{setting}.npz")["client_names"]]
        by_alpha[f"{alpha:g}"] = block((setting, 0), LS_PAIRS, names)
    default = f"{params.partition.label_skew.alpha:g}"
    metrics["label_skew"] = {"alpha": params.partition.label_skew.alpha, **by_alpha[default],
                             "by_alpha": {a: {k: b[k] for k in ("accuracy", "comparisons")}
                                          for a, b in by_alpha.items()}}
    claims = {"fraug_vs_fedbn": metrics["feature_shift"]["comparisons"].get("fraug-fedbn"),
              "ggeur_vs_fedavg": metrics["label_skew"]["comparisons"].get("fedavg_ggeur-fedavg")}
    metrics["claims"] = {name: claim for name, claim in claims.items() if claim is not None}
    metrics["tuning"] = {
        "budget": {arm: len(t["configs"]) for arm, t in info["tuning"].items()},
        "note": "every tuned arm gets the same number of configurations on val (selection seeds): local, fedavg, "
                "fedprox and fedbn their own training configuration, fraug its own on top of fedbn's; the "
                "linear-head runs on feature shift (fedavg_head, ggeur) train with fedbn's",
        **info["tuning"],
    }
    metrics["embedding"] = f.embedding.model_dump()
    metrics["published"] = published_variant(info, params)
    metrics["published"]["accuracy"] = _published_accuracy(metrics["published"], info, all_states, params, paths.root)
    metrics["intervals"] = {"accuracy": "seeds", "comparisons": "paired", "published.accuracy": "wilson"}
    metrics["seeds"] = list(f.seeds)
    metrics["wall_seconds"] = {"train": info["wall_seconds"], **{a: round(s, 1) for a, s in seconds.items()}}
    write_json_atomic(paths.metrics(NAME), metrics)

    plot_all(paths.plots(NAME), curves, per_client, metrics, fs, settings, params)
    return metrics


# ---- registry -------------------------------------------------------------------------------


class _Personalised(torch.nn.Module):
    """The published feature-shift program: every client's personalised network, stacked.
    Input (B, K, C, S, S): column k holds images for client k; output (B, K, classes) logits.
    (Batch first, so the registry's free batch dimension is B.)"""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(0, 1)).transpose(0, 1)


def published_variant(info: dict, params: Params) -> dict:
    """What publish registers, chosen on the val split (never test): per setting, the algorithm
    with the highest final-round val accuracy averaged over seeds (feature shift at the default
    size, label skew at the default alpha), and its run at the first seed."""
    f = params.federated
    seed = f.seeds[0]
    size = f.feature_shift.samples_per_client
    final: dict = defaultdict(lambda: defaultdict(list))
    for run in info["runs"]:
        job = run["job"]
        if job["setting"] in ("feature_shift", "label_skew") and job["size"] in (size, 0):
            final[job["setting"]][job["algorithm"]].append(run["val_curve"][-1])
    chosen = {}
    for setting, candidates in (("feature_shift", f.feature_shift.algorithms), ("label_skew", None)):
        table = {a: float(np.mean(v)) for a, v in final[setting].items()
                 if (candidates is None and a != "central") or (candidates is not None and a in candidates)}
        algo = max(table, key=lambda a: (table[a], a))
        n = size if setting == "feature_shift" else 0
        chosen[setting] = {"algorithm": algo, "run": f"{setting}/{algo}/n{n}/s{seed}",
                           "val_accuracy": round(table[algo], 4)}
    return {"chosen_by": "final-round val accuracy, mean over seeds", "seed": seed, **chosen}


def _published_accuracy(published: dict, info: dict, all_states: dict, params: Params, root: Path) -> dict:
    """Test accuracy of the published feature-shift run itself: every client's test shard
    pooled, with a Wilson interval. The registry gates on exactly this."""
    run = next(r for r in info["runs"] if r["key"] == published["feature_shift"]["run"])
    accs, sizes = score_run(run, all_states[run["key"]], params, root)
    sizes = np.asarray(sizes)
    correct = int(round(float(np.nansum(np.asarray(accs) * sizes))))
    lo, hi = wilson(correct, int(sizes.sum()))
    return score(correct / sizes.sum(), lo, hi, int(sizes.sum()))


def export(params: Params, paths: Paths):
    model_dir = paths.model_dir(NAME)
    metrics = json.loads(paths.metrics(NAME).read_text())
    info, all_states = load_runs(model_dir)
    published = metrics["published"]  # chosen on val by evaluate (published_variant)
    chosen = {setting: published[setting]["run"] for setting in ("feature_shift", "label_skew")}
    runs = {r["key"]: r for r in info["runs"]}
    # The bundle's files are made by publish (models/federated is train's output and must not change).
    files = {f"{setting}.safetensors": all_states[key] for setting, key in chosen.items()}
    files["config.json"] = {
        "published": chosen,
        "feature_shift": {"clients": runs[chosen["feature_shift"]]["clients"], "model": runs[chosen["feature_shift"]]["config"]["model"],
                          "per_client_keys": runs[chosen["feature_shift"]]["local_keys"],
                          "note": "global parts are shared by every client; per_client_keys (normalisation layers "
                                  "for fedbn/fraug) and FRAug's RTNet stay with each client: slot k is client k"},
        "label_skew": {"model": runs[chosen["label_skew"]]["config"]["model"],
                       "embedding": params.federated.embedding.model_dump(),
                       "note": "one global linear head over frozen embeddings: source vq = the given tokenizer's encoder "
                               "(models/tokenizer), its latent grid flattened; backbone = models/backbone's features"},
    }
    # The frozen embedder the label-skew head classifies, so the bundle stands alone.

    emb = model_dir / EMBEDDING_DIR
    files["embedding.safetensors"] = load_tensors(next(p for p in sorted(emb.glob("*.safetensors"))))
    files["embedding.json"] = {"source": json.loads((emb / "source.json").read_text()),
                               "config": json.loads((emb / "config.json").read_text())}
    net = _rebuild(runs[chosen["feature_shift"]], all_states[chosen["feature_shift"]])
    k = len(runs[chosen["feature_shift"]]["clients"])
    s, c = info["image_size"], runs[chosen["feature_shift"]]["config"]["model"].get("channels", 1)
    example = torch.randn(2, k, c, s, s, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float32)
    return ModelBundle(
        module=_Personalised(net), input_example=example, primary_metric=PRIMARY_METRIC,
        metrics=metrics, params=params.federated.model_dump(), files=files,
        limits="Clients are synthetic domains of one digit set (feature shift) or Dirichlet label splits; slot k "
               "of the program expects images of client k's domain.",
        description=(f"feature shift: {published['feature_shift']['algorithm']} (seed {published['seed']}), "
                     f"label skew head: {published['label_skew']['algorithm']}; chosen by {published['chosen_by']}"),
    )


def load_bundle(bundle_dir: Path, device="cpu") -> dict[str, torch.nn.Module]:
    """The published networks from a downloaded bundle (`registry.download_bundle`):
    "feature_shift" -> every client's personalised CNN, stacked (slot k = client k, in
    config["feature_shift"]["clients"] order); "label_skew" -> the global linear head over the
    embeddings config["label_skew"]["embedding"] names, stacked once per client (all slots equal);
    "embedding" -> that frozen embedder, images (B, C, S, S) -> (B, d)."""
    config = json.loads((Path(bundle_dir) / "config.json").read_text())
    nets = {}
    if (Path(bundle_dir) / "embedding.json").exists():  # what the label-skew head classifies
        from embedlab.embedders import build_embedding

        emb = json.loads((Path(bundle_dir) / "embedding.json").read_text())
        nets["embedding"] = build_embedding(emb["source"]["source"], emb["config"],
                                            Path(bundle_dir) / "embedding.safetensors", device).to(device)
    for setting in ("feature_shift", "label_skew"):
        states = load_tensors(Path(bundle_dir) / f"{setting}.safetensors", device)
        first = next(iter(states["net"].values()))
        clients = len(config[setting].get("clients", [])) or first.shape[0]
        net = build_model(config[setting]["model"], clients)
        net.load_state_dict(states["net"])
        nets[setting] = net.to(device).eval()
    return nets

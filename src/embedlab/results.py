"""Results tables rendered from metrics/*.json into the docs, between marker comments:

    <!-- results:claims -->
    ...generated, never edited by hand...
    <!-- /results:claims -->

`embedlab results` rewrites every marked block of README.md and docs/**/*.md; `--check`
exits non-zero when a committed page differs from what the metrics render (a test runs it),
so no number in the docs can drift from the pipeline's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from embedlab.methods.federated.params import TUNED_ARMS

MARKER = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


class ResultsError(RuntimeError):
    """A page asks for a table that does not exist, or a metrics file is missing."""


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.1f}"
        return f"{x:.{digits}f}"
    return str(x)


def score(entry, digits: int = 3) -> str:
    """A score as `value [lo, hi]`; a plain number as itself."""
    if isinstance(entry, dict) and "value" in entry:
        if entry.get("lo") is None:
            return fmt(entry["value"], digits)
        return f"{fmt(entry['value'], digits)} [{fmt(entry['lo'], digits)}, {fmt(entry['hi'], digits)}]"
    return fmt(entry, digits)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _load(root: Path, name: str) -> dict:
    path = root / "metrics" / f"{name}.json"
    if not path.exists():
        raise ResultsError(f"{path}: missing; run `dvc repro evaluate@{name}`")
    return json.loads(path.read_text())


# --- the tables -------------------------------------------------------------------------------

METHODS = ("diffusion", "gan", "vq", "federated")


def claims_table(root: Path, methods: tuple[str, ...] = METHODS) -> str:
    rows = []
    for method in methods:
        m = _load(root, method)
        for c in m.get("claims", {}).values():
            d = c["difference"]
            pre = c.get("precondition")
            rows.append([method, c["claim"], c["metric"], criterion(c),
                         f"{fmt(d['value'], 4)} [{fmt(d['lo'], 4)}, {fmt(d['hi'], 4)}]",
                         f"{c['wins']} of {d['n']}", "-" if pre is None else ("met" if pre["met"] else "**not met**"),
                         f"**{c['verdict']}**"])
        # Claims this run left to the paper preset (`not_run`, the reason in the metrics file).
        for key in m.get("not_run", {}):
            if "_vs_" in key:
                rows.append([method, f"`{key}`", "-", "-", "-", "-", "-", "not run: the paper preset (`make run-paper`)"])
    return table(["method", "claim", "metric", "test (margin)", "paired difference (favours a when > 0) [95% CI]",
                  "seeds a ahead", "precondition", "verdict"], rows)


def criterion(claim: dict) -> str:
    """What the interval must show, with the claim's margin (evaluation/claims.py)."""
    margin = fmt(claim.get("margin", 0.0), 4)
    if claim.get("kind") == "noninferior":
        return f"non-inferior: lo > -{margin}"
    return f"superior: lo > 0, not inside ±{margin}" if claim.get("margin") else "superior: lo > 0"


def preconditions_table(root: Path, methods: tuple[str, ...] = METHODS) -> str:
    rows = []
    for method in methods:
        for key, c in _load(root, method).get("claims", {}).items():
            pre = c.get("precondition")
            if pre is None:
                continue
            for check in pre.get("checks", [pre]):
                rows.append([method, key, check["description"], check.get("decided_on", "-"),
                             fmt(check["value"], 4), fmt(check["threshold"], 4),
                             "met" if check["met"] else "**not met**", fmt(check.get("test_value"), 4)])
    return table(["method", "claim", "precondition", "decided on", "measured (decides)", "threshold", "",
                  "same on test (a check, never the gate)"], rows)


def references_table(root: Path) -> str:
    rows = []
    for name in ("evaluator", "backbone"):
        m = _load(root, name)
        rows.append([name, score(m["test_accuracy"], 4), score(m["confident_share_test"], 3),
                     score(m["train_accuracy"], 4), fmt(m["num_params"]), f"`{m['weights']['sha256']}`"])
    return table(["network", "test accuracy", "confident share, test (>= 0.9)", "train accuracy", "params",
                  "weights sha256"], rows)


def floor_table(root: Path) -> str:
    m = _load(root, "evaluator")["real_floor"]
    return table(["real train images vs val + test, N = " + fmt(m["fd"]["n"]), "FD", "KID", "confident share"],
                 [["the evaluator's real-data floor", score(m["fd"], 2), score(m["kid"], 4), score(m["confident_share"])]])


def diffusion_table(root: Path) -> str:
    m = _load(root, "diffusion")
    arms = ["unguided", "naive", "supervised", "ppap", "cfg", "real"]
    rows = []
    for arm in arms:
        if arm not in m["fd"]:
            continue
        seeds = m["fd"][arm].get("seeds")
        rows.append([arm if arm != "real" else "real (train, same N)", score(m["guided_accuracy"].get(arm)),
                     score(m["fd"][arm], 1), score(m["kid"][arm], 4), score(m["confident_share"][arm]),
                     fmt(seeds) if seeds else "-"])
    rows.append(["real test split", "-", "-", "-", score(m["confident_share"]["real_test"]), "-"])
    return table(["arm", "guided accuracy", "FD", "KID", "confident share", "training seeds"], rows)


def diffusion_budget_table(root: Path) -> str:
    """PPAP against the supervised experts per expert budget (benchmarks/diffusion_budget.py)."""
    path = root / "benchmarks" / "results" / "diffusion_budget.json"
    if not path.exists():
        raise ResultsError(f"{path} is missing: run benchmarks/diffusion_budget.py")
    rows = []
    for r in json.loads(path.read_text())["rows"]:
        rows.append([f"{r['steps']} x {r['batch_size']}", fmt(r["compute_vs_paper"], 2), fmt(r["n"]),
                     score(r["ppap"]), score(r["supervised"]), score(r["difference"], 4),
                     f"**{r['verdict']}**", fmt(r["seconds_per_fit"], 1), fmt(r["train_seconds"], 1),
                     f"`{r['commit']}`"])
    return table(["expert steps x batch", "compute (paper = 1)", "N", "ppap guided accuracy",
                  "supervised", "ppap - supervised [95% CI] (margin 0.05)", "verdict", "s per fit",
                  "train@diffusion (s)", "metrics at"], rows)


def gan_table(root: Path) -> str:
    m = _load(root, "gan")
    rows = []
    order = ["dcgan", "maf", "maf+disomap", "maf+disomap+dlle", "mee", "real", "untrained"]
    for bench, label in (("stacked", "stacked, weakened D"), ("stacked_full", "stacked, full D"),
                         ("ring", "ring (8)"), ("grid", "grid (25)")):
        if bench not in m:
            if bench in m.get("not_run", {}):
                rows.append([label, "-", "not run in the CPU default (`make run-paper` runs it)", "-", "-"])
            continue
        merged = {**m[bench].get("modes_covered", {}), **m.get("ablation", {}).get(bench, {}).get("modes_covered", {})}
        share_key = "confident_share" if "confident_share" in m[bench] else "high_quality"
        shares = {**m[bench].get(share_key, {}), **m.get("ablation", {}).get(bench, {}).get(share_key, {})}
        for arm in order:
            if arm in merged:
                rows.append([label, arm, score(merged[arm], 1), score(shares.get(arm)), fmt(m[bench].get("min_count"))])
    return table(["benchmark", "arm", "modes covered (confident, >= min count)", "confident share (2-D: high quality)",
                  "min count"], rows)


def gan_digits_table(root: Path) -> str:
    m = _load(root, "gan")["digits"]
    rows = [[arm, score(m["fd"][arm], 1), score(m["kid"][arm], 4), score(m["confident_share"][arm])]
            for arm in ("dcgan", "maf", "mee", "real", "untrained") if arm in m["fd"]]
    return table(["arm (plain digits)", "FD", "KID", "confident share"], rows)


def vq_table(root: Path) -> str:
    m = _load(root, "vq")
    rows = [[kind if kind != "real" else "real (train, same N)", score(m["fd"][kind], 1), score(m["kid"][kind], 4),
             score(m["class_accuracy"][kind]), score(m["confident_share"][kind])] for kind in ("resgen", "ar", "real")
            if kind in m["fd"]]  # ar: with vq.ar_baseline (the paper preset)
    return table(["prior", "FD", "KID", "class accuracy", "confident share"], rows)


def vq_depth_table(root: Path) -> str:
    m = _load(root, "vq")
    depths = sorted(m["psnr"], key=lambda d: int(d[1:]))
    timing = m["sampling_seconds"]
    rows = [["test PSNR (dB), first d depths"] + [score(m["psnr"][d], 2) for d in depths]]
    for kind in ("resgen", "ar"):
        rows.append([f"{kind} sampling, s per 1,000"] + [fmt(timing[kind].get(d), 2) for d in depths])
    return table([""] + [f"d = {d[1:]}" for d in depths], rows)


def federated_table(root: Path) -> str:
    m = _load(root, "federated")
    fs, ls = m["feature_shift"]["accuracy"], m["label_skew"]["accuracy"]
    rows = [[f"feature shift, {m['feature_shift']['samples_per_client']} per client", a, score(v)] for a, v in fs.items()]
    rows += [[f"label skew, alpha {m['label_skew']['alpha']:g}", a, score(v)] for a, v in ls.items()]
    return table(["setting", "algorithm", "test accuracy (mean over seeds) [95% CI]"], rows)


def _federated_tuned(tuning: dict) -> list[tuple[str, dict]]:
    """(arm, its tuning record) for every tuned federated arm in metrics' `tuning`, in tuning order."""
    return [(arm, tuning[arm]) for arm in TUNED_ARMS if isinstance(tuning.get(arm), dict)]


def federated_tuning_table(root: Path) -> str:
    """Each tuned arm's val budget: every configuration with its val accuracy on the selection seeds."""
    t = _load(root, "federated").get("tuning", {})
    rows = []
    for arm, entry in _federated_tuned(t):
        for config, val in zip(entry["configs"], entry["val_accuracy"]):
            chosen = "**chosen**" if config == entry["chosen"] else ""
            rows.append([arm, ", ".join(f"{k} {v:g}" for k, v in config.items()), f"{val:.4f}", chosen])
    seeds = ", ".join(str(s) for s in t.get("fedbn", {}).get("seeds", []))
    return table(["arm", "configuration", f"final-round val accuracy (mean over selection seeds {seeds})", ""], rows)


def federated_sweep_table(root: Path) -> str:
    """Every size and alpha: the baselines' room and each claim's paired difference and verdict."""
    m = _load(root, "federated")
    rows = []
    settings = [(f"feature shift, {n} per client", b["comparisons"].get("fraug-fedbn"))
                for n, b in m["feature_shift"]["by_size"].items()]
    settings += [(f"label skew, alpha {a}", b["comparisons"].get("fedavg_ggeur-fedavg"))
                 for a, b in m["label_skew"]["by_alpha"].items()]
    for setting, c in settings:
        if c:
            pre = c.get("precondition", {})
            rows.append([setting, c["claim"], fmt(pre.get("value"), 4), fmt(pre.get("test_value"), 4),
                         score(c["difference"], 4), f"**{c['verdict']}**"])
    return table(["setting", "claim", "room on val (decides; >= 0.05)", "room on test (a check)",
                  "paired difference [95% CI]", "verdict"], rows)


def published_table(root: Path) -> str:
    rows = []
    for name in ("vq", "gan", "federated", "diffusion"):
        p = _load(root, name).get("published", {})
        metric = next((k for k in ("guided_accuracy", "modes_covered", "accuracy", "psnr") if k in p), None)
        variant = ", ".join(f"{k} {p[k]['algorithm'] if isinstance(p[k], dict) and 'algorithm' in p[k] else p[k]}"
                            for k in ("arm", "seed", "feature_shift") if k in p)
        rows.append([f"embedlab-{name}", variant, p.get("chosen_by", "-"), f"published.{metric}", score(p.get(metric))])
    return table(["registered model", "variant", "chosen by (never the test split or the evaluator)", "gated on",
                  "value [95% CI]"], rows)


def timing_table(root: Path) -> str:
    """Wall time per train stage as it recorded it (2-core CPU unless stated), and the given
    networks' one-off training, at the params the metrics were made with."""
    def minutes(x):
        return "-" if x is None else f"{x / 60:.1f} min"

    vq, gan, fed, diff = (_load(root, m) for m in ("vq", "gan", "federated", "diffusion"))
    vq_seeds = len(vq.get("training", {})) or "?"
    diff_seeds = diff.get("guided_accuracy", {}).get("ppap", {}).get("seeds", "?")
    stacked = gan.get("settings", {}).get("stacked", True)
    toy = gan.get("settings", {}).get("toy", True)  # metrics before gan.toy.run: the mixtures ran
    priors = "ResGen + AR priors" if "ar" in vq.get("per_seed", {"ar": None}) else "the ResGen prior (AR: the paper preset)"
    gan_trains = "tuning + reported runs: ring, grid, plain digits" if toy else "plain digits: one MEE run"
    gan_trains += ", stacked (weakened and full D)" if stacked else ""
    left = [name for name, ran in (("ring, grid", toy), ("stacked", stacked)) if not ran]
    gan_trains += f" ({', '.join(left)}: the paper preset)" if left else ""
    rows = [["pretrain_tokenizer (once per data set; weights in git)", "the RVQ tokenizer",
             minutes(vq.get("tokenizer", {}).get("wall_seconds"))],
            ["pretrain_ddpm (once per data set; weights in git)", "the unconditional DDPM PPAP guides",
             minutes(diff.get("ddpm", {}).get("wall_seconds"))],
            ["train@vq", f"{priors}, x {vq_seeds} training seeds", minutes(vq.get("train_wall_seconds"))],
            ["train@gan", gan_trains, minutes(gan.get("train_wall_seconds"))],
            ["train@federated", "val tuning + every setting, algorithm, size or alpha and seed",
             minutes(fed.get("wall_seconds", {}).get("train"))],
            ["train@diffusion", f"5 PPAP experts + 5 supervised experts + scale sweep, x {diff_seeds} training seeds",
             minutes(diff.get("wall_seconds", {}).get("train"))]]
    return table(["stage", "what it trains", "wall time"], rows)


def lookup(name: str) -> Callable[[Path], str] | None:
    """A table by marker name; `claims-<method>` and `preconditions-<method>` give one method's rows."""
    if name in TABLES:
        return TABLES[name]
    kind, _, method = name.partition("-")
    if kind in ("claims", "preconditions") and method in METHODS:
        table_fn = claims_table if kind == "claims" else preconditions_table
        return lambda root: table_fn(root, (method,))
    return None


def _edge(values: list, chosen) -> str:
    """The marker " (edge of the grid)" when `chosen` is the first or last of `values`."""
    return " (edge of the grid)" if values and chosen in (values[0], values[-1]) else ""


def tuning_table(root: Path) -> str:
    """Every tuned choice of every arm: what was tuned, how many configurations, on what, and
    the choice (marked where it sits at an edge of its grid)."""
    rows = []
    for arm, t in _federated_tuned(_load(root, "federated").get("tuning", {})):
        keys = ", ".join(sorted({k for c in t["configs"] for k in c}))
        seeds = ", ".join(str(x) for x in t.get("seeds", []))
        chosen = ", ".join(f"{k} {v:g}" for k, v in t["chosen"].items())
        rule, mark = f"final-round val accuracy, selection seeds {seeds}", _edge(t["configs"], t["chosen"])
        if "reference" in t:  # the one-standard-error rule (federated.method.choose)
            rule += ": the first unless another beats it by > 1 SE"
            if t["chosen"] == t["reference"]:
                mark = f" (the reference: none beat it by > {t['standard_error']:.4f})"
        rows.append(["federated", arm, keys, str(len(t["configs"])), rule, chosen + mark])
    gan = _load(root, "gan").get("tuning", {})
    for key, c in gan.get("chosen", {}).items():
        values = sorted(float(v) for v in gan["scores"][key])
        rows.append(["gan", key, c["key"], str(len(values)), "modes covered on the selection seed (mixture or backbone)",
                     f"{c['value']:g}" + _edge(values, float(c["value"]))])
    diff = _load(root, "diffusion")
    for arm, sweep in diff.get("sweep", {}).items():
        values = [r["scale"] for r in sweep["rows"]]
        chosen = {s: per[arm] for s, per in diff.get("scale", {}).items() if arm in per}
        text = ", ".join(f"seed {s}: {v:g}" for s, v in chosen.items())
        edges = sorted({_edge(values, v) for v in chosen.values()} - {""})
        rows.append(["diffusion", arm, "guidance scale", str(len(values)),
                     "backbone accuracy on selection-seed samples, per training seed (FD guard)",
                     text + (edges[0] if edges else "")])
    return table(["method", "arm", "tuned", "configurations", "chosen on", "chosen"], rows)


TABLES: dict[str, Callable[[Path], str]] = {
    "claims": claims_table, "preconditions": preconditions_table, "references": references_table,
    "floor": floor_table, "diffusion": diffusion_table, "gan": gan_table, "gan-digits": gan_digits_table,
    "vq": vq_table, "vq-depth": vq_depth_table, "federated": federated_table, "published": published_table,
    "federated-tuning": federated_tuning_table, "federated-sweep": federated_sweep_table,
    "timing": timing_table, "tuning": tuning_table, "diffusion-budget": diffusion_budget_table,
}


# --- pages ------------------------------------------------------------------------------------

def pages(root: Path) -> list[Path]:
    docs = root / "docs"
    return [root / "README.md"] + (sorted(docs.rglob("*.md")) if docs.is_dir() else [])


def render_page(text: str, root: Path, origin: str = "page") -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")
        render_table = lookup(name)
        if render_table is None:
            raise ResultsError(f"{origin}: unknown results table {name!r}; known: {', '.join(TABLES)}, "
                               f"claims-<method>, preconditions-<method> for {', '.join(METHODS)}")
        return f"{match.group(1)}{render_table(root)}\n{match.group(4)}"

    return MARKER.sub(replace, text)


def render(root: Path, check: bool = False) -> list[Path]:
    """Rewrite (or, with `check`, compare) every page; returns the pages that differ."""
    root = Path(root)
    stale = []
    for page in pages(root):
        text = page.read_text()
        new = render_page(text, root, str(page))
        if new != text:
            stale.append(page)
            if not check:
                page.write_text(new)
    return stale

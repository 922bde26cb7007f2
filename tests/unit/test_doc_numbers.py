"""Numbers in the docs' prose come from files (issue 29, item 6).

Tables between `<!-- results:NAME -->` markers are rendered from metrics/*.json
(tests/unit/test_results.py). Every other measured number a page quotes is one entry below:
(page, sentence template, source file, what to read, rounding). The template is the page's text
with `{}` where a number stands; the test reads the source, rounds each value as the page prints
it, fills the template and asserts the page contains the result (whitespace and line breaks
aside). A page that reworded the sentence fails with "moved"; a page whose number differs from
its source fails naming both.

Sources: a path in the repository; `<commit>:<path>` for a file as an older commit held it (the
findings a page dates to that commit; skipped where this clone's history lacks the commit); a
`.safetensors` file gives `{"num_params": ...}` from its header. Pipeline outputs that git does
not hold (DVC_OUTPUTS) are skipped when absent.

Rounding: a number of decimals, half away from zero on the JSON's decimal value (what a reader
of the JSON gets by hand); "e1" is scientific notation as the pages write it (1.7e-4); None
inserts the value as it is (strings, ints). Timing values of metrics/*.json are left out: they
change with every run, so pages do not quote them.
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DVC_OUTPUTS = {"reports/partition/summary.json"}  # written by `dvc repro partition`, not in git

README, EVALUATION, PIPELINE = "README.md", "docs/evaluation.md", "docs/pipeline.md"
DIFFUSION, GAN, FEDERATED, VQ = (f"docs/methods/{m}.md" for m in ("diffusion", "gan", "federated", "vq"))
BENCH = "benchmarks/README.md"

PPAP = "benchmarks/results/ppap_expert_step.json"
PINS = "benchmarks/results/numerics_pins.json"
ORCH = "benchmarks/results/orchestration.json"
INTERVALS = "benchmarks/results/distance_intervals.json"
DDPM = "benchmarks/results/ddpm_quality.json"
GAN_QUALITY = "benchmarks/results/gan_quality.json"
TOY = "benchmarks/results/gan_toy_longer.json"
PROFILE = "benchmarks/results/profile.json"
STACKING = "benchmarks/results/gan_stacking.json"
PROBES = "benchmarks/results/federated_probes.json"
MAKE_RUN = "benchmarks/results/make_run.json"
RESUME = "benchmarks/results/resume_diffusion.json"
MAKE_TEST = "benchmarks/results/make_test.json"
UTIL = "benchmarks/results/train_utilization.json"
SENSITIVITY = "benchmarks/results/kernel_sensitivity.json"
CROSS_HOST = "benchmarks/results/cross_host.json"
DISTANCE_SPEED = "benchmarks/results/distance_speed.json"
FED_PAPER = "644a64b:metrics/federated.json"  # the paper-budget findings docs/methods/federated.md dates to 644a64b


# --- helpers for derived values ---------------------------------------------------------------

def _profile_aten(d):
    shares = [s["aten_share_of_plain_step"] for s in d["step_overhead"].values()]
    return min(shares) * 100, max(shares) * 100


def _pins_row(setting):
    def read(d):
        rows = d["rows"]
        pinned = rows["pinned"]
        out = []
        for net in ("conv", "mlp", "transformer"):
            seconds = rows[setting]["seconds_per_step"][net]
            same = rows[setting]["weights_sha"][net] == pinned["weights_sha"][net]
            out += [seconds * 1000, seconds / pinned["seconds_per_step"][net], "same" if same else "**differ**"]
        return tuple(out)
    return read


def _make_run(d):
    stages = d["stage_seconds"]

    def total(prefix):
        return sum(v for k, v in stages.items() if k.startswith(prefix))

    return (f"{d['seconds']:,.0f}", round(d["seconds"] / 60, 1), total("train@"), total("evaluate@"),
            total("publish@"), stages["prepare + validate + partition"],
            f"{d['reproduced']['values compared (metrics/vq, gan, federated, diffusion .json, timings and host aside)']:,}")


def _import_ratios(d):
    """The AVX2 host's import times over the AVX-512 host's, lowest and highest, as the README prints them."""
    here, there = d["avx2_host"]["imports"]["seconds"], d["imports"]["seconds"]
    ratios = [here[m] / there[m] for m in here]
    return f"{min(ratios):.1f}", f"{max(ratios):.1f}"


def _make_run_total(d):
    return f"{d['seconds']:,.0f}"


def _orch_spread(d):
    spreads = [max(runs) - min(runs) for runs in d["seconds"].values()]
    return min(spreads), max(spreads)


def _interval_row(i):
    def read(d):
        s = d["settings"][i]
        return (s["mean_plugin_fd"], s["mean_fd"], s["mean_interval"][0], s["mean_interval"][1],
                round(s["fd_coverage"] * s["repeats"]), s["repeats"])
    return read


def _coverage_d8_64(d):
    cov = [s["fd_coverage"] * 100 for s in d["settings"] if s["d"] <= 64]
    return min(cov), max(cov)


def _ddpm_row(steps):
    def read(d):
        b = d["baseline"][steps]
        return (b["ddim20_unclamped"]["confident_share"], b["ddim20_clamped"]["confident_share"],
                b["ddim100_unclamped"]["confident_share"], b["ancestral1000"]["confident_share"])
    return read


def _mean(xs):
    return sum(xs) / len(xs)


def _toy(bench, arm, what):
    """gan_toy_longer.json: the 4x run's summary, and the pipeline's mean in brackets."""
    def read(d):
        longer, pipeline = d["results"][bench][arm], d["pipeline"][bench][arm]
        if what == "per_seed":
            return ", ".join(map(str, longer["modes_covered"])), ", ".join(map(str, pipeline["modes_covered"]))
        if what == "modes":
            s = longer["modes_covered_summary"]
            return s["mean"], s["std"], _mean(pipeline["modes_covered"])
        return longer["high_quality_summary"]["mean"], _mean(pipeline["high_quality"])
    return read


def _profile_row(kind, ms_digits):
    def read(d):
        before, after = (json.loads((ROOT / f"benchmarks/results/{f}.json").read_text())["step_overhead"][kind]
                         for f in ("profile_before", "profile"))
        return (before["plain"]["seconds_per_step"] * 1000, after["plain"]["seconds_per_step"] * 1000,
                before["lightning"]["seconds_per_step"] * 1000 if "lightning" in before else "—",
                after["lightning"]["seconds_per_step"] * 1000,
                before["aten_share_of_plain_step"] * 100, after["aten_share_of_plain_step"] * 100)
    return read


def _profile_ddpm_noise(d):
    """How far the DDPM's plain and Lightning steps moved between the two runs (its code did not)."""
    plain_before, plain_after, lightning_before, lightning_after = _profile_row("diffusion ddpm", 1)(d)[:4]
    return (100 * (max(plain_before, plain_after) / min(plain_before, plain_after) - 1),
            100 * (max(lightning_before, lightning_after) / min(lightning_before, lightning_after) - 1))


def _ddpm(d, variant, steps, sampler="ddim20_clamped"):
    return d[variant][steps][sampler]["confident_share"]


EMBEDDING = "released 512-d embedding (lr 0.1)"
OPTIMISER = "released classifier optimiser (lr 0.01, momentum 0.5, no decay)"


def _probe_deviation(name):
    return lambda d: tuple(d["fraug_deviations"][name]["mean"][k] for k in ("fraug lambda_FT 10", "fraug lambda_FT 1", "fedbn"))


def _regime_rooms(d):
    return tuple(r["room"]["fedbn-fedavg"] for r in d["regime"].values())


def _label_skew_rooms(d):
    return tuple(d["label_skew"][f"{r} rounds x 100 steps, alpha {a}"]["room"]["central-fedavg"] for r in (50, 10) for a in ("0.05", "0.1"))


def _stacking_drift(d):
    ring, conv = (d["same_numbers"][b]["first_step_losses_differ_by_1e-4"] for b in ("ring", "stacked_weak"))
    conv_steps = [x for k, v in conv.items() if k != "of_steps" for x in v]
    return ring["of_steps"], ring["maf+disomap+dlle"][0], ring["mee"][0], min(conv_steps), max(conv_steps)


def _fed_diff(*path):
    def read(d):
        c = _at(d, path)["difference"]
        return c["value"], c["lo"], c["hi"]
    return read


def _fed_gain(domain):
    return lambda d: d["feature_shift"]["per_client"]["fedbn"][domain] - d["feature_shift"]["per_client"]["fedavg"][domain]


def _tuning_spread(d):
    spreads = [max(d["tuning"][a]["val_accuracy"]) - min(d["tuning"][a]["val_accuracy"]) for a in ("fedavg", "fedprox", "fedbn")]
    return min(spreads), max(spreads)


def _inside_grid(d):
    arms = [t for a, t in d["tuning"].items() if a in ("local", "fedavg", "fedprox", "fedbn")]
    inside = all(t["chosen"] not in (t["configs"][0], t["configs"][-1]) for t in arms) and len(arms) == 4
    return "inside" if inside else "NOT inside"


def _test_sizes(d):
    clients = d["feature_shift"]["clients"]
    sizes = [c["test_size"] for c in clients if c["name"] != "synth"]
    return min(sizes), max(sizes), next(c["test_size"] for c in clients if c["name"] == "synth")


# --- the entries ------------------------------------------------------------------------------
# (page, template, source, path or function of the loaded source, rounding)

ENTRIES = [
    (BENCH, "AVX-512 (1,024 KB): {} of {} values differ; the whole `dvc repro` took {} s there", CROSS_HOST,
     lambda d: (d["differing"], f"{d['values_compared']:,}", f"{d['repro_seconds_this_host']:,}"), None),
    (BENCH, "side by side in one process: {}x faster at 538 against 500 generated images, {}x at 538 against 1,000, "
            "{}", DISTANCE_SPEED,
     lambda d: (*(f"{d['rows'][k]['speed_up']:.2f}" for k in ("538 vs 500", "538 vs 1000")),
                "every reported number equal" if all(r["largest_difference_in_a_reported_number"] == 0
                                                     for r in d["rows"].values()) else "numbers differ"), None),
    (EVALUATION, "gave every value of every metrics file again ({} of {} differ, timings and hosts aside", CROSS_HOST,
     lambda d: (d["differing"], f"{d['values_compared']:,}"), None),
    (README, "A whole `make run` on a fresh clone (set-up done) took {} s ({} min) on the AVX-512 2-core machine "
             "(`benchmarks/results/make_run.json`, each stage's time beside it): the train stages {} s, the "
             "evaluate stages {} s, the publish stages {} s, the data stages {} s; it reproduced all {} committed "
             "values", MAKE_RUN, _make_run, None),
    (PIPELINE, "(`make run` on a fresh clone: {} s, `benchmarks/results/make_run.json`", MAKE_RUN, _make_run_total, None),
    (PIPELINE, "and about {} on an AVX2-only one (a fresh checkout's `dvc repro`: {} s, `benchmarks/results/cross_host.json`",
     CROSS_HOST, lambda d: (round(d["repro_seconds_this_host"] / 60), f"{d['repro_seconds_this_host']:,}"), None),
    (PIPELINE, "`make run` on a fresh clone took {} s ({} min) on the AVX2-only host (`avx2_host` in `make_run.json`: train {} s, "
               "evaluate {} s, publish {} s, data {} s; {} of {} committed values differ)", MAKE_RUN,
     lambda d: (f"{d['avx2_host']['seconds']:,.0f}", round(d["avx2_host"]["seconds"] / 60, 1),
                *(f"{d['avx2_host']['parts'][k]:,.0f}" for k in ("train", "evaluate", "publish", "data")),
                *(f"{v:,}" for v in reversed(list(d["avx2_host"]["reproduced"].values())))), None),
    (PIPELINE, "train@diffusion killed with {} of its {} parts done resumed in {} s instead of {} s, same metrics", RESUME,
     lambda d: (d["parts_kept_at_kill"], d["parts"], round(d["resumed_stage_seconds"]), d["uninterrupted_stage_seconds"]),
     None),
    (README, "`make test` on a fresh clone took {} s on the AVX-512 2-core machine, installs included (pytest {} s;",
     MAKE_TEST, lambda d: (d["seconds"], d["pytest_seconds"]), 0),
    (README, "and {} s on an AVX2-only one, where imports take {}-{}x as long (pytest {} s;", MAKE_TEST,
     lambda d: (f"{d['avx2_host']['seconds']:,.0f}", *_import_ratios(d), f"{d['avx2_host']['pytest_seconds']:,.0f}"),
     None),
    (BENCH, "`make test` on a fresh clone took {} s here (pytest {} s, {} tests), against {} s at {}. The set-up "
            "accounts for {} s of that: the locked set through uv instead of pip, {} s against {} s for both "
            "environments", MAKE_TEST,
     lambda d: (round(d["seconds"]), round(d["pytest_seconds"]), d["tests"]["passed"], round(d["previous"]["seconds"]),
                d["previous"]["commit"], round(d["setup"]["pip_seconds"] - d["setup"]["uv_seconds"]),
                d["setup"]["uv_seconds"], d["setup"]["pip_seconds"]), None),
    (BENCH, "The Flower suite runs on its own after the set-up: {} s wall for {} s of CPU", MAKE_TEST,
     lambda d: (d["flower"]["wall_seconds"], d["flower"]["cpu_seconds"]), 1),
    (BENCH, "the two whole tiny pipelines (colour {} s, the shared one {} s)", MAKE_TEST,
     lambda d: (d["slowest_10"][0]["seconds"], d["slowest_10"][1]["seconds"]), 0),
    (BENCH, "Alone on the machine the tiny pipeline took {} s, {} s of it in the six publish stages", MAKE_TEST,
     lambda d: (d["tiny_pipeline"]["seconds"],
                sum(v for k, v in d["tiny_pipeline"]["stage_seconds"].items() if k.startswith("publish@"))), 1),
    (BENCH, "every stage process spends {} s importing torch, a train stage {} s with Lightning", MAKE_TEST,
     lambda d: (d["imports"]["seconds"]["torch"], d["imports"]["seconds"]["lightning"]), 2),
    (BENCH, "kept the two cores busy (CPU seconds over 2 x wall) {}%, {}%, {}% and {}% of the time (diffusion, "
            "federated, gan, vq)", UTIL,
     lambda d: tuple(d["stages"][f"train@{m}"]["busy"] * 100 for m in ("diffusion", "federated", "gan", "vq")), 1),
    (BENCH, "timed train@diffusion at {} s against {} s pinned", SENSITIVITY,
     lambda d: (d["stage_seconds_avx512"]["train@diffusion"], round(d["stage_seconds_pinned_alone"]["train@diffusion"])),
     None),
    (EVALUATION, "the choices agreed for {} of the 5 arms instead of {} (FedAvg's and FRAug's still\n  differed), {} of "
                 "the {} federated scores left their committed intervals", SENSITIVITY,
     lambda d: (d["federated_one_se_rule"]["choices_same"], d["federated_one_se_rule"]["choices_same_argmax"],
                len(d["federated_one_se_rule"]["new_value_outside_committed_interval"]),
                d["federated_one_se_rule"]["scores_with_interval"]), None),
    (EVALUATION, "{} of {} values changed, all {} verdicts and every precondition stayed", SENSITIVITY,
     lambda d: (sum(m["differing"] for m in d["methods"].values()),
                f"{sum(m['values_compared'] for m in d['methods'].values()):,}",
                d["verdicts"] if d["verdicts_same"] == d["verdicts"] else "NOT ALL"), None),
    (EVALUATION, "every score stayed inside its committed interval but {}, all FRAug's", SENSITIVITY,
     lambda d: sum(len(m["new_value_outside_committed_interval"]) for m in d["methods"].values()), None),
    (EVALUATION, "its accuracy {} -> {} (committed interval [{}, {}]) and its paired difference to FedBN {} -> {}",
     SENSITIVITY, lambda d: (*d["methods"]["federated"]["new_value_outside_committed_interval"][0][1:3],
                             *d["methods"]["federated"]["new_value_outside_committed_interval"][0][3],
                             *d["methods"]["federated"]["new_value_outside_committed_interval"][1][1:3]), None),
    (EVALUATION, "(FedAvg at lr 0.1: {} on one, {} on the other)", SENSITIVITY,
     lambda d: (d["federated_tuning"]["fedavg"]["committed"][1], d["federated_tuning"]["fedavg"]["avx512"][1]), None),
    # README.md
    (README, "(the big jobs are {}-{}% arithmetic on this CPU)", PROFILE, _profile_aten, 0),
    (README, "`benchmarks/gan_stacking.py` ({}x on the 2-D mixtures)", STACKING, ("ring_all_arms_x_seeds", "speedup"), 2),

    # docs/pipeline.md
    (PIPELINE, "(then its four train stages alone took {} min on 2 cores", PROFILE,
     lambda d: sum(r["stage_seconds"] for r in d["recorded"].values()) / 60, 0),
    (PIPELINE, "the {}-stage DAG on the tests' tiny budgets, every stage forced, {} runs per arm", ORCH,
     lambda d: (d["stages"], d["runs_per_arm"]), None),
    (PIPELINE, "`dvc repro` {} s, the Prefect flow {} s, i.e. +{}%", ORCH,
     lambda d: (d["mean_seconds"]["dvc_repro"], d["mean_seconds"]["prefect_flow"], d["orchestration_overhead_fraction"] * 100), 1),
    (PIPELINE, "within the run-to-run spread of one arm ({}-{} s)", ORCH, _orch_spread, 0),
    (PIPELINE, "one DVC start-up per stage adds +{}% of it; {} ms per task", ORCH,
     lambda d: (d["per_stage_dvc_startup_fraction"] * 100, d["prefect_per_task_overhead_seconds"] * 1000), 1),

    # docs/evaluation.md
    (EVALUATION, "the **reference set, val + test together** ({} images)", "metrics/evaluator.json",
     lambda d: d["val_accuracy"]["n"] + d["test_accuracy"]["n"], None),
    (EVALUATION, "Gaussians with a known FD): {}-{}% at d = 8-64", INTERVALS, _coverage_d8_64, (1, 0)),
    (EVALUATION, "at d = 128 with {} reference images a residual bias of about {} remains (coverage {}% of the true 0)",
     INTERVALS, lambda d: (d["settings"][4]["reference"], d["settings"][4]["mean_fd"], d["settings"][4]["fd_coverage"] * 100), 0),
    (EVALUATION, "early stopping on val accuracy over {} images (steps of 1/{})", "metrics/evaluator.json",
     lambda d: (d["val_accuracy"]["n"], d["val_accuracy"]["n"]), None),

    # docs/methods/diffusion.md
    (DIFFUSION, "channels ({}k parameters)", "models/ddpm/ddpm_uncond.safetensors", lambda d: d["num_params"] / 1000, 0),
    (DIFFUSION, "a {}k-parameter UNet", "models/ddpm/ddpm_uncond.safetensors", lambda d: d["num_params"] / 1000, 0),
    (DIFFUSION, "with the logits table, {}x faster per expert step", PPAP, ("variants", "teacher cached + merged LoRA", "speedup"), 1),
    (DIFFUSION, "sampling seed 0 (training seed {}); the real test split reads {} confident", DDPM,
     lambda d: (d["baseline"]["spec"]["seed"], d["real_test"]["confident_share"]), (None, 3)),
    (DIFFUSION, "| 1,500 steps (the old default) | {} (high-frequency energy {}; real {}) | {} ({}) | {} | {} |", DDPM,
     lambda d: (d["baseline"]["1500"]["ddim20_unclamped"]["confident_share"], d["baseline"]["1500"]["ddim20_unclamped"]["high_frequency"],
                d["real_test"]["high_frequency"], d["baseline"]["1500"]["ddim20_clamped"]["confident_share"],
                d["baseline"]["1500"]["ddim20_clamped"]["high_frequency"], d["baseline"]["1500"]["ddim100_unclamped"]["confident_share"],
                d["baseline"]["1500"]["ancestral1000"]["confident_share"]), 2),
    (DIFFUSION, "| 3,000 steps | {} | {} | {} | {} |", DDPM, _ddpm_row("3000"), 2),
    (DIFFUSION, "| 6,000 steps | {} | {} | {} | {} |", DDPM, _ddpm_row("6000"), 2),
    (DIFFUSION, "(high-frequency energy {}x the real images'", DDPM,
     lambda d: d["baseline"]["1500"]["ddim20_unclamped"]["high_frequency"] / d["real_test"]["high_frequency"], 1),
    (DIFFUSION, "removes the static (energy {}, real {})", DDPM,
     lambda d: (d["baseline"]["1500"]["ddim20_clamped"]["high_frequency"], d["real_test"]["high_frequency"]), 2),
    (DIFFUSION, "1,500 steps -> 6,000 raised the confident share from {} to {}", DDPM,
     lambda d: (d["baseline"]["1500"]["ddim20_clamped"]["confident_share"], d["baseline"]["6000"]["ddim20_clamped"]["confident_share"]), 2),
    # the binomial standard error of a share near 0.88 over the 500 samples
    (DIFFUSION, "(no gain beyond the +-{} sampling noise of 500 samples)", DDPM,
     lambda d: math.sqrt((p := d["baseline"]["6000"]["ddim20_clamped"]["confident_share"]) * (1 - p) / 500), 3),
    (DIFFUSION, "the cosine schedule ({} vs {} at 3,000 steps), a cosine lr decay ({})", DDPM,
     lambda d: (d["cosine"]["3000"]["ddim20_clamped"]["confident_share"], d["baseline"]["3000"]["ddim20_clamped"]["confident_share"],
                d["lr_decay"]["3000"]["ddim20_clamped"]["confident_share"]), 2),
    (DIFFUSION, "Min-SNR-5 loss weights ({} at 3,000, {} at 6,000), EMA 0.999 ({} at 6,000 with bf16), lr 1e-3 ({})", DDPM,
     lambda d: (_ddpm(d, "min_snr5", "3000"), _ddpm(d, "min_snr5_6000", "6000"), _ddpm(d, "bf16_ema999", "6000"),
                _ddpm(d, "lr_1e-3", "3000")), 2),
    (DIFFUSION, "batch 64 with Min-SNR-5 at 6,000 steps ({}), a UNet of twice the channels (32/64/64, bf16) at 3,000 steps ({})", DDPM,
     lambda d: (_ddpm(d, "min_snr5_batch64", "6000"), _ddpm(d, "wide_bf16", "3000")), 2),

    # docs/methods/gan.md
    (GAN, "lowest of 3 seeds: dcgan {}, mee {}, below 0.5)", "07b2584:metrics/gan.json",
     lambda d: tuple(c["value"] for c in d["claims"]["mee_quality_vs_dcgan_digits"]["precondition"]["checks"]), 3),
    (GAN, "(dcgan {} s and mee {} s each, on train@gan's two workers, of its {} s; metrics/gan.json at commit 07b2584)",
     "07b2584:metrics/gan.json",
     lambda d: (d["wall_seconds"]["digits"]["dcgan"], d["wall_seconds"]["digits"]["mee"], d["train_wall_seconds"]), 0),
    (GAN, "they cost ~{} of train@gan's ~{} minutes on 2 cores", PROFILE,
     lambda d: (sum(d["recorded"]["gan"]["job_kinds"][k]["seconds_total"] for k in ("stacked_weak", "stacked_full")) / 60,
                d["recorded"]["gan"]["stage_seconds"] / 60), 0),
    (GAN, "(maf's confident channel share {}, below the 0.5 the stacked claim requires; metrics/gan.json at commit 7436d4b)",
     "7436d4b:metrics/gan.json", ("claims", "mee_vs_maf_stacked", "precondition", "checks", 1, "value"), 2),
    (GAN, "yet were counted as {}-{} \"modes\" (metrics/gan.json at commit dadfc57)", "dadfc57:metrics/gan.json",
     lambda d: (min(d["stacked"]["modes_covered"].values()), max(d["stacked"]["modes_covered"].values())), 0),
    (GAN, "({} / {} confident share for dcgan / mee at 8 channels and 2,400 steps, against {} / {} at 4)", GAN_QUALITY,
     lambda d: (d["stacked_weak:dcgan:2400:0.0002:8:16"]["confident_share"], d["stacked_weak:mee:2400:0.0002:8:16"]["confident_share"],
                d["stacked_weak:dcgan:2400:0.0002:4:16"]["confident_share"], d["stacked_weak:mee:2400:0.0002:4:16"]["confident_share"]), 2),
    (GAN, "(ring: maf covered {} of 8 modes on the selection seed, so it left MEE nothing to find; grid: maf and mee "
     "covered {} and {} of 25 modes on average, against the untrained generator's {}; metrics/gan.json at commit f98a41e)",
     "f98a41e:metrics/gan.json",
     lambda d: (d["claims"]["mee_vs_maf_ring"]["precondition"]["checks"][0]["value"], d["grid"]["modes_covered"]["maf"]["value"],
                d["grid"]["modes_covered"]["mee"]["value"], d["grid"]["modes_covered"]["untrained"]), (0, 1, 1, 0)),
    (GAN, "more than half of train@gan's {} s on 2 cores.", "f98a41e:metrics/gan.json", ("train_wall_seconds",), 0),
    (GAN, "at 4x the steps maf covered {} of the ring's 8 modes and {} of the grid's 25 on average", TOY,
     lambda d: tuple(d["results"][b]["maf"]["modes_covered_summary"]["mean"] for b in ("ring", "grid")), 1),
    (GAN, "samples moved by up to {} (`benchmarks/results/gan_stacking.json`)", STACKING,
     ("same_numbers", "stacked_weak", "max_abs_difference", "samples"), "e1"),
    (GAN, "(published confident share {} -> ", "9303daa:metrics/gan.json", ("published", "confident_share", "value"), 3),
    (GAN, " -> {}, metrics/gan.json at commits 9303daa and 97b916d)", "97b916d:metrics/gan.json",
     ("published", "confident_share", "value"), 3),

    # docs/methods/federated.md
    (FEDERATED, "source-derived domains share the {} digits", "reports/validation/summary.json", ("num_rows",), 0),
    (FEDERATED, "tests on the rest ({}-{} images; `synth` {})", "reports/partition/summary.json", _test_sizes, 0),
    (FEDERATED, "its own test shard ({}-{} images; `synth` {})", "reports/partition/summary.json", _test_sizes, 0),
    (FEDERATED, "(the whole test split, {} images)", "metrics/evaluator.json", ("test_samples",), None),
    (FEDERATED, "configurations whose val accuracies differ by {} to {} (table above)", "metrics/federated.json", _tuning_spread, 3),
    (FEDERATED, "the plain argmax chose {} every CNN arm's grid (metrics/federated.json at commit 8c4bd9b)",
     "8c4bd9b:metrics/federated.json", _inside_grid, None),
    (FEDERATED, "at 30 images per client FedBN - FedAvg = +{} [{}, {}]", FED_PAPER,
     _fed_diff("feature_shift", "comparisons", "fedbn-fedavg"), 3),
    (FEDERATED, "and FedBN - local = +{} [{}, {}];", FED_PAPER, _fed_diff("feature_shift", "comparisons", "fedbn-local"), 3),
    (FEDERATED, "at 100 per client +{} and +{}.", FED_PAPER,
     lambda d: tuple(_at(d, ("feature_shift", "by_size", "100", "comparisons", c, "difference", "value"))
                     for c in ("fedbn-fedavg", "fedbn-local")), 3),
    (FEDERATED, "FedBN beats training alone by only +{}", FED_PAPER,
     ("feature_shift", "by_size", "10", "comparisons", "fedbn-local", "difference", "value"), 3),
    (FEDERATED, "FedBN gains most on `svhn` (+{} over FedAvg) and `inverted` (+{})", FED_PAPER,
     lambda d: (_fed_gain("svhn")(d), _fed_gain("inverted")(d)), 3),
    (FEDERATED, "({} [{}, {}] and {} [{}, {}], every seed behind at 30)", FED_PAPER,
     lambda d: (*_fed_diff("feature_shift", "comparisons", "fraug-fedbn")(d),
                *_fed_diff("feature_shift", "by_size", "100", "comparisons", "fraug-fedbn")(d)), 3),
    (FEDERATED, "(val {} against {} at 0.1 and {} at 1; FedBN's best {})", FED_PAPER,
     lambda d: (d["tuning"]["fraug"]["val_accuracy"][2], d["tuning"]["fraug"]["val_accuracy"][0],
                d["tuning"]["fraug"]["val_accuracy"][1], max(d["tuning"]["fedbn"]["val_accuracy"])), 3),
    (FEDERATED, "embedding FRAug falls to {} (lambda_FT 10) and {} (1) against FedBN's {}", PROBES, _probe_deviation(EMBEDDING), 3),
    (FEDERATED, "FRAug reaches {} (10) and {} (1), FedBN {} under the same optimiser", PROBES, _probe_deviation(OPTIMISER), 3),
    (FEDERATED, "(FedBN - FedAvg on val: five domains +{}, + `inverted` +{}, + `inverted` and 20 local steps +{}, "
     "+ `inverted` and `contrast` +{})", PROBES, _regime_rooms, 3),
    (FEDERATED, "by +{} at alpha 0.05 (precondition met) and +{} at alpha 0.1", FED_PAPER,
     lambda d: tuple(_at(d, ("label_skew", "by_alpha", a, "comparisons", "fedavg_ggeur-fedavg", "precondition", "value"))
                     for a in ("0.05", "0.1")), 3),
    (FEDERATED, "At alpha 0.05 GGEUR - FedAvg is {} [{}, {}]: **inconclusive**", FED_PAPER,
     _fed_diff("label_skew", "by_alpha", "0.05", "comparisons", "fedavg_ggeur-fedavg"), 3),
    (FEDERATED, "At alpha 0.1 it is +{} [{}, {}], shown but untested", FED_PAPER,
     _fed_diff("label_skew", "by_alpha", "0.1", "comparisons", "fedavg_ggeur-fedavg"), 3),
    (FEDERATED, "gains +{} [{}, {}] at 30 per client, but both sit at {}-{}", FED_PAPER,
     lambda d: (*_fed_diff("feature_shift", "comparisons", "ggeur-fedavg_head")(d),
                d["feature_shift"]["accuracy"]["fedavg_head"]["value"], d["feature_shift"]["accuracy"]["ggeur"]["value"]), (3, 3, 3, 2, 2)),
    (FEDERATED, "(e.g. +{} [{}, {}] at 30)", FED_PAPER, _fed_diff("feature_shift", "comparisons", "fedprox-fedavg"), 3),

    # docs/methods/vq.md
    (VQ, "class accuracy on the precondition's samples: ResGen {} and AR {}, over 10 classes; metrics/vq.json at commit f98a41e)",
     "f98a41e:metrics/vq.json", lambda d: tuple(c["value"] for c in d["claims"]["resgen_vs_ar_fd"]["precondition"]["checks"]), 2),
    (VQ, "for about a fifth of train@vq's {} s", "f98a41e:metrics/vq.json", ("train_wall_seconds",), 0),
    (VQ, "its own tokenizer ({} s each, metrics/vq.json at commit 90facea)", "90facea:metrics/vq.json",
     lambda d: _mean([s["tokenizer"]["seconds"] for s in d["training"].values()]), 0),

    # benchmarks/README.md: ppap_expert_step.py
    (BENCH, "| before: the teacher reads every batch, two-branch LoRA | {} | {} |", PPAP,
     lambda d: (d["variants"]["before"]["ms_per_step"], d["variants"]["before"]["speedup"]), (1, 2)),
    (BENCH, "| the teacher's logits read once per distillation set | {} | {} |", PPAP,
     lambda d: (d["variants"]["teacher cached"]["ms_per_step"], d["variants"]["teacher cached"]["speedup"]), (1, 2)),
    (BENCH, "| that, and each LoRA layer one conv of the merged weight (train@diffusion now) | {} | {} |", PPAP,
     lambda d: tuple(d["variants"]["teacher cached + merged LoRA"][k] for k in ("ms_per_step", "speedup")), (1, 2)),
    (BENCH, "a table made once per training seed ({} images)", PPAP, ("teacher_reads_per_seed", "teacher cached"), 0),
    # numerics_pins.py
    (BENCH, "one thread, {} timed steps after a warm-up", PINS, ("steps",), None),
    *[(BENCH, f"| {setting} | {{}}, x{{}}, {{}} | {{}}, x{{}}, {{}} | {{}}, x{{}}, {{}} |", PINS, _pins_row(setting), (1, 2, None) * 3)
      for setting in ("native", "pinned", "pinned, ATen native", "pinned, oneDNN native", "pinned, MKL native")],
    # orchestration.py
    (BENCH, "Result on this 2-core machine, today's {}-stage DAG", ORCH, ("stages",), None),
    (BENCH, "| `dvc repro --force` | {}, {} | {} |", ORCH, lambda d: (*d["seconds"]["dvc_repro"], d["mean_seconds"]["dvc_repro"]), 1),
    (BENCH, "| per-stage `dvc repro --single-item` | {}, {} | {} |", ORCH,
     lambda d: (*d["seconds"]["dvc_per_stage"], d["mean_seconds"]["dvc_per_stage"]), 1),
    (BENCH, "| Prefect `pipeline` flow | {}, {} | {} |", ORCH,
     lambda d: (*d["seconds"]["prefect_flow"], d["mean_seconds"]["prefect_flow"]), 1),
    (BENCH, "Orchestration overhead (flow vs `dvc repro`): **+{}%**", ORCH, lambda d: d["orchestration_overhead_fraction"] * 100, 1),
    (BENCH, "the two runs of one arm differ by {}-{} s", ORCH, _orch_spread, 0),
    (BENCH, "One DVC start-up per stage costs +{}%", ORCH, lambda d: d["per_stage_dvc_startup_fraction"] * 100, 1),
    (BENCH, "with a running server: {} ms per no-op task; an empty flow run costs {} s", ORCH,
     lambda d: (d["prefect_per_task_overhead_seconds"] * 1000, d["empty_flow_seconds"]), 1),
    (BENCH, "The earlier measurement ({}-stage DAG, default params of then, {} runs per arm; `orchestration.json` at commit 990e59c)",
     "990e59c:benchmarks/results/orchestration.json", lambda d: (d["stages"], d["runs_per_arm"]), None),
    (BENCH, "gave {} s, +{}% for the flow.", "990e59c:benchmarks/results/orchestration.json",
     lambda d: (d["mean_seconds"]["dvc_repro"], d["orchestration_overhead_fraction"] * 100), 1),
    # distance_intervals.py
    (BENCH, "at the pipeline's sizes ({} reference features against {} generated)", INTERVALS,
     lambda d: (d["settings"][2]["reference"], d["settings"][2]["generated"]), 0),
    (BENCH, "| 8 | 400 / 400 | 0 | {} | {} | [{}, {}] | {} / {} |", INTERVALS, _interval_row(0), (3, 3, 3, 3, 0, 0)),
    (BENCH, "| 8 | 400 / 400 | 2.0 | {} | {} | [{}, {}] | {} / {} |", INTERVALS, _interval_row(1), (3, 3, 3, 3, 0, 0)),
    (BENCH, "| 64 | 538 / 1,000 | 0 | {} | {} | [{}, {}] | {} / {} |", INTERVALS, _interval_row(2), (3, 3, 3, 3, 0, 0)),
    (BENCH, "| 64 | 538 / 1,000 | 5.76 | {} | {} | [{}, {}] | {} / {} |", INTERVALS, _interval_row(3), (3, 3, 3, 3, 0, 0)),
    (BENCH, "| 128 | 538 / 1,000 | 0 | {} | {} | [{}, {}] | {} / {} |", INTERVALS, _interval_row(4), (3, 3, 3, 3, 0, 0)),
    (BENCH, "at d = 128 a residual of ~{} remains", INTERVALS, ("settings", 4, "mean_fd"), 0),
    # ddpm_quality.py
    (BENCH, "(confident share {} / {} / {} at 1,500 / 3,000 / 6,000 steps)", DDPM,
     lambda d: tuple(d["baseline"][s]["ddim20_clamped"]["confident_share"] for s in ("1500", "3000", "6000")), 2),
    # gan_quality.py
    (BENCH, "at 800 steps the channels were mostly unrecognisable (confident share {}-{}, {}-{} modes)", GAN_QUALITY,
     lambda d: (min(v["confident_share"] for k, v in d.items() if k.startswith("stacked_weak:") and ":800:" in k),
                max(v["confident_share"] for k, v in d.items() if k.startswith("stacked_weak:") and ":800:" in k),
                min(v["modes_covered"] for k, v in d.items() if k.startswith("stacked_weak:") and ":800:" in k),
                max(v["modes_covered"] for k, v in d.items() if k.startswith("stacked_weak:") and ":800:" in k)), (2, 2, 0, 0)),
    (BENCH, "turned into {}-{} \"modes\" (metrics/gan.json at commit dadfc57)", "dadfc57:metrics/gan.json",
     lambda d: (min(d["stacked"]["modes_covered"].values()), max(d["stacked"]["modes_covered"].values())), 0),
    # gan_toy_longer.py
    (BENCH, "--scale 4 # ~{} min on 2 cores", TOY, lambda d: d["wall_seconds"] / 60, 0),
    (BENCH, "The pipeline gives each 2-D run {} generator updates", TOY, ("pipeline_steps",), 0),
    (BENCH, "on the ring and the grid with {} updates", TOY, ("steps",), 0),
    (BENCH, "at the pipeline's seeds ({}-{} when it ran;", TOY, lambda d: (min(d["seeds"]), max(d["seeds"])), None),
    (BENCH, "(sigma from a mee-only sweep: ring {}, grid {};", TOY, lambda d: (d["sigma"]["ring"], d["sigma"]["grid"]), None),
    (BENCH, "| ring modes, per seed | {} ({}) | {} ({}) | {} ({}) |", TOY,
     lambda d: tuple(x for arm in ("dcgan", "maf", "mee") for x in _toy("ring", arm, "per_seed")(d)), None),
    (BENCH, "| ring modes, mean +- std | {} +- {} ({}) | {} +- {} ({}) | {} +- {} ({}) |", TOY,
     lambda d: tuple(x for arm in ("dcgan", "maf", "mee") for x in _toy("ring", arm, "modes")(d)), 1),
    (BENCH, "| ring high quality | {} ({}) | {} ({}) | {} ({}) |", TOY,
     lambda d: tuple(x for arm in ("dcgan", "maf", "mee") for x in _toy("ring", arm, "quality")(d)), 3),
    (BENCH, "| grid modes, mean +- std | {} +- {} ({}) | {} +- {} ({}) | {} +- {} ({}) |", TOY,
     lambda d: tuple(x for arm in ("dcgan", "maf", "mee") for x in _toy("grid", arm, "modes")(d)), 1),
    (BENCH, "| grid high quality | {} ({}) | {} ({}) | {} ({}) |", TOY,
     lambda d: tuple(x for arm in ("dcgan", "maf", "mee") for x in _toy("grid", arm, "quality")(d)), 3),
    (BENCH, "| seconds per run (ring) | {} | {} | {} |", TOY,
     lambda d: tuple(_mean(d["results"]["ring"][arm]["seconds"]) for arm in ("dcgan", "maf", "mee")), 1),
    (BENCH, "dcgan collapses to {} modes at seed 2", TOY, ("results", "ring", "dcgan", "modes_covered", 2), None),
    (BENCH, "On the grid mee covers the most modes ({} against {} and {})", TOY,
     lambda d: tuple(d["results"]["grid"][a]["modes_covered_summary"]["mean"] for a in ("mee", "maf", "dcgan")), 1),
    (BENCH, "Its high-quality share is the lowest of the three ({})", TOY, ("results", "grid", "mee", "high_quality_summary", "mean"), 3),
    (BENCH, "No grid run has converged even here (high quality <= {})", TOY,
     lambda d: max(x for r in d["results"]["grid"].values() for x in r["high_quality"]), 2),
    (BENCH, "and a margin of {} modes on the grid", TOY,
     lambda d: _at(d, ("results", "grid", "mee", "modes_covered_summary", "mean"))
     - _at(d, ("results", "grid", "maf", "modes_covered_summary", "mean")), 1),
    # profile_pipeline.py
    (BENCH, "| diffusion DDPM (U-Net, batch 128): before / after | {} / {} ms | {} / {} ms | {}% / {}% |", PROFILE,
     _profile_row("diffusion ddpm", 1), 1),
    (BENCH, "| vq AR prior (transformer): before / after | {} / {} ms | {} / {} ms | {}% / {}% |", PROFILE,
     _profile_row("vq ar prior", 0), (0, 0, 0, 0, 1, 1)),
    (BENCH, "| gan stacked_weak mee (conv GAN): before / after | {} / {} ms | {} / {} ms | {}% / {}% |", PROFILE,
     _profile_row("gan stacked_weak mee", 1), 1),
    (BENCH, "(up to {}% on the DDPM plain step, {}% on its Lightning step)", PROFILE, _profile_ddpm_noise, 0),
    (BENCH, "(plus ~{} s start-up per fit)", PROFILE,
     lambda d: d["step_overhead"]["gan stacked_weak mee"]["lightning"]["startup_seconds"]
     - d["step_overhead"]["gan stacked_weak mee"]["plain"]["startup_seconds"], 1),
    (BENCH, "The big jobs are arithmetic: {}-{}% of a Lightning step is spent outside ATen ops", PROFILE,
     lambda d: (min(s["lightning_step_outside_aten"] for s in d["step_overhead"].values()) * 100,
                max(s["lightning_step_outside_aten"] for s in d["step_overhead"].values()) * 100), 0),
    # gan_stacking.py
    (BENCH, "stacked with other arms and seeds ({} runs, {} steps)", STACKING,
     lambda d: (d["same_numbers"]["ring"]["runs"], d["same_numbers"]["ring"]["steps"]), None),
    (BENCH, "2-D samples differ by at most {}, losses by {}. Conv runs: losses {}, samples {}", STACKING,
     lambda d: (*(d["same_numbers"]["ring"]["max_abs_difference"][k] for k in ("samples", "losses")),
                *(d["same_numbers"]["stacked_weak"]["max_abs_difference"][k] for k in ("losses", "samples"))),
     ("e0", "e0", "e0", "e1")),
    (BENCH, "Over {} steps the 2-D dcgan, maf and maf+disomap runs never part by 1e-4; one dlle and one mee run part at steps {} and {}, "
     "the conv runs at steps {}-{}", STACKING, _stacking_drift, None),
    (BENCH, "ring at 1,500 steps: {} s one run after another, {} s as three stacks (by D inputs): **{}x**", STACKING,
     lambda d: (d["ring_all_arms_x_seeds"]["per_run_seconds"], d["ring_all_arms_x_seeds"]["stacked_seconds"],
                d["ring_all_arms_x_seeds"]["speedup"]), (1, 1, 2)),
    (BENCH, "(an earlier run: {}x, `gan_stacking.json` at commit 7436d4b;", "7436d4b:benchmarks/results/gan_stacking.json",
     ("ring_all_arms_x_seeds", "speedup"), 2),
    (BENCH, "about {} ms per stacked run-step on average, where the old loop spent {} ms", STACKING,
     lambda d: tuple(d["ring_all_arms_x_seeds"][k] / (d["ring_all_arms_x_seeds"]["runs"] * d["ring_all_arms_x_seeds"]["steps"]) * 1000
                     for k in ("stacked_seconds", "per_run_seconds")), 1),
    (BENCH, "three stacked_weak mee runs at {} steps: {} s in the old loop, {} s as three Lightning fits of one run, {} s as one "
     "grouped-convolution stack", STACKING,
     lambda d: (d["stacked_weak_mee_seeds"]["steps"], d["stacked_weak_mee_seeds"]["per_run_seconds"],
                d["stacked_weak_mee_seeds"]["stacked_seconds"], d["stacked_weak_mee_seeds"]["grouped_stack_seconds"]), (0, 1, 1, 1)),
    # federated_probes.py
    (BENCH, "benchmarks/federated_probes.py # ~{} min;", PROBES, lambda d: d["wall_seconds"] / 60, 0),
    (BENCH, "`benchmarks/results/federated_probes.json` ({} s on this 2-core machine)", PROBES, ("wall_seconds",), 0),
    (BENCH, "FedBN - FedAvg: five domains +{}; + `inverted` +{}; + `inverted`, 20 local steps (the default) +{}; "
     "+ `inverted` + `contrast` +{}.", PROBES, _regime_rooms, 3),
    (BENCH, "Released 512-d embedding: FRAug {} / {} (lambda_FT 10 / 1), FedBN {}.", PROBES, _probe_deviation(EMBEDDING), 3),
    (BENCH, "(SGD lr 0.01, momentum 0.5, no decay): FRAug {} / {}, FedBN {}.", PROBES, _probe_deviation(OPTIMISER), 3),
    (BENCH, "50 rounds x 100 steps: +{} (alpha 0.05), +{} (0.1); 10 rounds x 100 steps (the default): +{}, +{}.", PROBES,
     _label_skew_rooms, 3),
]


# --- the machinery ----------------------------------------------------------------------------

def _at(data, path):
    for key in path:
        data = data[key]
    return data


@cache
def _load(source: str):
    commit, sep, path = source.rpartition(":")
    if sep and re.fullmatch(r"[0-9a-f]{7,40}", commit):
        done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"{source}: not in this clone's history (a shallow clone?): {done.stderr.strip()}")
        return json.loads(done.stdout)
    file = ROOT / source
    if not file.exists() and source in DVC_OUTPUTS:
        pytest.skip(f"{source}: a pipeline output, not in git; `dvc repro` writes it")
    if file.suffix == ".safetensors":
        raw = file.read_bytes()
        header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
        return {"num_params": sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")}
    return json.loads(file.read_text())


def fmt(value, rounding) -> str:
    """A value as the pages print it (see the module docstring)."""
    if isinstance(value, str) or rounding is None:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    if isinstance(rounding, str):  # "e1": 1.7e-4; "e0": 7e-8
        mantissa, exponent = f"{value:.{int(rounding[1:])}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    exact = Decimal(repr(float(value)))
    return f"{exact.quantize(Decimal(1).scaleb(-rounding), rounding=ROUND_HALF_UP):,}"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _id(entry) -> str:
    page, template = entry[0], entry[1]
    return f"{page}: {_flat(template)[:60]}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[_id(e) for e in ENTRIES])
def test_a_prose_number_is_its_source_files(entry):
    page, template, source, key, rounding = entry
    data = _load(source)
    values = key(data) if callable(key) else _at(data, key)
    values = values if isinstance(values, tuple) else (values,)
    roundings = rounding if isinstance(rounding, tuple) else (rounding,) * len(values)
    assert template.count("{}") == len(values) == len(roundings), "the entry's placeholders, values and roundings differ in number"
    text = _flat((ROOT / page).read_text())
    template = _flat(template)
    expected = template.format(*(fmt(v, r) for v, r in zip(values, roundings)))
    if expected in text:
        return
    pattern = r"(.{1,40}?)".join(re.escape(part) for part in template.split("{}"))
    found = re.search(pattern, text)
    assert found, f"{page}: the sentence quoting {source} moved or was reworded:\n  {template}"
    raise AssertionError(f"{page} says\n  {found[0]}\nbut {source} gives\n  {expected}")


def test_rounding_is_what_a_reader_does_by_hand():
    assert fmt(0.845, 2) == "0.85" and fmt(1.265, 2) == "1.27" and fmt(0.1285, 3) == "0.129"
    assert fmt(-0.0082, 3) == "-0.008" and fmt(1384.9, 0) == "1,385" and fmt(2.0, 1) == "2.0"
    assert fmt(0.00017, "e1") == "1.7e-4" and fmt(7.45e-08, "e0") == "7e-8" and fmt(1797, None) == "1,797"

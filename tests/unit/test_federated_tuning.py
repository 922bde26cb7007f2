"""Equal val budgets (federated.tuning): every tuned arm spends the same number of configurations
on the selection seeds, each CNN arm's scored runs train with its own choice, FRAug's with its
own on top of FedBN's. The runs here are stand-ins that score a configuration by a fixed table
(the simulation itself is tests/unit/test_federated_engine.py's): what is tested is which
configuration each run trains with and what is chosen."""

import pytest

from embedlab.params import ParamsError, parse_params

BEST_LR = {"local": 0.05, "fedavg": 0.2, "fedprox": 0.1, "fedbn": 0.2}
BEST_LAMBDA = 10.0


def _stand_in(job, raw, root, num_classes, image_size, progress):
    """A run's final val accuracy from the configuration it trains with (no data read)."""
    from dataclasses import asdict

    from embedlab.methods.federated.parts import apply_choice

    params = parse_params(raw)
    if job.config >= 0:
        params = apply_choice(params, job.algorithm, getattr(params.federated.tuning, job.algorithm)[job.config])
    lr, lam = params.federated.feature_shift.lr, params.federated.fraug.lambda_r
    best = BEST_LR.get(job.algorithm, BEST_LR["fedbn"])
    score = 0.9 - abs(lr - best) - (0.01 * abs(lam - BEST_LAMBDA) if job.algorithm == "fraug" else 0.0)
    return {"job": asdict(job), "key": job.key, "val_curve": [score], "val_rows": [100], "lr": lr, "lambda_r": lam}


def test_every_arm_gets_the_same_budget_and_trains_with_its_own_choice(monkeypatch, tmp_path):
    from embedlab.methods.federated import method
    from embedlab.methods.federated.parts import TUNED

    monkeypatch.setattr(method, "_worker_run", _stand_in)
    params = parse_params({"trainer": {"progress_bar": False}, "federated": {
        "workers": 1, "seeds": [0], "tuning": {"seeds": [100, 101]}}})
    results, tuning, _ = method.run_all(params, tmp_path, 10, 16, progress=False)

    assert set(tuning) == set(TUNED)
    assert {arm: len(t["configs"]) for arm, t in tuning.items()} == {arm: 3 for arm in TUNED}  # equal budgets
    for arm, lr in BEST_LR.items():
        assert tuning[arm]["chosen"] == {"lr": lr}, arm
    assert tuning["fraug"]["chosen"] == {"lambda_r": BEST_LAMBDA}
    scored = {(r["job"]["setting"], r["job"]["algorithm"]): r for r in results}
    for arm, lr in BEST_LR.items():  # each CNN arm's scored run trains with its own lr
        assert scored[("feature_shift", arm)]["lr"] == lr, arm
    fraug = scored[("feature_shift", "fraug")]
    assert (fraug["lr"], fraug["lambda_r"]) == (BEST_LR["fedbn"], BEST_LAMBDA)  # on top of FedBN's choice
    assert scored[("feature_shift", "ggeur")]["lr"] == BEST_LR["fedbn"]  # the linear heads: FedBN's


def test_unequal_budgets_are_refused_naming_the_arms():
    with pytest.raises(ParamsError, match="same number of configurations"):
        parse_params({"federated": {"tuning": {"fedavg": [{"lr": 0.1}]}}})
    # an arm that is not trained does not count
    parse_params({"federated": {"feature_shift": {"algorithms": ["fedbn", "fraug"]},
                                "tuning": {"fedavg": [{"lr": 0.1}]}}})


def _runs(scores: list[float], seeds: int = 1, rows: int = 300) -> list[dict]:
    """Tuning runs of one arm: configuration i scores scores[i] on every selection seed."""
    return [{"job": {"config": i, "seed": 100 + k}, "val_curve": [v], "val_rows": [rows // 6] * 6}
            for i, v in enumerate(scores) for k in range(seeds)]


@pytest.mark.parametrize("scores, chosen", [
    ([0.74, 0.74, 0.7433], 0),    # within one standard error (0.0253 at 300 rows): the reference
    ([0.7467, 0.7367, 0.7333], 0),  # the reference ahead anyway
    ([0.68, 0.7267, 0.7033], 1),  # 0.0467 above the reference: beyond one SE (0.0269), the highest
    ([0.62, 0.70, 0.7067], 2),    # two beyond it: the highest of them
])
def test_a_configuration_beats_the_reference_only_by_more_than_one_standard_error(scores, chosen):
    from embedlab.methods.federated.method import choose

    params = parse_params({"federated": {"tuning": {"seeds": [100]}}})
    record = choose(params, "fedbn", _runs(scores))
    configs = params.federated.tuning.fedbn
    assert record["chosen"] == configs[chosen] and record["reference"] == configs[0]
    assert record["val_rows"] == 300
    assert record["standard_error"] == pytest.approx((scores[0] * (1 - scores[0]) / 300) ** 0.5, abs=1e-4)


def test_more_selection_seeds_shrink_the_standard_error_and_let_a_smaller_gap_count():
    from embedlab.methods.federated.method import choose

    params = parse_params({"federated": {"tuning": {"seeds": [100, 101, 102, 103]}}})
    scores = [0.70, 0.725, 0.70]  # a 0.025 gap: inside one SE at 300 rows (0.0265), beyond it at 1,200 (0.0132)
    assert choose(params, "fedbn", _runs(scores, seeds=1))["chosen"] == params.federated.tuning.fedbn[0]
    assert choose(params, "fedbn", _runs(scores, seeds=4))["chosen"] == params.federated.tuning.fedbn[1]

"""Preconditions are decided before the test scores are read (val, the selection seed, the
backbone) and gate the verdict; the test-time room is reported beside them and never gates."""

import math

from embedlab.params import parse_params


def test_federated_room_is_decided_on_val_and_the_test_room_only_reported():
    from embedlab.methods.federated.scoring import ROOM, preconditions

    # val leaves room (fedbn 0.08 above fedavg and local); test would not (0.02)
    val = {"fedbn": [0.80, 0.82, 0.81], "fedavg": [0.72, 0.74, 0.73], "local": [0.70, 0.71, 0.72],
           "central": [0.9, 0.9, 0.9]}
    test = {"fedbn": [0.80, 0.82, 0.81], "fedavg": [0.78, 0.80, 0.79], "local": [0.70, 0.71, 0.72],
            "central": [0.81, 0.83, 0.82]}
    out = preconditions(val, test)
    fraug = out[("fraug", "fedbn")]
    assert fraug["met"] and math.isclose(fraug["value"], 0.08, abs_tol=1e-4) and fraug["threshold"] == ROOM
    assert math.isclose(fraug["test_value"], 0.02, abs_tol=1e-4)
    assert fraug["decided_on"].startswith("val")
    assert set(fraug["differences"]) == {"fedbn - fedavg", "fedbn - local"}
    d = fraug["differences"]["fedbn - fedavg"]
    assert d["lo"] <= d["value"] <= d["hi"] and d["n"] == 3
    ggeur = out[("fedavg_ggeur", "fedavg")]
    assert ggeur["met"] and ggeur["test_value"] < ROOM  # val decides: 0.17 on val, 0.03 on test

    # the other way round: the test would leave room, val does not -> not met
    assert not preconditions(test, val)[("fraug", "fedbn")]["met"]


def test_an_unmet_val_precondition_makes_the_claim_untested_whatever_the_test_says():
    from embedlab.methods.federated.scoring import _comparisons, preconditions

    val = {"fedbn": [0.80, 0.80, 0.80], "fedavg": [0.79, 0.79, 0.79], "local": [0.7, 0.7, 0.7]}
    test = {"fedbn": [0.70, 0.71, 0.72], "fedavg": [0.60, 0.61, 0.62], "local": [0.5, 0.5, 0.5],
            "fraug": [0.80, 0.82, 0.81]}  # a clear win on test
    out = _comparisons(test, [("fraug", "fedbn")], [0, 1, 2], preconditions(val, test))["fraug-fedbn"]
    assert out["verdict"] == "untested" and out["difference"]["lo"] > 0
    assert out["precondition"]["test_value"] > 0.05 > out["precondition"]["value"]


def _tuning(maf_modes: int, mee_modes: int) -> dict:
    return {"seeds": {"ring": 100}, "by": {"ring": "mixture mode count"},
            "chosen": {"ring/maf": {"key": "lr_scale", "value": 1.0}, "ring/mee": {"key": "sigma", "value": 0.3}},
            "scores": {"ring/maf": {"1": {"modes_covered": maf_modes}}, "ring/mee": {"0.3": {"modes_covered": mee_modes}}}}


def _ring(maf: list[int], mee: list[int]) -> dict:
    return {"ring": {"maf": [{"modes_covered": m} for m in maf], "mee": [{"modes_covered": m} for m in mee]}}


def test_gan_room_and_quality_gate_come_from_the_selection_seed():
    from embedlab.methods.gan.scoring import claims

    params = parse_params({"gan": {"toy": {"seeds": [0, 1, 2]}}})
    ceilings, floors = {"ring": {"modes_covered": 8}}, {"ring": {"modes_covered": 0}}
    per_seed = _ring(maf=[4, 4, 5], mee=[7, 8, 8])  # the test scores leave room and favour mee

    judged = claims(per_seed, ceilings, floors, params, _tuning(maf_modes=5, mee_modes=6))["mee_vs_maf_ring"]
    assert judged["verdict"] == "reproduced" and judged["precondition"]["met"]
    room, maf_q, mee_q = judged["precondition"]["checks"]
    assert room["value"] == 5 and room["threshold"] == 0.9 * 8 and math.isclose(room["test_value"], 13 / 3, abs_tol=1e-4)
    assert room["decided_on"].startswith("selection seed 100: maf at its chosen lr_scale 1")
    assert maf_q["threshold"] == 1 and mee_q["value"] == 6

    # maf covered every mode on the selection seed: no room, whatever the reported seeds show
    full = claims(per_seed, ceilings, floors, params, _tuning(maf_modes=8, mee_modes=6))["mee_vs_maf_ring"]
    assert full["verdict"] == "untested" and not full["precondition"]["checks"][0]["met"]

    # an arm no better than the untrained generator: the comparison means nothing
    floors_one = {"ring": {"modes_covered": 1}}
    junk = claims(per_seed, ceilings, floors_one, params, _tuning(maf_modes=1, mee_modes=6))["mee_vs_maf_ring"]
    assert junk["verdict"] == "untested"
    assert [c["met"] for c in junk["precondition"]["checks"]] == [True, False, True]
    assert "beats the untrained generator" in junk["precondition"]["checks"][1]["description"]


def test_gan_digits_quality_gate_reads_the_backbone_in_every_seed_never_the_scoring_evaluator():
    from embedlab.methods.gan.scoring import claims

    params = parse_params({"gan": {"image": {"seeds": [0, 1, 2]}}})

    def digits():  # the scoring evaluator reads every sample as readable: it must not decide
        return {"digits": {arm: [{"fd": fd, "confident_share": 0.99} for fd in fds]
                           for arm, fds in (("mee", [100.0, 101.0, 99.0]), ("dcgan", [100.0, 100.5, 99.5]))}}

    floors = {"digits": {"confident_share": {"value": 0.01, "lo": 0.0, "hi": 0.02, "n": 1000}}}
    backbone = {"dcgan": [0.8, 0.85, 0.9], "mee": [0.7, 0.75, 0.8], "untrained": [0.02]}
    ok = claims(digits(), {}, floors, params, {"chosen": {}}, backbone)["mee_quality_vs_dcgan_digits"]
    assert ok["verdict"] == "reproduced" and ok["precondition"]["met"]
    mee = ok["precondition"]["checks"][1]
    assert mee["per_seed"] == [0.7, 0.75, 0.8] and mee["value"] == 0.7 and mee["threshold"] == 0.5
    assert mee["evaluator_per_seed"] == [0.99, 0.99, 0.99] and "backbone" in mee["decided_on"]

    one_bad_seed = claims(digits(), {}, floors, params, {"chosen": {}}, {**backbone, "mee": [0.7, 0.3, 0.8]})
    assert one_bad_seed["mee_quality_vs_dcgan_digits"]["verdict"] == "untested"
    assert one_bad_seed["mee_quality_vs_dcgan_digits"]["precondition"]["checks"][1]["value"] == 0.3
    # twice the untrained generator's share, when that is above 0.5: 0.7 < 2 x 0.4
    blobs = claims(digits(), {}, floors, params, {"chosen": {}}, {**backbone, "untrained": [0.4]})
    assert blobs["mee_quality_vs_dcgan_digits"]["verdict"] == "untested"
    assert blobs["mee_quality_vs_dcgan_digits"]["precondition"]["checks"][1]["threshold"] == 0.8
    # no backbone reading at all: untested, never decided by the evaluator
    unread = claims(digits(), {}, floors, params, {"chosen": {}}, {})["mee_quality_vs_dcgan_digits"]
    assert unread["verdict"] == "untested"


def test_diffusion_room_comes_from_the_backbone_sweeps():
    from embedlab.methods.diffusion.scoring import room

    def arm(chosen, acc):
        return {"chosen": chosen, "sweep": [{"scale": 1.0, "backbone_accuracy": 0.1},
                                            {"scale": chosen, "backbone_accuracy": acc}]}

    info = {"scales": {s: {"naive": arm(3.0, 0.3), "supervised": arm(10.0, acc)}
                       for s, acc in (("0", 0.8), ("1", 0.7), ("2", 0.75))}}
    out = room(info, {"supervised": [0.5, 0.5, 0.5], "naive": [0.45, 0.45, 0.45]})
    assert out["met"] and math.isclose(out["value"], 0.45, abs_tol=1e-4) and out["per_seed"] == [0.5, 0.4, 0.45]
    assert out["interval"][0] < 0.45 < out["interval"][1]
    assert math.isclose(out["test_value"], 0.05, abs_tol=1e-4)  # a check only: below ROOM, still met


def test_vq_claims_are_untested_until_both_priors_show_the_requested_class():
    from embedlab.methods.vq.scoring import RECOGNISABLE, claims

    per_seed = {"resgen": [{"fd": 50.0 + s, "accuracy": 0.3} for s in range(3)],
                "ar": [{"fd": 90.0 + 2 * s, "accuracy": 0.2} for s in range(3)]}
    at_chance = {"resgen": [0.7, 0.72, 0.69], "ar": [0.11, 0.1, 0.09]}
    out = claims(per_seed, [0, 1, 2], at_chance)
    assert {c["verdict"] for c in out.values()} == {"untested"}
    resgen, ar = out["resgen_vs_ar_fd"]["precondition"]["checks"]
    assert resgen["met"] and not ar["met"] and ar["threshold"] == RECOGNISABLE
    assert math.isclose(ar["test_value"], 0.2) and ar["per_seed"] == [0.11, 0.1, 0.09]

    learned = {"resgen": [0.7, 0.72, 0.69], "ar": [0.6, 0.62, 0.58]}
    judged = claims(per_seed, [0, 1, 2], learned)
    assert judged["resgen_vs_ar_fd"]["verdict"] == "reproduced"  # lower FD on every seed
    assert judged["resgen_vs_ar_fd"]["precondition"]["met"]


def test_the_gan_bundle_carries_a_quality_floor_from_the_published_run():
    from embedlab.methods.gan.scoring import QUALITY_FLOOR, quality_floor

    metrics = {"published": {"bench": "digits", "confident_share": {"value": 0.57, "lo": 0.54, "hi": 0.6, "n": 1000}},
               "digits": {"confident_share": {"untrained": {"value": 0.01, "lo": 0.0, "hi": 0.02, "n": 1000}}}}
    assert quality_floor(metrics)["met"] and quality_floor(metrics)["threshold"] == QUALITY_FLOOR
    noise = {"published": {"bench": "stacked_weak", "confident_share": 0.3},
             "stacked": {"confident_share": {"untrained": 0.2}}}
    floor = quality_floor(noise)
    assert not floor["met"] and floor["threshold"] == 0.5 and floor["value"] == 0.3


def test_a_room_without_val_scores_is_not_met_instead_of_a_crash():
    """Clients without val rows score nan (engine.accuracies): the room is unknown, so the claim
    is untested (seen on a small colour folder's label-skew clients)."""
    from embedlab.methods.federated.scoring import preconditions

    nan = float("nan")
    val = {"central": [nan, nan], "fedavg": [0.5, 0.6], "fedbn": [0.7, 0.7], "local": [0.4, 0.5]}
    out = preconditions(val)
    assert not out[("fedavg_ggeur", "fedavg")]["met"] and out[("fedavg_ggeur", "fedavg")]["value"] is None
    assert out[("fraug", "fedbn")]["met"]


def test_a_run_scores_val_over_the_clients_that_have_val_rows():
    from embedlab.methods.federated.method import _mean_scored

    assert _mean_scored([0.5, float("nan"), 0.7]) == 0.6
    assert _mean_scored([float("nan")]) != _mean_scored([float("nan")])  # nan: no client scored

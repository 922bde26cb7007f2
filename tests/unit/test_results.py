"""The docs' results tables are rendered from metrics/*.json, never typed."""

from pathlib import Path

import pytest

from embedlab.results import ResultsError, render, render_page, score

REPO = Path(__file__).resolve().parents[2]


def test_committed_docs_match_what_the_metrics_render():
    stale = render(REPO, check=True)
    assert not stale, f"run `embedlab results`: {[str(p.relative_to(REPO)) for p in stale]}"


def test_a_marked_block_is_replaced_and_the_rest_kept(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluator.json").write_text(
        '{"real_floor": {"fd": {"value": 1.5, "lo": 0.5, "hi": 2.5, "n": 100},'
        ' "kid": {"value": 0.001, "lo": 0.0, "hi": 0.002, "n": 100},'
        ' "confident_share": {"value": 0.97, "lo": 0.94, "hi": 0.99, "n": 100}}}')
    page = "intro\n<!-- results:floor -->\nstale\n<!-- /results:floor -->\nend\n"
    out = render_page(page, tmp_path)
    assert out.startswith("intro\n<!-- results:floor -->\n| real train images vs val + test, N = 100 |")
    assert "1.50 [0.50, 2.50]" in out and "stale" not in out and out.endswith("<!-- /results:floor -->\nend\n")
    with pytest.raises(ResultsError, match="unknown results table 'nope'"):
        render_page("<!-- results:nope -->\n<!-- /results:nope -->", tmp_path)
    with pytest.raises(ResultsError, match="metrics/vq.json: missing"):
        render_page("<!-- results:vq -->\n<!-- /results:vq -->", tmp_path)


def test_score_formatting():
    assert score({"value": 0.9234, "lo": 0.91, "hi": 0.93, "n": 10}) == "0.923 [0.910, 0.930]"
    assert score({"value": 147.7, "lo": None, "hi": None, "n": 1}) == "147.7"
    assert score(5) == "5" and score(None) == "-"


def test_the_tuning_table_lists_every_choice_and_marks_grid_edges(tmp_path):
    import json

    from embedlab.results import tuning_table

    (tmp_path / "metrics").mkdir()
    fed = {"tuning": {"budget": {"fedbn": 3}, "note": "...",
                      "fedavg": {"configs": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.2}], "chosen": {"lr": 0.05},
                                 "reference": {"lr": 0.05}, "standard_error": 0.027, "seeds": [100]},
                      "fedbn": {"configs": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.2}], "chosen": {"lr": 0.1},
                                "seeds": [100, 101]},
                      "fraug": {"configs": [{"lambda_r": 1.0}, {"lambda_r": 10.0}], "chosen": {"lambda_r": 10.0},
                                "seeds": [100, 101]}}}
    gan = {"tuning": {"chosen": {"ring/mee": {"key": "sigma", "value": 0.3}},
                      "scores": {"ring/mee": {"0.1": {}, "0.3": {}, "1": {}}}}}
    diffusion = {"sweep": {"ppap": {"rows": [{"scale": 1.0}, {"scale": 10.0}, {"scale": 30.0}]}},
                 "scale": {"0": {"ppap": 10.0}, "1": {"ppap": 30.0}}}
    for name, m in (("federated", fed), ("gan", gan), ("diffusion", diffusion)):
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(m))
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]: line for line in tuning_table(tmp_path).splitlines()[2:]}
    assert set(rows) == {("federated", "fedavg"), ("federated", "fedbn"), ("federated", "fraug"), ("gan", "ring/mee"),
                         ("diffusion", "ppap")}
    # a kept reference (federated.method.choose's one-SE rule) names its standard error, not the edge
    assert "lr 0.05 (the reference: none beat it by > 0.0270)" in rows[("federated", "fedavg")]
    assert "beats it by > 1 SE" in rows[("federated", "fedavg")] and "edge" not in rows[("federated", "fedavg")]
    assert "lr 0.1 |" in rows[("federated", "fedbn")] and "edge" not in rows[("federated", "fedbn")]
    assert "lambda_r 10 (edge of the grid)" in rows[("federated", "fraug")]
    assert "| 0.3 |" in rows[("gan", "ring/mee")]
    assert "seed 0: 10, seed 1: 30 (edge of the grid)" in rows[("diffusion", "ppap")]


def test_claims_left_to_the_paper_preset_are_rows_that_say_so(tmp_path):
    import json

    from embedlab.results import claims_table

    (tmp_path / "metrics").mkdir()
    tested = {"claim": "a beats b", "metric": "acc", "kind": "superior", "margin": 0.0, "wins": 2,
              "difference": {"value": 0.1, "lo": 0.05, "hi": 0.15, "n": 3}, "verdict": "reproduced"}
    metrics = {"vq": {"claims": {}, "not_run": {"resgen_vs_ar_fd": "not run: vq.ar_baseline is false"}},
               "gan": {"claims": {"mee_vs_maf_ring": tested},
                       "not_run": {"stacked": "not run: a benchmark, not a claim", "mee_vs_maf_grid": "not run: ..."}},
               "diffusion": {"claims": {}}, "federated": {"claims": {}}}
    for name, m in metrics.items():
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(m))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in claims_table(tmp_path).splitlines()[2:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("gan", "a beats b", "**reproduced**"),
        ("gan", "`mee_vs_maf_grid`", "not run: the paper preset (`make run-paper`)"),  # a claim, not the benchmark
        ("vq", "`resgen_vs_ar_fd`", "not run: the paper preset (`make run-paper`)")]

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

"""`embedlab preset paper` (make run-paper) merges params/paper.yaml onto params.yaml: comments
kept, the result valid; a preset naming a key params.yaml lacks is refused and writes nothing."""

import shutil

import yaml
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.params import load_params


def test_the_paper_preset_applies_its_budgets_and_keeps_the_comments(tmp_path, monkeypatch):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    shutil.copytree("params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    preset = yaml.safe_load(open("params/paper.yaml"))
    default = load_params("params.yaml")
    result = CliRunner().invoke(app, ["preset", "paper"])
    assert result.exit_code == 0, result.output
    paper = load_params("params.yaml")
    assert paper.federated.seeds == preset["federated"]["seeds"] != default.federated.seeds
    assert paper.gan.image.stacked is True and default.gan.image.stacked is False
    # the arms whose claims the CPU budget left untested: trained by the paper preset alone
    assert paper.gan.toy.run is True and default.gan.toy.run is False
    assert paper.vq.ar_baseline is True and default.vq.ar_baseline is False
    assert paper.vq.prior.width == preset["vq"]["prior"]["width"] > default.vq.prior.width
    assert paper.evaluation == default.evaluation  # what scores is never part of a preset
    assert "# One section per stage / model." in open("params.yaml").read()


def test_a_preset_with_an_unknown_key_is_refused_and_params_yaml_is_untouched(tmp_path, monkeypatch):
    shutil.copy("params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("gan:\n  image:\n    stackd: true\n")
    before = open("params.yaml").read()
    result = CliRunner().invoke(app, ["preset", "bad.yaml"])
    assert result.exit_code == 2
    assert "gan.image.stackd" in result.output
    assert open("params.yaml").read() == before

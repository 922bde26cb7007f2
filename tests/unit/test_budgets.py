"""Budgets are what users turn first: a classifier step budget that ends inside the first epoch
is refused before any work, naming the key; one that reaches an epoch's end trains."""

import pytest
import yaml
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.data.prepare import write_prepared


@pytest.fixture
def root(tmp_path, digits_prepared):
    write_prepared(digits_prepared, tmp_path / "data" / "prepared")
    return tmp_path


def write_params(root, section: str, **keys) -> str:
    params = yaml.safe_load(open("params.yaml"))
    params["trainer"]["progress_bar"] = False
    params[section].update(keys)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.mark.parametrize("name", ["evaluator", "backbone"])
@pytest.mark.parametrize("steps", [0, 2])
def test_a_budget_inside_the_first_epoch_is_refused_naming_the_key(root, name, steps):
    result = CliRunner().invoke(app, ["train", name, "-p", write_params(root, name, max_steps=steps),
                                      "--root", str(root)])
    assert result.exit_code == 2, result.output
    assert f"{name}.max_steps: {steps} ends inside the first epoch" in result.output
    assert not (root / "models" / name).exists()  # nothing written


def test_a_budget_of_one_epoch_trains_and_validates(root, digits_prepared):
    import json

    train_size = int((digits_prepared.manifest["split"] == "train").sum())
    per_epoch = -(-train_size // 256)
    params = write_params(root, "backbone", max_steps=per_epoch, batch_size=256, width=4, feature_dim=8)
    result = CliRunner().invoke(app, ["train", "backbone", "-p", params, "--root", str(root)])
    assert result.exit_code == 0, result.output
    config = json.loads((root / "models" / "backbone" / "config.json").read_text())
    assert config["best_val_acc"] > 0  # validation ran at the budget's end

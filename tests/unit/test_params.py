import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedlab.params import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "sklearn-digits"
    assert params.data.image_size == 16
    assert params.evaluator.seed != params.backbone.seed


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"data\.imgsize: unknown key"):
        parse_params({"data": {"imgsize": 16}})


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match=r"trainerr: unknown key"):
        parse_params({"trainerr": {}})


def test_out_of_range_value_names_key_and_range():
    with pytest.raises(ParamsError) as err:
        parse_params({"data": {"image_size": 2}})
    assert "data.image_size" in str(err.value)
    assert ">= 4" in str(err.value) and "got 2" in str(err.value)


def test_fraction_bounds_and_sum():
    with pytest.raises(ParamsError, match=r"data\.val_fraction: must be > 0"):
        parse_params({"data": {"val_fraction": 0.0}})
    with pytest.raises(ParamsError, match="val_fraction \\+ data.test_fraction"):
        parse_params({"data": {"val_fraction": 0.45, "test_fraction": 0.45}})


def test_bad_source_lists_allowed_forms():
    with pytest.raises(ParamsError, match="unknown source 'csv:x'.*npz:<path>"):
        parse_params({"data": {"source": "csv:x"}})


def test_bad_domain_name_is_rejected():
    with pytest.raises(ParamsError, match=r"partition\.feature_shift\.domains: .*entry 1: 'sepia' is not a domain"):
        parse_params({"partition": {"feature_shift": {"domains": ["original", "sepia"]}}})


def test_cli_exits_2_before_any_work(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"data": {"seed": -1}}))
    out = subprocess.run(
        [sys.executable, "-m", "embedlab.cli", "prepare", "--params", str(bad), "--root", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "data.seed" in out.stderr and ">= 0" in out.stderr
    assert not (tmp_path / "data").exists()


def test_cli_help_imports_no_heavy_library():
    code = (
        "import sys; from typer.testing import CliRunner; from embedlab.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "assert 'prepare' in r.output and 'publish' in r.output;"
        "heavy = [m for m in ('torch', 'lightning', 'mlflow', 'great_expectations', 'prefect', 'pandas') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _leaf_paths(raw: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in raw.items():
        paths += _leaf_paths(value, prefix + (key,)) if isinstance(value, dict) and value else [prefix + (key,)]
    return paths


def _schema_keys(schema, raw: dict, prefix: str = "") -> list[str]:
    """Every field the schema defines that params.yaml leaves out (dotted keys)."""
    from pydantic import BaseModel

    missing = []
    for name, field in schema.model_fields.items():
        key = field.alias or name
        if key not in raw:
            missing.append(prefix + key)
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(raw[key], dict):
            missing += _schema_keys(kind, raw[key], f"{prefix}{key}.")
    return missing


def test_params_yaml_is_the_one_source_of_defaults():
    """params.yaml names every key, and deleting any one key (or section) runs the same params:
    no schema default differs from the file."""
    import copy

    from embedlab.params import Params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _schema_keys(Params, raw) == []
    full = parse_params(raw)
    differ = []
    for path in _leaf_paths(raw) + [(section,) for section in raw]:
        trimmed = copy.deepcopy(raw)
        parent = trimmed
        for key in path[:-1]:
            parent = parent[key]
        value = parent.pop(path[-1])
        dotted = ".".join(map(str, path))
        try:
            if parse_params(trimmed) != full:
                differ.append(f"{dotted} (params.yaml {value!r})")
        except ParamsError as exc:  # a key without a default: refused, and named
            assert f"{dotted}: Field required" in str(exc), exc
    assert differ == [], "deleting these keys changes the run: the schema default differs from params.yaml"


def test_a_deleted_key_with_another_default_would_be_caught():
    """The check above can fail: a params.yaml value that is not the schema's default is found."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["backbone"]["max_epochs"] += 1
    edited = parse_params(raw)
    del raw["backbone"]["max_epochs"]
    assert parse_params(raw) != edited


def test_devices_and_nodes_take_counts_from_one():
    assert parse_params({"trainer": {"devices": 2, "num_nodes": 2}}).trainer.devices == 2
    for key in ("devices", "num_nodes"):
        with pytest.raises(ParamsError, match=rf"trainer\.{key}"):
            parse_params({"trainer": {key: 0}})

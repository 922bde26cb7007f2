"""docs/add-a-method.md, done as written: its files, its three edits, then `dvc repro publish@toy`
in a clone of the tiny run (conftest.py `tiny_pipeline`), whose stages are all up to date: only
the new method's stages run."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from .conftest import BIN, REPO, run

pytestmark = pytest.mark.slow

PAGE = REPO / "docs" / "add-a-method.md"


def test_the_add_a_method_page_works_as_written(tiny_pipeline, tmp_path):
    repo_copy = tmp_path / "repo"
    run(["git", "clone", "-q", str(tiny_pipeline.origin), str(repo_copy)], tmp_path)
    run(["dvc", "pull"], repo_copy)
    page = PAGE.read_text()
    files = re.findall(r"```python\n# file: (\S+)\n(.*?)```", page, flags=re.S)
    assert {f for f, _ in files} == {"src/embedlab/methods/toy/__init__.py", "src/embedlab/methods/toy/params.py",
                                     "src/embedlab/methods/toy/method.py"}
    for rel, code in files:
        (repo_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo_copy / rel).write_text(code)

    # 1. one MODELS line (the page's edit, made in the dict)
    init = repo_copy / "src/embedlab/catalogue.py"
    text = init.read_text()
    assert 'MODELS["toy"] = "embedlab.methods.toy.method"' in page
    init.write_text(text.replace('    "diffusion": "embedlab.methods.diffusion.method",\n',
                                 '    "diffusion": "embedlab.methods.diffusion.method",\n'
                                 '    "toy": "embedlab.methods.toy.method",\n'))
    assert init.read_text() != text
    # 2. one params.yaml section, and 3. the two dvc.yaml vars entries, both taken from the page
    blocks = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    section = yaml.safe_load(re.sub(r"^ {4}", "", blocks[0], flags=re.M))
    dvc_vars = yaml.safe_load(re.sub(r"^ {4}", "", blocks[1], flags=re.M))
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    (repo_copy / "params.yaml").write_text(yaml.safe_dump({**params, **section}, sort_keys=False))
    dvc = yaml.safe_load((repo_copy / "dvc.yaml").read_text())
    for entry in dvc_vars:
        (key, value), = entry.items()
        next(v for v in dvc["vars"] if key in v)[key].update(value)
    (repo_copy / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))

    # The stage commands import the copy's package (an editable install points at this checkout).
    env_src = str(repo_copy / "src")
    import os

    os.environ["PYTHONPATH"] = env_src
    try:
        out = run(["dvc", "repro", "publish@toy"], repo_copy)
    finally:
        del os.environ["PYTHONPATH"]
    # A new method reruns nothing that was there: the data, the gate and the references are reused.
    assert sorted(re.findall(r"Running stage '([^']+)'", out.stdout)) == ["evaluate@toy", "publish@toy", "train@toy"]

    metrics = json.loads((repo_copy / "metrics/toy.json").read_text())
    assert set(metrics["fd"]) == {"toy", "real"} and metrics["fd"]["toy"]["lo"] <= metrics["fd"]["toy"]["value"]
    assert metrics["n"] == 200  # 10 classes x samples_per_class (20, the schema's default)
    assert (repo_copy / "plots/toy/samples.png").stat().st_size > 0
    receipt = json.loads((repo_copy / "registry/toy.json").read_text())
    assert receipt["metric"] == "fd.toy" and receipt["higher_is_better"] is False
    assert receipt["value"] == metrics["fd"]["toy"]["value"] and receipt["alias"] == "champion"

    # The interface, the bundle and the model card, read back in a process that sees the copy.
    check = """
from embedlab.catalogue import get_model
from embedlab.methods.base import Method
from embedlab.params import load_params
from embedlab.registry import download_bundle, model_card_of
toy = get_model("toy")
assert isinstance(toy, Method) and toy.name == "toy"
assert load_params().toy.shrink == 0.8
stats = toy.load_bundle(download_bundle("toy", "toy-bundle"))
assert tuple(stats["mean"].shape) == (10, 1, 16, 16), stats["mean"].shape
card = model_card_of("toy")
assert card.startswith("# embedlab-toy") and "## Known limits" in card, card
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": env_src, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-c", check], cwd=repo_copy, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-3000:]

    # A typo in the new section stops the stage, naming the key.
    (repo_copy / "params.yaml").write_text(yaml.safe_dump({**params, "toy": {"shrinkk": 0.5}}, sort_keys=False))
    bad = subprocess.run([str(BIN / "embedlab"), "check-params"], cwd=repo_copy, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "toy.shrinkk: unknown key" in bad.stderr

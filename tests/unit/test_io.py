"""Every weight file is safetensors: nested trees of tensors round-trip exactly, nothing is pickled."""

from __future__ import annotations

import pytest
import torch

from embedlab.io import load_tensors, save_tensors


def test_tree_of_tensors_round_trips(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tree = {
        "feature_shift/fedbn/n10/s0": {"net": {"conv.weight": base, "bn.running_mean": torch.zeros(4)}},
        "odd%key": [{"w": base[0]}, {"w": base[1:]}],   # views of one storage: saved apart
        "empty_list": [], "empty_dict": {},
        "codebooks": torch.randn(2, 3, dtype=torch.float64),
        "steps": torch.tensor([1, 2], dtype=torch.long),
    }
    save_tensors(tree, tmp_path / "t.safetensors")
    back = load_tensors(tmp_path / "t.safetensors")
    assert set(back) == set(tree)
    assert torch.equal(back["feature_shift/fedbn/n10/s0"]["net"]["conv.weight"], base)
    assert isinstance(back["odd%key"], list) and torch.equal(back["odd%key"][1]["w"], base[1:])
    assert back["empty_list"] == [] and back["empty_dict"] == {}
    assert back["codebooks"].dtype == torch.float64 and back["steps"].dtype == torch.long
    # A bare list at the root too (the diffusion experts' file).
    save_tensors([{"a": torch.ones(1)}, {"a": torch.zeros(1)}], tmp_path / "l.safetensors")
    assert [float(s["a"]) for s in load_tensors(tmp_path / "l.safetensors")] == [1.0, 0.0]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_non_tensor_is_refused_by_name_and_nothing_is_written(tmp_path):
    with pytest.raises(TypeError, match="net/lr is a float"):
        save_tensors({"net": {"lr": 0.1}}, tmp_path / "bad.safetensors")
    assert not list(tmp_path.iterdir())


def test_missing_file_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors: missing"):
        load_tensors(tmp_path / "nope.safetensors")


def test_the_same_tree_is_the_same_file_in_every_process(tmp_path):
    # safetensors writes its metadata map in a per-process order: with two entries, one tree
    # gave two different files (a committed output's hash then depended on the process).
    import json
    import struct
    import subprocess
    import sys

    code = ("import sys, torch; from embedlab.io import save_tensors; "
            "save_tensors([{'a': torch.ones(2)}, [], {}], sys.argv[1])")
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for f in files:
        subprocess.run([sys.executable, "-c", code, str(f)], check=True)
    assert len({f.read_bytes() for f in files}) == 1
    raw = files[0].read_bytes()  # what makes it so: one metadata entry, nothing for the map's order to change
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert list(header["__metadata__"]) == ["embedlab.tree"]


def test_a_file_of_the_earlier_two_entry_layout_still_loads(tmp_path):
    import json

    from safetensors.torch import save_file

    save_file({"0/a": torch.ones(1), "1/a": torch.zeros(1)}, str(tmp_path / "old.safetensors"),
              metadata={"embedlab.lists": json.dumps([""]), "embedlab.empty": json.dumps({"2": "dict"})})
    back = load_tensors(tmp_path / "old.safetensors")
    assert isinstance(back, list) and float(back[0]["a"]) == 1.0 and back[2] == {}

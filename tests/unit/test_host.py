"""The kernel fingerprint (embedlab.host): what tells two hosts' numbers apart."""

import json

from embedlab.host import compare_fingerprint, kernel_fingerprint


def test_the_fingerprint_is_stable_and_a_changed_kernel_is_named(tmp_path):
    first, again = kernel_fingerprint(), kernel_fingerprint()
    assert first == again and len(set(first.values())) == len(first)  # stable, and one hash per kernel
    committed = {"host": {"cpu": "some CPU", "cache": "512 KB"}, "kernels": dict(first)}
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(committed))
    assert compare_fingerprint(str(path)).startswith("kernels: all ")
    committed["kernels"]["conv2d grouped"] = "000000000000"
    path.write_text(json.dumps(committed))
    line = compare_fingerprint(str(path))
    assert "1 of" in line and line.endswith(": conv2d grouped") and "some CPU, cache 512 KB" in line
    assert "no " in compare_fingerprint(str(tmp_path / "absent.json"))


def test_the_committed_fingerprint_names_every_kernel_this_host_computes():
    committed = json.load(open("benchmarks/results/kernels.json"))
    assert set(committed["kernels"]) == set(kernel_fingerprint()) and committed["host"]["cpu"]

"""The documentation site builds offline in strict mode (a broken link or nav entry fails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_site_builds_strict_and_offline(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "registry/index.html", "add-a-method/index.html", "methods/gan/index.html"} <= pages
    # Nothing the pages load comes from the network (the theme's highlight.js CDN is off).
    html = (tmp_path / "site/registry/index.html").read_text()
    assert "cdnjs" not in html and "googleapis" not in html


def test_the_gan_pages_benchmark_ranges_are_the_benchmarks_json():
    """docs/methods/gan.md quotes the 800-step stacked runs of benchmarks/gan_quality.py: the
    ranges in its prose are the min and max of that JSON."""
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    runs = json.loads((root / "benchmarks/results/gan_quality.json").read_text())
    short = [v for k, v in runs.items() if k.startswith("stacked_weak:") and k.split(":")[2] == "800"]
    assert short
    modes = [r["modes_covered"] for r in short]
    shares = [r["confident_share"] for r in short]
    text = " ".join((root / "docs/methods/gan.md").read_text().split())
    found = re.search(r"800-step runs on the selection seed covered (\d+)-(\d+) modes with a backbone confident "
                      r"share of (\d\.\d+)-(\d\.\d+)", text)
    assert found, "the sentence quoting gan_quality.json moved"
    assert (int(found[1]), int(found[2])) == (min(modes), max(modes))
    assert (float(found[3]), float(found[4])) == (round(min(shares), 2), round(max(shares), 2))


def test_the_federated_pages_probe_numbers_are_the_probes_json():
    """docs/methods/federated.md quotes benchmarks/results/federated_probes.json's label-skew
    rooms (central - FedAvg on val, selection seeds): each quoted number is that JSON's."""
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    probes = json.loads((root / "benchmarks/results/federated_probes.json").read_text())["label_skew"]
    room = {(int(k.split()[0]), k.split("alpha ")[1]): v["room"]["central-fedavg"] for k, v in probes.items()}
    text = " ".join((root / "docs/methods/federated.md").read_text().split())
    found = re.search(r"with 50 rounds FedAvg came within (\d\.\d+) \(alpha 0\.05\) and (\d\.\d+) \(alpha 0\.1\) of "
                      r"the central ceiling .*?with 10 rounds the room is (\d\.\d+) and (\d\.\d+)\.", text)
    assert found, "the sentence quoting federated_probes.json moved"
    quoted = [float(x) for x in found.groups()]
    expected = [room[(50, "0.05")], room[(50, "0.1")], room[(10, "0.05")], room[(10, "0.1")]]
    assert all(abs(q - e) <= 0.0005 for q, e in zip(quoted, expected)), (quoted, expected)
    assert f"on val with selection seeds it was +{room[(10, '0.1')]:.3f}" in text

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


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "benchmarks/README.md"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    import re

    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        found = re.match(r"#{1,6} (.+)", line)
        if found:
            slug = _slug(found.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _code(page: Path) -> str:
    """The page's inline code spans and fenced blocks: where it shows commands."""
    import re

    text = page.read_text()
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(blocks + spans)


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    import re

    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_every_make_target_and_embedlab_command_the_docs_show_exists():
    import re

    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    shown_make, shown_cli = set(), set()
    for page in PAGES:
        code = _code(page)
        shown_make |= set(re.findall(r"(?:^|\s|\()make ([a-z][\w-]*)", code))
        shown_cli |= set(re.findall(r"(?:^|[\s/(])embedlab ([a-z][\w-]*)", code))
    assert shown_make and shown_cli
    assert not shown_make - targets, f"make targets the docs show but the Makefile lacks: {shown_make - targets}"
    out = subprocess.run([sys.executable, "-m", "embedlab.cli", "--help"], capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "200"})
    commands = set(re.findall(r"│ ([a-z][\w-]*)\s", out.stdout))
    assert commands, out.stdout + out.stderr
    assert not shown_cli - commands, f"embedlab commands the docs show but the CLI lacks: {shown_cli - commands}"


def test_every_embedlab_flag_the_docs_show_exists():
    """`embedlab <command> ... --flag` in any code block of the docs: the command's --help lists --flag."""
    import re

    shown: dict[str, set[str]] = {}
    for page in PAGES:
        for line in _code(page).splitlines():
            for command, rest in re.findall(r"(?:^|[\s/(])embedlab ([a-z][\w-]*)([^|;&#`]*)", line):
                shown.setdefault(command, set()).update(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest))
    assert any(shown.values()), "no embedlab flag found in the docs: the check would say nothing"
    for command, flags in sorted(shown.items()):
        if not flags:
            continue
        out = subprocess.run([sys.executable, "-m", "embedlab.cli", command, "--help"], capture_output=True, text=True,
                             env={**__import__("os").environ, "COLUMNS": "200"})
        listed = set(re.findall(r"(--[a-z][\w-]*)", out.stdout))
        assert not flags - listed, f"embedlab {command}: the docs show {sorted(flags - listed)}, --help lists {sorted(listed)}"

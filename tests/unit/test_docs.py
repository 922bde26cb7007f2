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

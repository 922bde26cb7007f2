"""Pull-request report: what a change did to params, metrics, the registry and the pictures.

The numbers come from the real `dvc params diff` / `dvc metrics diff` CLI, so the report
shows what a reviewer would see running them by hand; a score in the settled format
(value, 95% interval) is one row that says whether its change is inside its noise. Gathering (git, dvc, files)
is kept apart from `render_report`, a pure function the tests call without dvc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Committed PNGs live under plots/; the partition picture is a DVC-cached output (not in git).
IMAGE_DIRS = ("plots",)
DVC_IMAGES = ("reports/partition/label_histograms.png",)
DEFAULT_BASES = ("main", "origin/main")


class ReportError(RuntimeError):
    """The report cannot be made as asked; the message says why."""


@dataclass
class Image:
    path: str              # repository-relative, as a reviewer would look it up
    link: str | None       # None: nowhere a markdown viewer can fetch it from


@dataclass
class ReportInputs:
    base: str
    base_sha: str
    params_md: str
    metrics_md: str
    receipts: list[dict] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    plots_html: str | None = None
    notes: list[str] = field(default_factory=list)
    timings_md: str = ""   # wall times, training traces, hosts: how a run went, not what it scored


# Keys that say how long a run took, what it traced on the way or where it ran: they change on
# every rerun and every machine without a result changing, so they get a section of their own.
TIMING_WORDS = ("seconds", "wall", "_time", "timing")


def is_timing(path: str, key: str) -> bool:
    key = key.lower()
    return (path.startswith("dvclive/") or key.startswith("host.") or key == "host"
            or any(word in key for word in TIMING_WORDS))


def flat_metrics(tree, prefix: str = "") -> dict:
    """{"a.b.0.c": leaf}: a metrics file's dicts and lists flattened, as `dvc metrics diff` names
    the leaves (what `is_timing` is asked about)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {prefix: tree}
    out: dict = {}
    for key, value in items:
        out.update(flat_metrics(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _table_or(md: str, empty: str) -> str:
    # `dvc params diff --md` prints a bare header when nothing changed; say so in words.
    rows = [line for line in md.strip().splitlines() if line.strip()]
    return "\n".join(rows) if len(rows) > 2 else empty


def _decision(r: dict) -> str:
    prev = r.get("previous_champion_value")
    if r.get("alias") == "champion":
        return "first champion" if prev is None else f"beat the previous champion's {prev}"
    quality = r.get("quality")
    if quality is not None and not quality.get("met", True):
        return (f"below the quality floor ({quality.get('value')} < {quality.get('threshold')}): registered, "
                "never champion")
    return f"did not beat the champion's {'-' if prev is None else prev}; the champion stays"


def render_report(inputs: ReportInputs) -> str:
    """The markdown for a PR comment; no I/O, so it is tested on plain values."""
    same = inputs.base_sha.startswith(inputs.base)
    out = [f"## embedlab report vs `{inputs.base}`" + ("" if same else f" ({inputs.base_sha[:10]})"), ""]
    out += ["### Params", "", _table_or(inputs.params_md, f"No params changed since `{inputs.base}`."), ""]
    out += ["### Metrics", "", _table_or(inputs.metrics_md, f"No metrics changed since `{inputs.base}`."), ""]
    if "95% interval" in inputs.metrics_md:
        out += ["A score's change is *inside the 95% interval* when either value lies in the other's interval "
                "(a rerun could give it): noise, not a result.", ""]

    if inputs.timings_md:
        out += ["### Timings and traces", "",
                "Wall times, training traces and hosts change on every rerun and machine; no score is here.", "",
                inputs.timings_md, ""]

    out += ["### Registry decisions", ""]
    if inputs.receipts:
        out += ["| model | version | alias | metric | value | previous champion | why |",
                "|---|---|---|---|---|---|---|"]
        for r in inputs.receipts:
            prev = r.get("previous_champion_value")
            out.append(f"| {r.get('name', r.get('model'))} | v{r.get('version')} | **{r.get('alias')}** "
                       f"| {r.get('metric')} | {r.get('value')} | {'-' if prev is None else prev} | {_decision(r)} |")
    else:
        out.append("No registry receipts (`registry/<model>.json`) in this workspace: nothing was published.")
    out.append("")

    out += ["### Pictures", ""]
    if inputs.images:
        for image in inputs.images:
            out.append(f"**{image.path}**" if image.link is None else f"![{image.path}]({image.link})")
            if image.link is None:
                out.append("(not in git: see the plots artifact)")
            out.append("")
    else:
        out += [f"No pictures changed since `{inputs.base}`.", ""]
    if inputs.plots_html:
        out += [f"Base and new plots overlaid: `{inputs.plots_html}` (`dvc plots diff`; in CI the `pr-plots` artifact).", ""]

    if inputs.notes:
        out += ["### Notes", ""] + [f"- {note}" for note in inputs.notes] + [""]
    return "\n".join(out)


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ReportError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def resolve_base(root: Path, base: str | None) -> tuple[str, str]:
    """(name, sha) of the base revision; the default is main, then origin/main, then HEAD."""
    candidates = [base] if base else list(DEFAULT_BASES) + ["HEAD"]
    for name in candidates:
        found = _git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        if found.returncode == 0:
            return name, found.stdout.strip()
    if base:
        raise ReportError(f"unknown base revision {base!r}: not a commit in {root.resolve()} "
                          "(in CI, check out with fetch-depth: 0 so the base branch is present)")
    raise ReportError(f"no base revision: {root.resolve()} has no main, origin/main or HEAD commit")


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    # `python -m dvc` uses this interpreter's dvc, so PATH need not hold the venv.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)


def dvc_diff(root: Path, kind: str, base: str, notes: list[str]) -> str:
    result = _dvc(root, kind, "diff", "--md", base)
    if result.returncode != 0:
        raise ReportError(f"dvc {kind} diff {base} failed: {(result.stderr or result.stdout).strip()}")
    notes += [f"dvc {kind} diff: {line}" for line in result.stderr.strip().splitlines() if line.strip()]
    return result.stdout


SCORE_PARTS = ("value", "lo", "hi", "n", "seeds", "plugin")


def _fmt(x) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-" if x is None else str(x)
    # Enough digits to show every stored digit (metrics keep <= 6 decimals), so a row's change
    # is exactly its new value minus its old one as printed.
    return f"{x:.10g}"


def noise_mark(old: dict, new: dict) -> str:
    """A score change against its 95% intervals: inside when either value lies in the other's
    interval (a rerun could give it), outside when neither does."""
    def inside(x, s):
        return x is not None and s.get("lo") is not None and s.get("hi") is not None and s["lo"] <= x <= s["hi"]

    if old.get("value") is None or new.get("value") is None:
        return "-"
    if not any(s.get("lo") is not None for s in (old, new)):
        return "no interval"
    return "inside the 95% interval" if inside(new["value"], old) or inside(old["value"], new) \
        else "**outside the 95% interval**"


def metrics_table(diff: dict, base: str, timings: bool = False) -> str:
    """`dvc metrics diff --json --all` as markdown: a score (value, lo, hi) is one row with its
    intervals and whether the change is inside the noise; other metrics as dvc shows them.
    Only changed metrics appear; `timings` picks the timing/trace/host rows instead of the
    results (`is_timing`)."""
    rows = []
    for path, all_entries in sorted(diff.items()):
        entries = {k: v for k, v in all_entries.items() if is_timing(path, k) == timings}
        scores: dict = {}
        plain = {}
        for key, change in entries.items():
            prefix, _, part = key.rpartition(".")
            if part in SCORE_PARTS and prefix and (f"{prefix}.lo" in entries or f"{prefix}.hi" in entries):
                scores.setdefault(prefix, {"old": {}, "new": {}})
                scores[prefix]["old"][part] = change.get("old")
                scores[prefix]["new"][part] = change.get("new")
            else:
                plain[key] = change
        for key in sorted(set(scores) | set(plain)):
            if key in scores:
                old, new = scores[key]["old"], scores[key]["new"]
                if old.get("value") == new.get("value"):
                    continue
                diff_value = (new["value"] - old["value"]) if None not in (old.get("value"), new.get("value")) else None

                def interval(s):
                    return "-" if s.get("lo") is None else f"[{_fmt(s['lo'])}, {_fmt(s['hi'])}]"

                rows.append(f"| {path} | {key} | {_fmt(old.get('value'))} | {_fmt(new.get('value'))} | "
                            f"{_fmt(diff_value)} | {interval(old)} -> {interval(new)} | {noise_mark(old, new)} |")
            else:
                change = plain[key]
                if change.get("old") == change.get("new"):
                    continue
                rows.append(f"| {path} | {key} | {_fmt(change.get('old'))} | {_fmt(change.get('new'))} | "
                            f"{_fmt(change.get('diff'))} | | no interval |")
    if not rows:
        return ""
    head = [f"| Path | Metric | {base} | workspace | Change | 95% interval ({base} -> workspace) | vs noise |",
            "|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def metrics_diff(root: Path, base: str, notes: list[str]) -> tuple[str, str]:
    """(the results table, the timings-and-traces table) from one `dvc metrics diff`."""
    result = _dvc(root, "metrics", "diff", "--json", "--all", base)
    if result.returncode != 0:
        raise ReportError(f"dvc metrics diff {base} failed: {(result.stderr or result.stdout).strip()}")
    notes += [f"dvc metrics diff: {line}" for line in result.stderr.strip().splitlines() if line.strip()]
    diff = json.loads(result.stdout or "{}")
    return metrics_table(diff, base), metrics_table(diff, base, timings=True)


def read_receipts(root: Path) -> list[dict]:
    receipts = []
    for path in sorted((root / "registry").glob("*.json")):
        try:
            receipts.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a half-written receipt is no decision; the table simply omits it
    return receipts


def _lock_hash(lock: dict, path: str) -> str | None:
    """md5 of the dvc.lock output that holds `path` (the file itself or a directory above it)."""
    for stage in (lock or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if path == out["path"] or path.startswith(out["path"].rstrip("/") + "/"):
                return out.get("md5")
    return None


def changed_images(root: Path, base_sha: str) -> list[str]:
    """PNGs that differ between base and the workspace, committed or not."""
    changed = _git(root, "diff", "--name-only", base_sha, "--", *IMAGE_DIRS).stdout.split()
    changed += _git(root, "ls-files", "--others", "--exclude-standard", "--", *IMAGE_DIRS).stdout.split()
    images = sorted({p for p in changed if p.endswith(".png") and (root / p).is_file()})
    # Git cannot see DVC-cached pictures: compare the hash dvc.lock records at each revision.
    old = _git(root, "show", f"{base_sha}:dvc.lock", check=False)
    old_lock = yaml.safe_load(old.stdout) if old.returncode == 0 else {}
    lock_file = root / "dvc.lock"
    new_lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    for path in DVC_IMAGES:
        if (root / path).is_file() and _lock_hash(old_lock, path) != _lock_hash(new_lock, path):
            images.append(path)
    return images


def _git_plot_targets(root: Path) -> list[str]:
    """Top-level dvc.yaml plots whose files are all in git, so every revision can supply them."""
    tracked = _git(root, "ls-files").stdout.splitlines()
    spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    targets = []
    for entry in spec.get("plots", []):
        name, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        y = (props or {}).get("y")
        files = list(y) if isinstance(y, dict) else [name]
        if all(any(t == f or t.startswith(f.rstrip("/") + "/") for t in tracked) for f in files):
            targets.append(name)
    # The evaluate stages' plots/<model>/ folders (in git: cache false), listed nowhere else.
    targets += sorted({"/".join(t.split("/")[:2]) for t in tracked if t.startswith("plots/") and t.count("/") >= 2})
    return targets


def plots_diff(root: Path, base: str, plots_out: Path, notes: list[str]) -> str | None:
    """`dvc plots diff` HTML; the path of its index.html relative to root, or None."""
    plots_dir = plots_out if plots_out.is_absolute() else root / plots_out
    index = plots_dir / "index.html"
    index.unlink(missing_ok=True)  # a stale page from an earlier run must not pass for this one
    result = _dvc(root, "plots", "diff", base, "--out", str(plots_dir))
    if not index.exists():
        # One DVC-cached plot missing from the cache at either revision makes dvc drop every
        # plot of that revision (and exit 0); retry with the plots git alone can supply.
        targets = _git_plot_targets(root)
        result = _dvc(root, "plots", "diff", base, "--out", str(plots_dir), "--targets", *targets)
        if index.exists():
            notes.append("dvc plots diff: plots kept in the DVC cache were skipped (not in this cache "
                         f"for one revision); shown: {', '.join(targets)}")
    if not index.exists():  # pictures are a convenience: the numbers still make the report worth posting
        notes.append(f"dvc plots diff wrote nothing: {(result.stderr or result.stdout).strip()[-500:]}")
        return None
    return Path(os.path.relpath(index, root)).as_posix()


def _link(root: Path, path: str, out: Path, image_url: str | None) -> str | None:
    if not image_url:  # relative to the report, so it renders in a local markdown viewer
        return Path(os.path.relpath(root / path, out.parent)).as_posix()
    tracked = _git(root, "ls-files", "--error-unmatch", "--", path, check=False).returncode == 0
    return image_url.rstrip("/") + "/" + path if tracked else None


def write_report(root: Path, base: str | None, out: Path, plots_out: Path | None,
                 image_url: str | None = None) -> Path:
    """Gather everything for `render_report` and write it to `out` (paths relative to root)."""
    root = Path(root)
    out = out if out.is_absolute() else root / out
    name, sha = resolve_base(root, base)
    if name == sha:  # a full sha would stretch every table column it heads
        name = sha[:12]
    notes: list[str] = []
    # dvc gets the name, not the sha: it heads the table's column.
    params_md = dvc_diff(root, "params", name, notes)
    metrics_md, timings_md = metrics_diff(root, name, notes)

    plots_html = plots_diff(root, name, plots_out, notes) if plots_out is not None else None
    images = [Image(p, _link(root, p, out, image_url)) for p in changed_images(root, sha)]
    text = render_report(ReportInputs(name, sha, params_md, metrics_md, read_receipts(root), images, plots_html, notes,
                                      timings_md))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out

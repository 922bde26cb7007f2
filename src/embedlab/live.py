"""DVCLive writers for the stages that log their own curves (the Trainer factory's logger
covers the rest): one place that says how a stage's dvclive/<name>/ folder is written."""

from __future__ import annotations

from pathlib import Path


def open_live(live_dir: Path):
    """A `dvclive.Live` for dvclive/<name>/, used as a context manager. dvcyaml=False: the
    plots are declared once, in the project's dvc.yaml (Live would otherwise append its own
    entries there, with paths relative to wherever it ran); no experiment, no report."""
    from dvclive import Live

    return Live(str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None)

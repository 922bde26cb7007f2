"""Where every stage reads and writes, relative to the repository root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def partitions(self) -> Path:
        return self.root / "data" / "partitions"

    @property
    def validation_report(self) -> Path:
        return self.root / "reports" / "validation"

    @property
    def partition_report(self) -> Path:
        return self.root / "reports" / "partition"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.json"

    def plots(self, name: str) -> Path:
        return self.root / "plots" / name

    def dvclive(self, name: str) -> Path:
        return self.root / "dvclive" / name

    def receipt(self, name: str) -> Path:
        return self.root / "registry" / f"{name}.json"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

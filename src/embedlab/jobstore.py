"""Job-level resume for the methods' train stages: a killed `dvc repro` does not redo finished jobs.

A method's train stage runs many independent jobs (training seeds, parts, federated runs, GAN
stacks; `embedlab.jobs`). `JobStore` keeps each finished job's result, and the files it wrote
into the stage's outs, in .embedlab/resume/<name>/jobs/: under the repository root, outside
every stage's outs (which DVC deletes when a stage starts), git-ignored. The store is keyed by
what the stage's result depends on (params, data, given networks, code: `stage_key`); a rerun
with the same key takes each finished job from the store instead of running it again, so the
stage's outputs are byte for byte those of an uninterrupted run (every job seeds itself:
`embedlab.jobs.fresh`). A store of another key is set aside with a message and the stage starts
fresh; an unreadable job file stops the stage (it is read with weights_only, never unpickled).
`done()` removes the store once the stage's outputs are written.

Results travel as tensors, numbers, strings, None, lists, tuples and dicts (what
`torch.load(weights_only=True)` reads back); files as bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

RESUME_DIR = Path(".embedlab") / "resume"  # under the repository root: outside every stage's outs, git-ignored


class ResumeError(RuntimeError):
    """A kept checkpoint or job cannot be resumed from; the message names the file and the way out."""


def key_digest(key: dict) -> str:
    """The sha256 a resume folder is keyed by: of `key` as sorted JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def stored_key(folder: Path) -> str | None:
    """The key a resume folder was made for (its key.json), or None when unreadable or absent."""
    try:
        return json.loads((Path(folder) / "key.json").read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fresh_folder(folder: Path, key: str) -> None:
    """An empty resume folder for `key` (anything kept there before removed)."""
    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).mkdir(parents=True)
    (Path(folder) / "key.json").write_text(json.dumps({"key": key}))


def tree_digest(paths: Iterable[Path]) -> str:
    """sha256 over every file under `paths` (files or folders), by name (relative to the folder
    given) and content: the same wherever the repository or the package lies."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
        for f in files:
            if "__pycache__" in f.parts:
                continue
            digest.update(str(f.relative_to(path.parent)).encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def stage_key(name: str, section: dict, trainer: dict, deps: Iterable[Path]) -> dict:
    """What a method's train stage depends on: its params section, the trainer keys that change a
    result, and every file it reads (its data, given networks and code, as dvc.yaml lists them)."""
    trainer = {k: v for k, v in trainer.items() if k not in ("progress_bar", "log_every_n_steps")}
    return {"name": name, "section": section, "trainer": trainer, "deps": tree_digest(deps)}


def _plain(node, where: str):
    """`node` as what weights_only reads back: numpy scalars become Python numbers (the same
    value); anything else that would not load back is refused here, when the job is stored."""
    import numpy as np
    import torch

    if node is None or isinstance(node, (bool, int, str, torch.Tensor)):
        return node
    if isinstance(node, float):
        return float(node)
    if isinstance(node, np.generic) and node.shape == ():
        return node.item()
    if isinstance(node, dict):
        return {k: _plain(v, f"{where}/{k}") for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return tuple(items) if isinstance(node, tuple) else items
    raise TypeError(f"job result {where}: {type(node).__name__} cannot be kept for resume "
                    "(tensors, numbers, strings, lists and dicts only)")


class JobStore:
    """Finished jobs of one train stage run, kept for a rerun with the same key (module doc)."""

    def __init__(self, root: Path, name: str, key: dict, log: Callable[[str], None] = print):
        self.root, self.name, self.log = Path(root), name, log
        self.dir = self.root / RESUME_DIR / name / "jobs"
        self.key = key_digest(key)
        self.reused: list[str] = []
        kept = sorted(self.dir.glob("*.pt")) if self.dir.is_dir() else []
        if stored_key(self.dir) != self.key:
            if kept:
                log(f"{self.dir}: {len(kept)} job(s) kept from a run with other params, data or code: "
                    f"starting {name} fresh")
            fresh_folder(self.dir, self.key)
        elif kept:
            log(f"resuming {name}: {len(kept)} finished job(s) kept in {self.dir} are not run again")

    def _file(self, job_key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "~" for c in job_key)
        return self.dir / f"{safe[:80]}-{hashlib.sha256(job_key.encode()).hexdigest()[:12]}.pt"

    def get(self, job_key: str) -> tuple[bool, object]:
        """(True, result) for a finished job, its files written back where it wrote them; else (False, None)."""
        import torch

        path = self._file(job_key)
        if not path.exists():
            return False, None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("job") != job_key or not isinstance(payload.get("files"), dict):
                raise ValueError("not this job's file")
        except Exception as exc:  # noqa: BLE001  (any failure to read it: never resumed from)
            raise ResumeError(f"{path}: not a readable job result ({type(exc).__name__}: {exc}); "
                              f"delete {self.dir} to start {self.name} fresh") from None
        for rel, data in payload["files"].items():
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.resume")
            tmp.write_bytes(data.numpy().tobytes())
            os.replace(tmp, target)
        self.reused.append(job_key)
        return True, payload["result"]

    def put(self, job_key: str, result, files: Iterable[Path] = ()) -> None:
        """Keep a finished job's result and the files it wrote (paths under the root)."""
        import torch

        kept = {}
        for f in files:
            f = Path(f)
            rel = f.resolve().relative_to(self.root.resolve())
            kept[str(rel)] = torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) if f.stat().st_size \
                else torch.zeros(0, dtype=torch.uint8)
        payload = {"job": job_key, "result": _plain(result, job_key), "files": kept}
        path = self._file(job_key)
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def done(self) -> None:
        """The stage's outputs are written: nothing left to resume."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for parent in (self.dir.parent, self.dir.parent.parent):
            try:
                parent.rmdir()  # only if empty: a classifier's checkpoint folder stays
            except OSError:
                break


def method_store(name: str, params, paths, inputs: Iterable[Path], log: Callable[[str], None] = print) -> JobStore:
    """The job store of method `name`'s train stage: keyed by its params section, the trainer and
    the files the stage reads: `inputs` (its data and given networks) and its code (the method's
    package and the shared modules dvc.yaml lists as the stage's deps)."""
    src = Path(__file__).resolve().parent
    code = [src / "methods" / name, *(src / f for f in ("batches.py", "numerics.py", "jobs.py", "jobstore.py"))]
    key = stage_key(name, getattr(params, name).model_dump(), params.trainer.model_dump(), [*inputs, *code])
    return JobStore(paths.root, name, key, log)

"""Small file helpers every stage shares."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(target: Path, payload: dict) -> None:
    """Write JSON so a reader (dvc, a report, the next stage) sees the old file or the new one, never half."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; these files are for everyone to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(module, path: Path) -> None:
    """A module's state dict as safetensors: plain tensors, nothing executable."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def load_weights(module, path: Path, device="cpu"):
    """Load safetensors into `module` (strict) and return it on `device` in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; train the model first")
    module.load_state_dict(load_file(str(path), device=str(device)))
    return module.to(device).eval()

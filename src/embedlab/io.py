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


def save_tensors(tree, path: Path) -> None:
    """A dict or list of tensors, nested (state dicts, lists of them, runs of them), as one
    safetensors file: keys are the paths joined by "/" ("/" and "%" inside a key escaped as
    %2F and %25); which nodes are lists, and empty ones, ride in the file's metadata.
    Written atomically; `load_tensors` gives the same tree back."""
    from safetensors.torch import save_file

    flat: dict = {}
    lists: list[str] = []
    empty: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, (list, tuple, dict)) and not node and prefix:
            empty[prefix] = "list" if isinstance(node, (list, tuple)) else "dict"
            return
        if isinstance(node, (list, tuple)):
            lists.append(prefix)
            items = enumerate(node)
        elif isinstance(node, dict):
            items = node.items()
        else:
            if not hasattr(node, "detach"):
                raise TypeError(f"{path}: {prefix or 'the root'} is a {type(node).__name__}, not a tensor")
            flat[prefix] = node.detach().cpu().contiguous().clone()  # clone: no two keys share memory
            return
        for key, child in items:
            part = str(key).replace("%", "%25").replace("/", "%2F")  # a key may hold "/" (run keys do)
            walk(child, f"{prefix}/{part}" if prefix else part)

    walk(tree, "")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        # One metadata entry: safetensors writes its metadata map in an order that changes from
        # process to process, so two entries made the same tree two different files.
        save_file(flat, tmp, metadata={"embedlab.tree": json.dumps({"lists": lists, "empty": empty})})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path, device="cpu"):
    """The tree `save_tensors` wrote (dicts, lists, tensors on `device`)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; train the model first")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if "embedlab.tree" in meta:
            tree = json.loads(meta["embedlab.tree"])
        else:  # files written before the single entry
            tree = {"lists": json.loads(meta.get("embedlab.lists", "[]")), "empty": json.loads(meta.get("embedlab.empty", "{}"))}
        lists = set(tree["lists"])
        root: dict = {}

        def place(key: str, value) -> None:
            node, *parts = [root, *key.split("/")]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value

        for key, kind in tree["empty"].items():
            place(key, [] if kind == "list" else {})
        for key in f.keys():
            place(key, f.get_tensor(key))

    def build(node, prefix: str):
        if not isinstance(node, dict) or not node:
            return node
        out = {k.replace("%2F", "/").replace("%25", "%"): build(v, f"{prefix}/{k}" if prefix else k)
               for k, v in node.items()}
        return [out[str(i)] for i in range(len(out))] if prefix in lists else out

    return build(root, "")

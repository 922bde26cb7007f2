"""The version's archive: a `torch.export` program (`pt2`) whose graph is JSON and weights raw
tensor bytes. The one pickled record (sample inputs) is dropped before torch reads the
archive, so loading never runs an unpickler.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.methods.base import ModelBundle
from embedlab.registry.store import RegistryError

if TYPE_CHECKING:
    pass


# Records of a torch.export archive that are plain text, JSON or raw tensor bytes.
_PT2_TEXT = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}


_PT2_CONFIGS = {"models/model.json", "data/weights/model_weights_config.json",
                "data/constants/model_constants_config.json"}


_PT2_SAMPLE_INPUTS = "data/sample_inputs/model.pt"  # torch.save pickle: never handed to torch


_PT2_RAW = re.compile(r"data/(weights/weight_|constants/tensor_)\d+")


def export_ready(bundle: ModelBundle):
    import copy

    import numpy as np

    module = bundle.module
    if module.training or any(t.device.type != "cpu" for t in module.state_dict().values()):
        # Exporting in train mode would bake dropout / batch statistics into the graph, and
        # device-bound weights could not be loaded on a CPU host; fix a copy, not the caller's.
        module = copy.deepcopy(module).cpu().eval()
    example = np.ascontiguousarray(bundle.input_example, dtype=np.float32)
    if example.shape[0] == 1:
        # torch.export turns a size-1 dimension into a constant: a batch of one would give a
        # model that accepts nothing but batches of one.
        example = np.concatenate([example, example])
    return module, example


def pickle_free_archive(archive: Path) -> io.BytesIO:
    """A copy of a pt2 archive that torch can load without unpickling anything.

    Every record must be text, JSON, or a raw tensor that its JSON config marks as such;
    anything else (pickled or custom weights, AOTInductor libraries, extra files) is refused.
    The sample inputs, the one pickle torch.export always writes, become an empty record,
    which torch reads as "no sample inputs".
    """
    out = io.BytesIO()
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        records = {info.filename: info for info in src.infolist() if not info.is_dir()}
        prefixes = {name.split("/", 1)[0] for name in records}
        if len(prefixes) != 1 or not all("/" in name for name in records):
            raise RegistryError(f"{archive}: not a torch.export archive")
        prefix = prefixes.pop() + "/"
        raw_allowed: set[str] = set()
        for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            if prefix + config in records:
                entries = json.loads(src.read(prefix + config)).get("config", {})
                for entry in entries.values():
                    if entry.get("use_pickle") is not False:
                        raise RegistryError(f"{archive}: {config} stores a pickled tensor")
                    raw_allowed.add(f"{config.rsplit('/', 1)[0]}/{entry['path_name']}")
        for full, info in records.items():
            rel = full[len(prefix):]
            if rel == _PT2_SAMPLE_INPUTS:
                dst.writestr(full, b"")
                continue
            data = src.read(info)
            if rel in _PT2_CONFIGS:
                json.loads(data)  # must parse: a config or graph that is not JSON is not ours
            elif not (rel in _PT2_TEXT or (rel in raw_allowed and _PT2_RAW.fullmatch(rel))):
                raise RegistryError(f"{archive}: record {rel!r} is not plain data; refusing to load")
            dst.writestr(full, data)
    out.seek(0)
    return out

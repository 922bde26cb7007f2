"""Loading by alias: the exported program (`load_model`) or the bundle's files
(`download_bundle`, rebuilt by the method's `load_bundle`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.paths import Paths
from embedlab.registry.archive import pickle_free_archive
from embedlab.registry.store import CHAMPION, RegistryError, import_mlflow, missing_is_registry_error, registered_name, version_by_alias

if TYPE_CHECKING:
    pass


class LoadedModel:
    """A registry version, callable on a float32 batch (numpy or torch) like the module was."""
    def __init__(self, module, name: str, version: int, alias: str):
        self.module, self.name, self.version, self.alias = module, name, version, alias

    def __call__(self, batch):
        import numpy as np
        import torch

        if not isinstance(batch, torch.Tensor):
            batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            return self.module(batch)

    def __repr__(self) -> str:
        return f"LoadedModel({registered_name(self.name)} v{self.version} @{self.alias})"


def load_model(name: str, alias: str = CHAMPION, paths: Paths | None = None) -> LoadedModel:
    mlflow = import_mlflow()
    import torch

    client, uri, model, found = version_by_alias(name, alias, paths)
    version = found.version
    with missing_is_registry_error(model, alias, uri):
        # A models:/ URI would be resolved against MLflow's global registry URI, not `uri`.
        source = client.get_model_version_download_uri(model, version)
    with tempfile.TemporaryDirectory(prefix="embedlab-registry-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch,
                                                         tracking_uri=uri))
        archive = local / "data" / "model.pt2"
        if not archive.is_file():
            raise RegistryError(f"{model} v{version} is not a torch.export (pt2) model; "
                                "pickled formats are never loaded")
        program = torch.export.load(pickle_free_archive(archive))
    return LoadedModel(program.module(), name, int(version), alias)


def download_bundle(name: str, dst: Path, alias: str = CHAMPION, paths: Paths | None = None) -> Path:
    """The files a bundle carried beside its program (e.g. the vq method's config and weights
    for tokenizer and priors: enough to encode, decode and sample), fetched from the run that
    registered `embedlab-<name>@<alias>` into `dst`; returns the folder holding them."""
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    _, uri, model, found = version_by_alias(name, alias, paths)
    run_id = found.run_id
    Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(dst),
                                                        tracking_uri=uri))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"{model}@{alias} (run {run_id}) carries no bundle files: {exc}") from None

"""The MLflow store: registered names, the tracking URI, the client, aliases, and the error every
registry call raises. mlflow is imported inside the functions: `import mlflow` alone costs
seconds, and light CLI stages must not pay it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.paths import Paths

if TYPE_CHECKING:
    pass


CHAMPION, CHALLENGER = "champion", "challenger"


# Version tags the gate reads back, so comparing never has to load the champion's run.
METRIC_TAG, VALUE_TAG, DIRECTION_TAG = "primary_metric", "primary_metric_value", "higher_is_better"


MLFLOW_KEY = re.compile(r"[^\w.\- /:]")


class RegistryError(RuntimeError):
    """A model cannot be published or loaded as asked; the message says why."""


def import_mlflow():
    # MLflow 3 starts a telemetry client at import that posts usage to the internet;
    # this project runs with no network, so switch it off unless the caller chose.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # noise in stage logs
    import mlflow

    return mlflow


def import_mlflow_pytorch():
    """mlflow.pytorch without the `pytorch_lightning` import it makes for a Lightning autolog
    callback (2.4-4.6 s of each publish stage here, measured side by side: 3.7-5.9 s plain,
    1.3-1.4 s without it). This project logs models explicitly and never autologs; the callback
    is optional in mlflow (an ImportError is swallowed). A process that already imported
    pytorch_lightning keeps it, and the block is lifted once mlflow.pytorch is in."""
    import sys

    mlflow = import_mlflow()
    block = "pytorch_lightning" not in sys.modules
    if block:
        sys.modules["pytorch_lightning"] = None  # `import pytorch_lightning` raises ImportError
    try:
        import mlflow.pytorch  # noqa: F401
    finally:
        if block and "pytorch_lightning" in sys.modules and sys.modules["pytorch_lightning"] is None:
            del sys.modules["pytorch_lightning"]
    return mlflow


def registered_name(name: str) -> str:
    return f"embedlab-{name}"


def tracking_uri(paths: Paths) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(paths.root / 'mlflow.db').resolve()}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys, the way `dvc metrics diff` shows them."""
    if hasattr(tree, "model_dump"):
        tree = tree.model_dump()
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def experiment_id(client, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # MLflow's default artifact root is ./mlruns under whatever the cwd is; keep the
        # artifacts next to the database so the registry stays one movable folder.
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent publish
        return client.get_experiment_by_name(name).experiment_id


@contextmanager
def global_tracking_uri(mlflow, uri: str):
    """log_model only speaks through MLflow's global client, and set_tracking_uri also
    exports MLFLOW_TRACKING_URI, which tracking_uri() obeys: left set, the next publish or
    load for another root would silently use this store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets both the global and the variable


@contextmanager
def missing_is_registry_error(model: str, alias: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"{model}@{alias} not found in {uri}: {exc.message}") from None


def version_by_alias(name: str, alias: str, paths: Paths | None):
    """(client, tracking uri, registered name, ModelVersion) for `embedlab-<name>@<alias>`,
    resolved once (the alias may move meanwhile); a missing one is a RegistryError."""
    import_mlflow()
    from mlflow import MlflowClient

    uri = tracking_uri(paths or Paths())
    model = registered_name(name)
    client = MlflowClient(tracking_uri=uri)
    with missing_is_registry_error(model, alias, uri):
        return client, uri, model, client.get_model_version_by_alias(model, alias)

"""MLflow model registry: publish with lineage, gate champion / challenger, load by alias.

A version is stored by MLflow's pytorch flavour as a `torch.export` program (`pt2`): the
graph is JSON and the weights raw tensor bytes, so no class has to be importable to load it.
The one pickled record in that archive (sample inputs) is dropped before torch reads it,
so `load_model` never runs an unpickler at all.
mlflow and torch are imported inside the functions: `import mlflow` alone costs seconds and
light CLI stages must not pay it.

The package by job: store.py (names, the tracking URI, the client, aliases), gate.py (champion
or challenger), archive.py (the pt2 archive, read without unpickling), card.py (the model card),
publish.py (lineage, register, gate, alias, the receipt), load.py (by alias).
"""

from embedlab.registry.card import model_card, model_card_of
from embedlab.registry.gate import gate, primary_score
from embedlab.registry.load import LoadedModel, download_bundle, load_model
from embedlab.registry.publish import data_hash, git_commit, publish
from embedlab.registry.store import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    experiment_id,
    flatten,
    global_tracking_uri,
    registered_name,
    tracking_uri,
)

__all__ = ["CHALLENGER", "CHAMPION", "LoadedModel", "RegistryError", "data_hash", "download_bundle", "experiment_id",
           "flatten", "gate", "git_commit", "global_tracking_uri", "load_model", "model_card", "model_card_of", "primary_score",
           "publish", "registered_name", "tracking_uri"]

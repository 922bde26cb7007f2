"""The federated core as a Flower (flwr 1.42) ServerApp / ClientApp, for real machines.

Needs the Flower environment (`make flower-env`: flwr pins a fastapi that prefect cannot
share, so it lives in .venv-flower). The apps move only what `client_update` returns:

- ClientApp `train`: receives the global state and the run's config, loads its own client
  data (its partition id picks its client from a partition-stage npz), calls
  `simulation.client_update`, keeps its private parts (FedBN's normalisation layers, FRAug's
  RTNet) in the node's `context.state`, and replies with the public state and its sample count.
- ServerApp main: waits for the nodes, sends the global state, and merges the replies with
  `core.server_aggregate`, round after round.

`run(...)` runs both in Flower's simulation engine (Ray) on this machine and returns the final
global state; `flwr run` with the same `client_app` / `server_app(...)` runs them for real.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports: this project runs offline
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from embedlab.methods.federated import core  # noqa: E402
from embedlab.methods.federated.clients import feature_shift_clients  # noqa: E402
from embedlab.methods.federated.engine import RunConfig, initial_state, split_payload  # noqa: E402
from embedlab.methods.federated.simulation import client_update  # noqa: E402

RESULTS: dict = {}  # the ServerApp main runs in the caller's process: its result lands here


def _flat(parts: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {f"{p}.{k}": v for p, s in parts.items() for k, v in s.items()}


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    pid = int(context.node_config["partition-id"])
    config = msg.content["config"]
    cfg = RunConfig(**json.loads(str(config["run"])))
    data = json.loads(str(config["data"]))
    with np.load(data["file"]) as archive:
        arrays = {k: archive[k] for k in archive.files}
    client = feature_shift_clients(arrays, int(data["size"]), cfg.seed, "val", Path(data["file"]))[pid]
    private = None
    if "private" in context.state:
        private = split_payload(context.state["private"].to_torch_state_dict())
    glob = split_payload(msg.content["arrays"].to_torch_state_dict())
    update, keep = client_update(glob, client, cfg, client_id=pid, rnd=int(config["round"]), private=private)
    context.state["private"] = ArrayRecord(_flat(keep))
    content = RecordDict({"arrays": ArrayRecord(update.state),
                          "metrics": MetricRecord({"num-examples": update.num_samples, "partition-id": pid})})
    return Message(content=content, reply_to=msg)


def server_app(cfg: RunConfig, data: dict, num_clients: int, timeout: float = 300.0) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        start = time.time()
        while len(nodes := sorted(grid.get_node_ids())) < num_clients:
            if time.time() - start > timeout:
                raise RuntimeError(f"flower: {len(nodes)} of {num_clients} client nodes connected in {timeout:.0f} s")
            time.sleep(0.1)
        glob = _flat(initial_state(cfg))
        sent = []
        for rnd in range(cfg.rounds):
            content = RecordDict({"arrays": ArrayRecord(glob), "config": ConfigRecord(
                {"run": json.dumps(asdict(cfg)), "data": json.dumps(data), "round": rnd})})
            msgs = [Message(content=content, dst_node_id=n, message_type=MessageType.TRAIN, group_id=str(rnd))
                    for n in nodes]
            replies = list(grid.send_and_receive(msgs, timeout=timeout))
            errors = [r.error.reason for r in replies if r.has_error()]
            if errors or len(replies) != len(msgs):
                raise RuntimeError(f"flower round {rnd}: {len(replies)} of {len(msgs)} replies; errors: {errors}")
            # Merge in partition order, so the float sums do not depend on arrival order.
            replies.sort(key=lambda r: int(r.content["metrics"]["partition-id"]))
            updates = [core.Update(r.content["arrays"].to_torch_state_dict(), int(r.content["metrics"]["num-examples"]))
                       for r in replies]
            glob = core.server_aggregate(updates, "fedavg")
            sent.append(sum(core.state_bytes(u.state) for u in updates))
        RESULTS["global"] = split_payload(glob)
        RESULTS["upload_bytes"] = sent

    return app


def run(cfg: RunConfig, data: dict, num_clients: int) -> dict:
    """Simulate `num_clients` Flower nodes on this machine (one CPU each) for `cfg.rounds`."""
    import logging

    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    RESULTS.clear()
    run_simulation(
        server_app=server_app(cfg, data, num_clients), client_app=client_app, num_supernodes=num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": num_clients, "num_gpus": 0, "include_dashboard": False,
                                      "logging_level": "ERROR"}},
    )
    if "global" not in RESULTS:
        raise RuntimeError("flower: the ServerApp ended without a global state (see the log above)")
    return dict(RESULTS)


__all__ = ["client_app", "server_app", "run"]

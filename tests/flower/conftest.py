"""The Flower tests run in .venv-flower only (`make test-flower`): flwr pins a fastapi that
prefect cannot share. In the main environment there is nothing here to collect."""

import importlib.util

if importlib.util.find_spec("flwr") is None:
    collect_ignore_glob = ["test_*.py"]

"""`embedlab <stage>`: the commands dvc.yaml runs. Heavy libraries load inside each command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="embedlab pipeline stages (run them all with `dvc repro`).",
)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")
RootOption = typer.Option(Path("."), "--root", help="repository root: where data/, models/, metrics/ live")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _load(params_file: Path, root: Path):
    from embedlab.params import ParamsError, load_params
    from embedlab.paths import Paths

    try:
        return load_params(params_file), Paths(root)
    except ParamsError as exc:
        _fail(f"bad params: {exc}", code=2)


def _model(name: str):
    from embedlab.catalogue import get_model

    try:
        return get_model(name)
    except KeyError as exc:
        _fail(str(exc.args[0]), code=2)


def _pin_threads() -> None:
    from embedlab.numerics import pin_threads

    pin_threads()


def _record_host(model_dir: Path) -> None:
    """models/<name>/host.json: the machine and kernels that trained it (evaluate copies it into
    metrics/<name>.json)."""
    from embedlab.host import host
    from embedlab.io import write_json_atomic

    if model_dir.is_dir():
        write_json_atomic(model_dir / "host.json", host())


def _add_host(paths, name: str, metrics: dict) -> dict:
    """metrics/<name>.json gains `host`: {train: ..., evaluate: ...} (strings only, so `dvc metrics
    diff` never lists them as scores)."""
    import json

    from embedlab.host import host
    from embedlab.io import write_json_atomic

    trained = paths.model_dir(name) / "host.json"
    record = {"train": json.loads(trained.read_text()) if trained.exists() else "unrecorded", "evaluate": host()}
    metrics = {**json.loads(paths.metrics(name).read_text()), "host": record}
    write_json_atomic(paths.metrics(name), metrics)
    return metrics


@app.command()
def prepare(params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Load data.source, resize, scale to [-1, 1], split, write data/prepared/."""
    from embedlab.data.prepare import run_prepare
    from embedlab.data.sources import untracked_source_problem

    params, paths = _load(params_file, root)
    problem = untracked_source_problem(params.data.source, paths.root)
    if problem:
        _fail(problem, code=2)
    from embedlab.params import ParamsError

    try:
        data = run_prepare(params.data, paths.prepared, root=paths.root, log=typer.echo)
    except ParamsError as exc:
        _fail(f"bad params: {exc}", code=2)
    counts = data.manifest["split"].value_counts().to_dict()
    typer.echo(f"prepared {len(data.labels)} images from {params.data.source} -> {paths.prepared} {counts}")
    if data.meta["ingest_problems"]:
        typer.secho(f"{len(data.meta['ingest_problems'])} ingest problem(s) recorded; `validate` will report them",
                    fg=typer.colors.YELLOW, err=True)


@app.command()
def validate(params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """The data gate: pandera + Great Expectations; exits non-zero on any failure."""
    from embedlab.data.validate import DataValidationError, validate_prepared

    params, paths = _load(params_file, root)
    try:
        summary = validate_prepared(params, paths)
    except DataValidationError as exc:
        _fail(f"data validation failed ({paths.validation_report / 'summary.json'}):\n{exc}")
    typer.echo(f"validation passed: {len(summary['checks'])} checks on {summary['num_rows']} rows; "
               f"Data Docs: {summary.get('data_docs')}")


@app.command()
def partition(params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Federated client datasets (feature shift, label skew) from the prepared splits."""
    from embedlab.data.partition import PartitionError, run_partition
    from embedlab.data.prepare import read_prepared

    params, paths = _load(params_file, root)
    try:
        summary = run_partition(read_prepared(paths.prepared), params.partition, paths.partitions, paths.partition_report)
    except PartitionError as exc:
        _fail(str(exc))
    for setting, info in summary.items():
        sizes = [c["train_size"] for c in info["clients"]]
        typer.echo(f"{setting}: {len(sizes)} clients, train sizes {sizes}")


@app.command()
def train(name: str, params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Train one model (evaluator, backbone, or a method) into models/<name>/."""
    model = _model(name)
    params, paths = _load(params_file, root)
    _pin_threads()
    from embedlab.params import ParamsError
    from embedlab.sizes import check_image_size
    from embedlab.training import ResumeError, check_devices, is_global_zero

    try:
        check_devices(params.trainer, name)
        check_image_size(name, params, paths.prepared)
        model.train(params, paths)
    except ParamsError as exc:
        _fail(f"bad params: {exc}", code=2)
    except ResumeError as exc:
        _fail(f"cannot resume: {exc}", code=2)
    if not is_global_zero():
        return  # a DDP rank the launcher started: rank 0 writes
    _record_host(paths.model_dir(name))
    typer.echo(f"trained {name} -> {paths.model_dir(name)}")


@app.command()
def pretrain(name: str, params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Train a network a claim holds fixed (ddpm, tokenizer) once, into models/<name>/."""
    from embedlab.catalogue import get_given

    try:
        given = get_given(name)
    except KeyError as exc:
        _fail(str(exc.args[0]), code=2)
    params, paths = _load(params_file, root)
    _pin_threads()
    from embedlab.params import ParamsError
    from embedlab.sizes import check_image_size
    from embedlab.training import check_devices

    try:
        check_devices(params.trainer, name)
        check_image_size(name, params, paths.prepared)
        given.train(params, paths)
    except ParamsError as exc:
        _fail(f"bad params: {exc}", code=2)
    _record_host(paths.model_dir(name))
    typer.echo(f"trained {name} -> {paths.model_dir(name)}")


@app.command()
def evaluate(name: str, params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Score one model: metrics/<name>.json and plots/<name>/."""
    from embedlab.classifiers.nets import load_classifier

    model = _model(name)
    params, paths = _load(params_file, root)
    _pin_threads()
    # The classifiers score themselves, federated models classify for themselves; every other
    # model is scored by the evaluator alone.
    evaluator = load_classifier(paths.model_dir("evaluator")) if model.needs_evaluator else None
    metrics = model.evaluate(params, paths, evaluator)
    metrics = _add_host(paths, name, metrics)
    shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    typer.echo(f"{name}: {shown}")


@app.command()
def publish(name: str, params_file: Path = ParamsOption, root: Path = RootOption) -> None:
    """Register the evaluated model in MLflow; champion only if it beats the current one."""
    from embedlab.registry import publish as publish_bundle

    model = _model(name)
    params, paths = _load(params_file, root)
    receipt = publish_bundle(name, model.export(params, paths), params, paths)
    typer.echo(
        f"embedlab-{name} v{receipt['version']} -> {receipt['alias']} "
        f"({receipt['metric']}={receipt['value']}, previous champion {receipt['previous_champion_value']})"
    )


@app.command()
def report(
    base: str = typer.Option("", "--base", help="git revision to compare with; default main, "
                             "else origin/main, else HEAD (what the workspace changed)"),
    out: Path = typer.Option(Path("reports/pr.md"), "--out", help="markdown report (relative to --root)"),
    plots_out: Path = typer.Option(Path("reports/pr_plots"), "--plots-out",
                                   help="`dvc plots diff` HTML folder (relative to --root)"),
    image_url: str = typer.Option("", "--image-url", help="URL prefix for git-tracked pictures, e.g. "
                                  "https://github.com/<owner>/<repo>/raw/<sha>/; default: links relative to --out"),
    root: Path = RootOption,
) -> None:
    """PR report: dvc params/metrics diff vs --base, registry decisions, changed pictures."""
    from embedlab.report import ReportError, write_report

    try:
        written = write_report(root, base or None, out, plots_out, image_url or None)
    except ReportError as exc:
        _fail(str(exc), code=2)
    typer.echo(f"report -> {written}")


@app.command()
def results(
    check: bool = typer.Option(False, "--check", help="exit 1 when a page differs from what metrics/*.json render"),
    root: Path = RootOption,
) -> None:
    """Render the results tables of README.md and docs/ from metrics/*.json (between markers)."""
    from embedlab.results import ResultsError, render

    try:
        stale = render(root, check=check)
    except ResultsError as exc:
        _fail(str(exc), code=2)
    if check and stale:
        _fail("results out of date (run `embedlab results`): " + ", ".join(str(p) for p in stale))
    typer.echo(("up to date" if not stale else "rewrote " + ", ".join(str(p) for p in stale)) if not check
               else "results match the metrics")


@app.command()
def preset(
    name: str = typer.Argument(..., help="a preset in params/ (paper) or a path to a YAML file of overrides"),
    params_file: Path = ParamsOption,
) -> None:
    """Merge a preset's overrides onto params.yaml, in place (`git checkout params.yaml` undoes it)."""
    from embedlab.params import ParamsError
    from embedlab.presets import apply_preset

    path = Path(name) if name.endswith((".yaml", ".yml")) else Path("params") / f"{name}.yaml"
    try:
        applied = apply_preset(path, params_file)
    except ParamsError as exc:
        _fail(f"bad preset: {exc}", code=2)
    typer.echo(f"{params_file}: applied {path} ({', '.join(applied)}); `dvc repro` runs it")


@app.command("check-params")
def check_params(params_file: Path = ParamsOption) -> None:
    """Validate params.yaml only."""
    _load(params_file, Path("."))
    typer.echo(f"{params_file}: ok")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

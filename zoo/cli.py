"""The `zoo` command: list, describe and run the zoo's models.

    zoo list                                  the models: name, property, versions stored locally and released
    zoo info NAME [--version V]               one model: what it predicts, its training data, its test metrics
    zoo predict NAME FILES... [--json]        predictions for CIF/POSCAR files
    zoo audit NAME [--version V] [--retrain]  re-derive a model's card from its files and data (zoo.release.audit)
    zoo audit --dataset NAME [--version V]    re-derive a dataset version's hashes and fingerprint
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EPILOG = """\
Where models come from: the local zoo store (ZOO_STORE, default <repo>/data/zoo, filled by `python stages/publish.py <property>`),
the release weights shipped with the code (zoo/registry.json), the Hub cache (ZOO_CACHE), or the Hugging Face Hub
(HF_ENDPOINT, HF_TOKEN; set HF_HUB_OFFLINE=1 to never use the network). Every file is checked against its sha256.

Examples:
  zoo list
  zoo info matten-elastic
  zoo predict matten-elastic Si.cif POSCAR --json > predictions.json
  zoo audit matten-elastic                 (exit status 1 when anything differs from the card)
  zoo audit --dataset mp-elastic-irreps
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="Equivariant models of Materials Project tensors: elastic stiffness, dielectric, "
        "piezoelectric tensors and the phonon density of states, predicted from a crystal structure.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="list the known models and the versions available",
                        description="List the known models, the versions in the local store and the released "
                        "versions in zoo/registry.json (shipped with the code or downloadable).")
    info = commands.add_parser("info", help="describe one model (loads it, downloading it if needed)",
                               description="Load a model and print what it predicts, its units, training dataset "
                               "and test metrics (from its model card).")
    info.add_argument("name", help="model name, e.g. matten-elastic (see `zoo list`)")
    info.add_argument("--version", help="semantic version such as 1.0.0 (default: the newest available)")
    predict = commands.add_parser(
        "predict", help="predict the property of structures in CIF/POSCAR files",
        description="Predict a model's property for each structure file (CIF, POSCAR/CONTCAR, or any format "
        "pymatgen's Structure.from_file reads). Tensors are in the Cartesian frame of each file's structure.")
    predict.add_argument("name", help="model name, e.g. matten-elastic (see `zoo list`)")
    predict.add_argument("files", nargs="+", metavar="FILE", help="structure files")
    predict.add_argument("--version", help="semantic version such as 1.0.0 (default: the newest available)")
    predict.add_argument("--json", action="store_true",
                         help="print one JSON document (tensor in Voigt form, derived quantities, units) to stdout")
    predict.add_argument("--batch-size", type=int, default=32, help="structures per batch (default: %(default)s)")
    audit = commands.add_parser(
        "audit", help="check a model's card (or a dataset version) against its files and data",
        description="Re-derive what a model card claims: file sha256s against the registry or the local store, the "
        "training dataset's fingerprint (from the local build, rebuilt with `dvc repro build@<property>` when "
        "absent) and its DVC lineage, and every test metric of the model and of the deterministic baselines, "
        "recomputed from the checkpoint and compared as the card prints them. --retrain also retrains the model "
        "(and the non-equivariant baseline) with the recorded settings. With --dataset: a dataset version's file "
        "hashes, fingerprint, dataset card and dvc.lock entry. Prints one row per check; exit status 1 when "
        "anything differs.")
    audit.add_argument("name", nargs="?", help="model name, e.g. matten-elastic (see `zoo list`)")
    audit.add_argument("--dataset", metavar="NAME", help="audit a dataset instead, e.g. mp-elastic-irreps")
    audit.add_argument("--version", help="semantic version such as 1.0.0 (default: the one zoo.load picks; for a "
                       "dataset, the local build)")
    audit.add_argument("--retrain", action="store_true",
                       help="also retrain with the recorded settings and seed (as long as the original training)")
    audit.add_argument("--project", type=Path, default=Path("."), metavar="DIR",
                       help="the project checkout with dvc.yaml and data/ (default: the current directory)")
    return parser


def _list(out: Console) -> None:
    from zoo.release import registry

    known = registry.read_registry()
    store = registry.LocalStore()
    table = Table(title=f"models (local store: {store.root})")
    for column in ("name", "property", "local store", "released", "shipped", "Hub repository"):
        table.add_column(column)
    for name in sorted(set(known.models) | set(store.names())):
        entry = known.models.get(name)
        releases = entry.releases if entry else {}
        shipped = [v for v, release in releases.items()
                   if release.shipped_folder(known.path) is not None and release.shipped_folder(known.path).is_dir()]
        prop = entry.property if entry else "?"
        table.add_row(name, prop, ", ".join(store.versions(name)) or "-", ", ".join(releases) or "-",
                      ", ".join(shipped) or "-", entry.repo_id if entry else "-")
    out.print(table)


def _info(name: str, version: str | None, out: Console) -> None:
    import zoo
    from zoo.release import model_card

    model = zoo.load(name, version)
    info, header = model.info, model_card.parse_front_matter(model.card or "")
    out.print(f"[bold]{model.name}[/] {model.version or ''}  (from the {model.source}: {model.path})")
    out.print(f"property  {info['property']} ({info['units']}), irreps {info['irreps']}, "
              f"target {', '.join(info.get('target_columns') or [info['target_column']])}")
    out.print(f"dataset   {info['dataset']['name']} {info['dataset']['version']} ({info['dataset']['fingerprint']})")
    out.print(f"training  profile {info['training'].get('profile')}, {info['model_config']['n_layers']} layers, "
              f"hidden {info['model_config']['hidden_irreps']}, r_cut {info['model_config']['r_cut']} A, "
              f"{sum(p.numel() for p in model.net.parameters())} parameters")
    if info.get("ensemble_seeds"):
        out.print(f"ensemble  mean of {len(info['ensemble_seeds'])} networks (seeds "
                  f"{', '.join(map(str, info['ensemble_seeds']))}); predictions carry their spread")
    out.print(f"weights   {info['weights']['file']} sha256 {info['weights']['sha256']}")
    headline = header.get("headline_metric")
    if headline:
        out.print(f"test      {headline['name']} = {headline['value']:.4g} ({headline['split']}, n={headline['n_test']})")
    if model.card is None:
        out.print("card      none (an unpublished folder)")


def _predict(args, out: Console, err: Console) -> None:
    from rich.progress import Progress

    import zoo

    model = zoo.load(args.name, args.version)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"predicting {len(args.files)} structures", total=len(args.files))
        predictions = model.predict(list(args.files), batch_size=args.batch_size,
                                    progress=lambda done, total: progress.update(task, completed=done))
    if args.json:
        document = {"model": model.name, "version": model.version, "predictions": [p.as_dict() for p in predictions]}
        print(json.dumps(document, indent=2, allow_nan=False))
        return
    for p in predictions:
        out.print(f"[bold]{p.source}[/] ({p.structure.composition.reduced_formula}): {p.property} "
                  f"[{p.units}], {next(iter(p.tensors))} part")
        shown = p.as_dict()
        out.print(json.dumps(shown.get("voigt", shown.get("dos_max_normalised")), indent=None))
        if p.derived_error:
            out.print(f"  derived quantities undefined: {p.derived_error}")
        for key, value in p.derived.items():
            out.print(f"  {key} = {value} {shown['derived_units'][key]}")


_RESULT_STYLE = {"pass": "green", "FAIL": "bold red", "not checked": "yellow"}


@contextlib.contextmanager
def _steps(console: Console):
    """A `step(text)` context manager factory for zoo.release.audit: a spinner and the elapsed time of each long step
    (only on a terminal)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as progress:
        @contextlib.contextmanager
        def step(text: str):
            task = progress.add_task(text, total=None)
            try:
                yield
            finally:
                progress.update(task, total=1, completed=1)

        yield step


def _audit(args, out: Console, err: Console) -> int:
    from zoo.release import audit

    if (args.name is None) == (args.dataset is None):
        raise ValueError("give a model NAME or --dataset NAME (one of the two)")
    if args.dataset is not None and args.retrain:
        raise ValueError("--retrain applies to a model audit, not to a dataset")
    with _steps(err) as step:
        if args.dataset is not None:
            report = audit.audit_dataset(args.dataset, args.version, project=args.project, step=step)
        else:
            report = audit.audit_model(args.name, args.version, retrain=args.retrain, project=args.project,
                                       step=step)
    table = Table(title=f"zoo audit: {report.subject}", show_lines=True)
    for column in ("check", "compared", "expected", "found", "result"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, check.compared, audit.abbreviate(check.expected), audit.abbreviate(check.found),
                      f"[{_RESULT_STYLE[check.status]}]{check.status}[/]")
    out.print(table)
    for note in report.notes:
        out.print(f"note: {note}")
    unchecked = [check.name for check in report.checks if check.status == audit.NOT_CHECKED]
    passed = len(report.checks) - len(report.failures) - len(unchecked)
    counts = f"{passed} of {len(report.checks)} checks passed" + \
        (f", not checked: {', '.join(unchecked)}" if unchecked else "")
    if report.passed:
        out.print(f"[green]PASS[/] {report.subject}: {counts}", highlight=False)
        return 0
    print(f"zoo audit: FAIL: {report.subject}: {len(report.failures)} check(s) differ: "
          f"{'; '.join(check.summary() for check in report.failures)}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    from zoo.release import hub

    expected = (ValueError, LookupError, FileNotFoundError, hub.HubError)
    if args.command == "audit":
        from zoo.release import audit

        expected += (audit.AuditError,)
    try:
        if args.command == "list":
            _list(out)
        elif args.command == "info":
            _info(args.name, args.version, out)
        elif args.command == "audit":
            return _audit(args, out, err)
        else:
            if isinstance(args.batch_size, int) and args.batch_size < 1:
                raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
            _predict(args, out, err)
    # Expected failures (bad name, version, input file, offline, corrupt download, a dataset that cannot be
    # rebuilt) are one line, not a traceback.
    except expected as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

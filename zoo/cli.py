"""The `zoo` command: list, describe and run the zoo's models.

    zoo list [--json]                         the models: name, property, versions stored locally and released
    zoo info NAME [--version V]               one model: what it predicts, its training data, its test metrics
    zoo predict NAME FILES... [--json]        predictions for CIF/POSCAR files, with their warnings
    zoo audit NAME [--version V] [--retrain]  re-derive a model's card from its files and data (zoo.release.audit)
    zoo audit --dataset NAME [--version V]    re-derive a dataset version's hashes and fingerprint
    zoo --version                             the package version

Shell conventions: data go to stdout as plain text, printed literally (file names, formulas, messages are never
read as markup); numbers are rounded to the precision each line states, with their units; tensors print as
matrices. Errors are one line on stderr and exit status 1, with a traceback only under --debug. `list`, `info`,
`--help`, `--version` and a mistyped name import neither torch, e3nn nor pymatgen (each answers in well under a
second); `predict` loads the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

EPILOG = """\
Where models come from: the local zoo store (ZOO_STORE, default <repo>/data/zoo, filled by `python stages/publish.py <property>`),
the release weights shipped with the code (zoo/registry.json), the Hub cache (ZOO_CACHE), or the Hugging Face Hub
(HF_ENDPOINT, HF_TOKEN; set HF_HUB_OFFLINE=1 to never use the network). Every file is checked against its sha256.
Hub calls time out: ZOO_HUB_CONNECT_TIMEOUT_S (default 5), ZOO_HUB_READ_TIMEOUT_S (20), ZOO_HUB_DEADLINE_S (60).

Examples:
  zoo list --json
  zoo info matten-elastic
  zoo predict matten-elastic Si.cif POSCAR --json > predictions.json
  zoo audit matten-elastic                 (exit status 1 when anything differs from the card)
  zoo audit --dataset mp-elastic-irreps
"""

DERIVED_DIGITS = 4  # significant digits of derived scalars


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mp-tensor-zoo")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="Equivariant models of Materials Project tensors: elastic stiffness, dielectric, "
        "piezoelectric tensors and the phonon density of states, predicted from a crystal structure.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"zoo (mp-tensor-zoo) {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="list the known models and the versions available",
                                  description="List the known models, the versions in the local store and the "
                                  "released versions in zoo/registry.json (shipped with the code or downloadable).")
    listing.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    info = commands.add_parser("info", help="describe one model (its files are checked, the network is not built)",
                               description="Print what a model predicts, its units, training dataset and test "
                               "metrics (from its config and model card), after checking its files' sha256.")
    info.add_argument("name", help="model name, e.g. matten-elastic (see `zoo list`)")
    info.add_argument("--version", help="semantic version such as 1.0.0 (default: the newest available)")
    predict = commands.add_parser(
        "predict", help="predict the property of structures in CIF/POSCAR files",
        description="Predict a model's property for each structure file (CIF, POSCAR/CONTCAR, or any format "
        "pymatgen's Structure.from_file reads). Tensors are in the Cartesian frame of each file's structure. Every "
        "file is checked first (the first bad one is an error naming it); each prediction lists its warnings.")
    predict.add_argument("name", help="model name, e.g. matten-elastic (see `zoo list`)")
    predict.add_argument("files", nargs="+", metavar="FILE", help="structure files")
    predict.add_argument("--version", help="semantic version such as 1.0.0 (default: the newest available)")
    predict.add_argument("--json", action="store_true", help="print one JSON document (tensor in Voigt form, "
                         "derived quantities, units, warnings) to stdout")
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


def _table(rows: list[list[str]], header: list[str]) -> str:
    """Plain columns, as wide as their longest cell (never cut, whatever the terminal)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


# ----------------------------------------------------------------------------------------------- list, info
def _list(as_json: bool) -> None:
    from zoo.release import registry

    known = registry.read_registry()
    store = registry.LocalStore()
    models = []
    for name in sorted(set(known.models) | set(store.names())):
        entry = known.models.get(name)
        releases = entry.releases if entry else {}
        shipped = [v for v, release in releases.items()
                   if release.shipped_folder(known.path) is not None and release.shipped_folder(known.path).is_dir()]
        models.append({"name": name, "property": entry.property if entry else None,
                       "local_store": list(store.versions(name)), "released": list(releases), "shipped": shipped,
                       "hub_repository": entry.repo_id if entry else None})
    if as_json:
        print(json.dumps({"local_store": str(store.root), "registry": str(known.path), "models": models}, indent=2))
        return
    print(f"models (local store: {store.root})")
    print(_table([[m["name"], m["property"] or "?", ", ".join(m["local_store"]) or "-", ", ".join(m["released"]) or "-",
                   ", ".join(m["shipped"]) or "-", m["hub_repository"] or "-"] for m in models],
                 ["name", "property", "local store", "released", "shipped", "Hub repository"]))


def _info(name: str, version: str | None) -> None:
    from safetensors import safe_open

    from zoo.release import loading

    found = loading.resolve(name, version)
    files = loading.verified_files(found)
    info, card = files.info, files.card
    config = info["model_config"]
    weights_path = found.folder / info["weights"]["file"]
    with safe_open(str(weights_path), framework="numpy") as handle:
        shapes = [handle.get_slice(key).get_shape() for key in handle.keys()]
    n_values = sum(int(_product(shape)) for shape in shapes)
    print(f"{found.name} {found.version or ''}  (from the {found.source}: {found.folder})")
    print(f"property  {info['property']} ({info['units']}), irreps {info['irreps']}, "
          f"target {', '.join(info.get('target_columns') or [info['target_column']])}")
    print(f"dataset   {info['dataset']['name']} {info['dataset']['version']} ({info['dataset']['fingerprint']})")
    print(f"training  profile {info['training'].get('profile')}, {config['n_layers']} layers, hidden "
          f"{config['hidden_irreps']}, r_cut {config['r_cut']} A, {n_values} stored values in {len(shapes)} tensors")
    if info.get("ensemble_seeds"):
        print(f"ensemble  mean of {len(info['ensemble_seeds'])} networks (seeds "
              f"{', '.join(map(str, info['ensemble_seeds']))}); predictions carry their spread")
    print(f"weights   {info['weights']['file']} sha256 {info['weights']['sha256']}")
    domain = info.get("training_data")
    print(f"domain    {len(domain['element_counts'])} elements in {domain['n_structures']} training structures"
          if domain else "domain    not recorded in config.json (predictions say so in their warnings)")
    if card is None:
        print("card      none (an unpublished folder)")
        return
    headline = card.metadata.get("headline_metric")
    if headline:
        print(f"test      {headline['name']} = {headline['value']:.4g} ({headline['split']}, n={headline['n_test']})")
    print(f"card      {card.path} (print(zoo.load({found.name!r}).card) for a summary)")


def _product(shape) -> int:
    out = 1
    for size in shape:
        out *= size
    return out


# ------------------------------------------------------------------------------------------------- predict
def _predict(args) -> None:
    import warnings

    import zoo

    # pymatgen warns about oddities of the input (an element without electronegativity, ...); what matters to the
    # reader is in each prediction's own warnings, printed below.
    warnings.filterwarnings("ignore", category=UserWarning, module="pymatgen")

    model = zoo.load(args.name, args.version)
    with _progress(len(args.files)) as progress:
        predictions = model.predict(list(args.files), batch_size=args.batch_size, progress=progress)
    if args.json:
        document = {"model": model.name, "version": model.version, "predictions": [p.as_dict() for p in predictions]}
        print(json.dumps(document, indent=2, allow_nan=False))
        return
    for prediction in predictions:
        print("\n".join(prediction_lines(prediction)))


@contextlib.contextmanager
def _progress(total: int):
    """A progress bar on stderr when it is a terminal (rich), else nothing; yields the callback for predict."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"predicting {total} structures", total=total)
        yield lambda done, _: progress.update(task, completed=done)


def prediction_lines(prediction) -> list[str]:
    """A prediction as plain text: the source (literally), the tensor as a matrix at a stated precision, the derived
    quantities with units, the warnings."""
    from zoo import properties

    spec = properties.get(prediction.property)
    shown = prediction.as_dict()
    parts = shown["parts"]
    lines = [f"{prediction.source} ({shown['formula']}): {spec.title}, {', '.join(parts)} part"
             f"{'s' if len(parts) > 1 else ''}"]
    if spec.is_tensor:
        decimals = spec.printed_decimals
        # one Voigt row per part for a property with several (dielectric), else the value's own Voigt form
        values = [(f"{part}: ", row) for part, row in zip(parts, prediction.raw)] if spec.has_parts \
            else [("", prediction.raw)]
        for label, raw in values:
            if raw.ndim == 2:  # the Voigt matrix: 6x6 stiffness, 3x6 piezo
                rows, form = raw, f"Voigt {'x'.join(map(str, raw.shape))}, order 11, 22, 33, 23, 13, 12"
            else:  # a symmetric rank-2 tensor: its Cartesian 3x3 matrix
                from zoo.core import tensors

                rows, form = tensors.voigt_to_cartesian(raw, spec.voigt_kind), "3x3 Cartesian"
            lines.append(f"  {label}{form} [{spec.units}], rounded to {10 ** -decimals:.{decimals}f}, Cartesian frame "
                         "of the input:")
            cells = [[f"{round(float(value), decimals) + 0.0:.{decimals}f}" for value in row] for row in rows]
            width = max(len(cell) for row in cells for cell in row)
            lines += ["    " + "  ".join(cell.rjust(width) for cell in row) for row in cells]
    else:
        decimals = spec.printed_decimals
        lines.append(f"  DOS, max-normalised, on {len(shown['frequencies_cm'])} points of 0-1000 cm^-1 (rounded to "
                     f"{10 ** -decimals:.{decimals}f}):")
        pairs = [f"{freq:6.0f}: {dos:.{decimals}f}" for freq, dos in zip(shown["frequencies_cm"],
                                                                        shown["dos_max_normalised"])]
        lines += ["    " + "   ".join(pairs[i:i + 6]) for i in range(0, len(pairs), 6)]
    if prediction.derived_error:
        lines.append(f"  derived quantities undefined: {prediction.derived_error}")
    if prediction.derived:
        lines.append(f"  derived ({DERIVED_DIGITS} significant digits):")
    for key, value in prediction.derived.items():
        unit = shown["derived_units"].get(key, "")
        shown_unit = "" if value is None or unit in ("", "bool") or unit.startswith("1") else f" {unit}"
        lines.append(f"    {key} = {_number(value)}{shown_unit}")
    for flag in prediction.warnings:
        lines.append(f"  WARNING {flag.code}: {flag.message}")
    return lines


def _number(value) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.{DERIVED_DIGITS}g}"
    return str(value)


# --------------------------------------------------------------------------------------------------- audit
@contextlib.contextmanager
def _steps(console):
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


_RESULT_STYLE = {"pass": "green", "FAIL": "bold red", "not checked": "yellow"}


def _audit(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    import datasets

    from zoo.release import audit

    # The audit loads datasets through a new private cache each time (zoo.data.datasets.load_folder), so `datasets`
    # would draw its "Generating split" bars on stderr, where this command writes one line per error; the steps
    # spinner shows progress instead.
    datasets.disable_progress_bars()
    if (args.name is None) == (args.dataset is None):
        raise ValueError("give a model NAME or --dataset NAME (one of the two)")
    if args.dataset is not None and args.retrain:
        raise ValueError("--retrain applies to a model audit, not to a dataset")
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    with _steps(err) as step:
        if args.dataset is not None:
            report = audit.audit_dataset(args.dataset, args.version, project=args.project, step=step)
        else:
            report = audit.audit_model(args.name, args.version, retrain=args.retrain, project=args.project,
                                       step=step)
    table = Table(title=Text(f"zoo audit: {report.subject}"), show_lines=True)
    for column in ("check", "compared", "expected", "found", "result"):
        table.add_column(column, overflow="fold")
    for check in report.checks:  # Text: data are shown as they are, never read as markup
        table.add_row(*(Text(str(cell)) for cell in (check.name, check.compared, audit.abbreviate(check.expected),
                                                     audit.abbreviate(check.found))),
                      Text(check.status, style=_RESULT_STYLE[check.status]))
    out.print(table)
    for note in report.notes:
        print(f"note: {note}")
    unchecked = [check.name for check in report.checks if check.status == audit.NOT_CHECKED]
    passed = len(report.checks) - len(report.failures) - len(unchecked)
    counts = f"{passed} of {len(report.checks)} checks passed" + \
        (f", not checked: {', '.join(unchecked)}" if unchecked else "")
    if report.passed:
        print(f"PASS {report.subject}: {counts}")
        return 0
    print(f"zoo audit: FAIL: {report.subject}: {len(report.failures)} check(s) differ: "
          f"{'; '.join(check.summary() for check in report.failures)}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------------- main
def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input, the environment or the data can cause: one line, never a traceback."""
    from zoo.release import hub

    errors: tuple[type[BaseException], ...] = (ValueError, LookupError, OSError, hub.HubError)
    if "zoo.release.audit" in sys.modules:
        errors += (sys.modules["zoo.release.audit"].AuditError,)
    return errors


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list(args.json)
        elif args.command == "info":
            _info(args.name, args.version)
        elif args.command == "audit":
            return _audit(args)
        else:
            if isinstance(args.batch_size, int) and args.batch_size < 1:
                raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
            _predict(args)
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`zoo predict ... | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:
        if args.debug:
            raise
        expected = isinstance(error, _user_errors())
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        message = " ".join(str(message).split()) or type(error).__name__  # one line
        if expected:
            print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        else:
            print(f"zoo {args.command}: internal error ({type(error).__name__}: {message}); run again with --debug "
                  "for the traceback and report it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

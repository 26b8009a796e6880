"""The `zoo` command: list, describe and run the zoo's models.

    zoo list                                  the models: name, property, versions stored locally and released
    zoo info NAME [--version V]               one model: what it predicts, its training data, its test metrics
    zoo predict NAME FILES... [--json]        predictions for CIF/POSCAR files
"""

from __future__ import annotations

import argparse
import json
import sys

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
    return parser


def _list(out: Console) -> None:
    from zoo import registry

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
    from zoo import model_card

    model = zoo.load(name, version)
    info, header = model.info, model_card.parse_front_matter(model.card or "")
    out.print(f"[bold]{model.name}[/] {model.version or ''}  (from the {model.source}: {model.path})")
    out.print(f"property  {info['property']} ({info['units']}), irreps {info['irreps']}, "
              f"target {info['target_column']}")
    out.print(f"dataset   {info['dataset']['name']} {info['dataset']['version']} ({info['dataset']['fingerprint']})")
    out.print(f"training  profile {info['training'].get('profile')}, {info['model_config']['n_layers']} layers, "
              f"hidden {info['model_config']['hidden_irreps']}, r_cut {info['model_config']['r_cut']} A, "
              f"{sum(p.numel() for p in model.net.parameters())} parameters")
    out.print(f"weights   {info['weights']['file']} sha256 {info['weights']['sha256']}")
    headline = header.get("headline_metric")
    if headline:
        out.print(f"test      {headline['name']} = {headline['value']:.4g} ({headline['split']}, n={headline['n_test']})")
    if model.card is None:
        out.print("card      none (an unpublished folder)")


def _predict(args, out: Console, err: Console) -> None:
    import zoo
    from rich.progress import Progress

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    from zoo import hub

    try:
        if args.command == "list":
            _list(out)
        elif args.command == "info":
            _info(args.name, args.version, out)
        else:
            if isinstance(args.batch_size, int) and args.batch_size < 1:
                raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
            _predict(args, out, err)
    # Expected failures (bad name, version, input file, offline, corrupt download) are one line, not a traceback.
    except (ValueError, LookupError, FileNotFoundError, hub.HubError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line every DVC stage script (stages/*.py) shares, written once.

A stage script names its stage, the properties it accepts, the errors it expects and the package function it runs;
``main`` parses ``<property> [--params params.yaml]`` (plus the stage's own options), runs the function for each
property given and turns an expected error into one line on stderr, ``<stage> <property> failed: <message>``, and
exit code 1 (argparse's usage errors exit 2), never a traceback.

Importing this module applies environment.env (``environment.apply``): every stage script imports it before any
other zoo module, because OpenBLAS's kernels and OpenMP's waiting policy are read once, when numpy and torch load.
This module and what it imports load neither (tests/test_config.py checks both).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

from zoo.core import environment

environment.apply()

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

# stderr, read when printing (so that a test's captured stderr receives it); no wrapping of long paths.
console = Console(stderr=True, soft_wrap=True)

Run = Callable[[str, argparse.Namespace, Console], object]


def main(doc: str, stage: str, properties: Iterable[str], errors: tuple[type[BaseException], ...], run: Run, *,
         options: Callable[[argparse.ArgumentParser], None] | None = None, several: bool = False,
         argv: list[str] | None = None) -> int:
    """Parse argv (the stage script's docstring `doc` is the usage's description), run `run(property, args,
    console)` for each property and return the exit code: 0, or 1 at the first property that raised one of
    `errors`. `options` adds the stage's own arguments; `several` accepts more than one property in one call."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if several:
        parser.add_argument("properties", nargs="+", choices=sorted(properties), metavar="property")
    else:
        parser.add_argument("property", choices=sorted(properties))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    for prop in args.properties if several else [args.property]:
        try:
            run(prop, args, console)
        except errors as err:
            console.print(f"[bold red]{stage} {prop} failed:[/] {escape(str(err))}")
            return 1
    return 0

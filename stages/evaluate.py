"""DVC stage `evaluate`: a trained model and its baselines, scored on the test split.

    python stages/evaluate.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/models/matten-<property>/ and data/hub/datasets/mp-<property>-irreps/; trains the baselines on the
same split (zoo.nn.baselines; the non-equivariant network with the `train` profile's settings); writes
data/reports/<property>-metrics.json, data/reports/<property>-parity.png and
data/reports/<property>-per-crystal-system.png (zoo.nn.evaluation).

params.yaml: section `train` (profile, as for the train stage) and section `evaluate`:
    composition_gbm   zoo.nn.baselines.GBMSettings fields (max_iter, learning_rate, max_leaf_nodes, min_samples_leaf,
                      seed)
    learning_curve    zoo.nn.learning_curve.LearningCurveSettings (fractions, properties): the learning curve on the
                      external split (the test split without one), data/reports/<property>-learning-curve.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Passive OpenMP waiting must be chosen before torch is imported (see stages/train.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core.params import load_section  # noqa: E402
from zoo.nn import baselines, evaluation, training  # noqa: E402
from zoo.nn.learning_curve import LearningCurveSettings  # noqa: E402

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--profile", default=None, help="training profile (default: train.profile of the params)")
    args = parser.parse_args(argv)
    try:
        profile, settings = training.select_profile(load_section(args.params, "train", required=True), args.profile,
                                                    args.property)
        section = load_section(args.params, "evaluate") or {}
        unknown = sorted(set(section) - {"composition_gbm", "learning_curve"})
        if unknown:
            raise ValueError(f"evaluate section of {args.params} has unknown keys {unknown}")
        gbm = baselines.GBMSettings.from_params(section.get("composition_gbm"))
        curve = LearningCurveSettings.from_params(section["learning_curve"]) if "learning_curve" in section else None
        started = time.perf_counter()
        document = evaluation.evaluate_property(args.property, settings, gbm=gbm, curve=curve,
                                                log=lambda line: console.print(f"evaluate {args.property}: {line}"))
        elapsed = time.perf_counter() - started
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]evaluate {args.property} failed:[/] {err}")
        return 1
    headline = document["headline"]
    scores = ", ".join(f"{name} {metrics[headline]:.4g}" for name, metrics in document["baselines"].items())
    external = document.get("external")
    beyond = f"; external {headline} model {external['model'][headline]:.4g}" if external else ""
    print(f"evaluate {args.property} ({profile}): {headline} model {document['model'][headline]:.4g}; baselines "
          f"{scores}{beyond}; {elapsed:.1f} s -> {evaluation.REPORTS_DIR / (args.property + '-metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

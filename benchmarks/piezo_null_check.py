"""A trained piezo model against the all-zero tensor, on the validation and the test split (issue 12).

    python benchmarks/piezo_null_check.py [--model data/models/matten-piezo]

The zero tensor is the null model a piezo model must beat (the exact answer for every centrosymmetric crystal, and
near the best constant under an absolute error when most components are zero). For each split: the component MAE
of the model and of the zero tensor, their ratio, the same without the top 1% of records by true norm, and the
share of polar records whose predicted component at the true tensor's largest |e_ij| has the true sign, per point
group. The figures come from the evaluate stage's own code (zoo.nn.evaluation.score, sign_of_largest_component);
unlike the stage, this trains no baselines, so settings can be chosen on the validation split in seconds. Prints
JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.core import environment

# Passive OpenMP waiting (environment.env) must be chosen before torch is imported.
environment.apply()

import numpy as np  # noqa: E402

from zoo.core.config import load_section  # noqa: E402
from zoo.nn import evaluation, training  # noqa: E402

SPLITS = ("validation", "test")


def split_figures(net, split: training.SplitData, symmetry_settings) -> dict:
    """Model vs the zero tensor on one split."""
    predictions = {"model": evaluation.predict(net, split), "zero_tensor": np.zeros_like(split.targets)}
    infos = [symmetry_settings.analyze(structure) for structure in split.structures]
    scored, _, quantities, true = evaluation.score("piezo", predictions, split, infos)
    model, zero = scored["model"], scored["zero_tensor"]
    trimmed = "component_mae_without_top_1pct"
    signs = evaluation.sign_of_largest_component(quantities["model"]["voigt"], true["voigt"], infos)
    return {
        "n": len(split),
        "component_mae": {"model": model["component_mae"], "zero_tensor": zero["component_mae"],
                          "ratio": model["component_mae"] / zero["component_mae"]},
        "without_top_1pct": {"model": model[trimmed], "zero_tensor": zero[trimmed],
                             "ratio": model[trimmed] / zero[trimmed]},
        "sign_of_largest_component": {group: f"{v['right']}/{v['n']}" for group, v in signs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=training.MODELS_DIR / "matten-piezo")
    args = parser.parse_args()
    loaded = training.load_model(args.model)
    data, dataset = training.load_splits("piezo")
    if loaded.info["dataset"]["fingerprint"] != dataset.fingerprint:
        raise SystemExit(f"{args.model} was trained on another dataset than the one built now")
    symmetry_settings = load_section("symmetry")
    out = {"model": str(args.model), "training": loaded.info.get("training"),
           **{name: split_figures(loaded.net, data[name], symmetry_settings) for name in SPLITS}}
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()

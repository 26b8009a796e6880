"""One controlled training run: a params.yaml profile with settings overridden, scored on validation and test.

Trains the model as the train stage does (zoo.nn.training.fit_model, the profile's seeds and epochs) with the given
overrides, scores it with the evaluate stage's code (zoo.nn.evaluation.score; no baselines), and prints one JSON
line: the overrides, the training time, the epochs, the model's validation metrics (what settings are chosen on)
and test metrics (and external, where the dataset has that split; never used to choose) and, for the dielectric property, its eps_poly on the six reference crystals of
tests/reference_structures.py. Comparisons of settings in the notes and model cards were made with this script, one
run per setting, on the same machine (the earlier ones printed test metrics only).

    python benchmarks/ablation.py dielectric --profile cpu --set model.output_map=spd_log --set loss=mse
    python benchmarks/ablation.py phonon --profile cpu --set max_epochs=60 --train-filter eps_poly_electronic<=15

--set KEY=VALUE    a TrainSettings field (model.<field> for a ModelConfig field); VALUE is read as YAML
--train-filter     dielectric only: train (and select on validation) on records whose true electronic eps_poly is
                   at most the value (AnisoNet's filter); the test split stays whole
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.reference_structures

from zoo import properties  # noqa: E402
from zoo.core.config import load_section, read_params  # noqa: E402
from zoo.core.train_config import PER_PROPERTY_KEY
from zoo.nn import evaluation, training  # noqa: E402


def parse_overrides(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key or not _:
            raise SystemExit(f"--set needs KEY=VALUE, got {pair!r}")
        target = out
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    return out


def filtered(data: dict, limit: float) -> dict:
    """train and validation restricted to records with true electronic eps_poly <= limit; test unchanged."""
    out = dict(data)
    for name in ("train", "validation"):
        split = data[name]
        eps = evaluation.record_quantities("dielectric", split.targets, split.structures, split.parts)["eps_poly"]
        out[name] = training.subset(split, np.flatnonzero(eps <= limit))
    return out


def reference_predictions(net) -> dict[str, dict[str, float]]:
    from tests.reference_structures import reference_structures
    from zoo.nn import graphs

    structures = reference_structures()
    batch = graphs.GraphBatch.collate(graphs.GraphCache(net.config.r_cut).graphs(list(structures.values())))
    values = net.predict_irreps(batch).numpy()
    quantities = evaluation.record_quantities("dielectric", values, list(structures.values()), net.parts)
    return {name: {part: round(float(quantities[f"eps_poly{properties.DIELECTRIC.part_suffix(part)}"][i]), 3)
                   for part in net.spec.output_parts(net.parts)} for i, name in enumerate(structures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--train-filter", type=float, default=None, help="dielectric: max electronic eps_poly")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    section = read_params(args.params)["train"]
    overrides = parse_overrides(args.overrides)
    profiles = dict(section["profiles"])
    profile = dict(profiles[args.profile])
    per_property = dict(profile.get(PER_PROPERTY_KEY) or {})
    own = dict(per_property.get(args.property) or {})
    own.update({k: v for k, v in overrides.items() if k != "model"})
    own["model"] = {**(own.get("model") or {}), **overrides.get("model", {})}
    per_property[args.property] = own
    profile[PER_PROPERTY_KEY] = per_property
    profiles[args.profile] = profile
    name, settings = training.select_profile({**section, "profiles": profiles}, args.profile, args.property)
    settings = training.dataclasses.replace(settings, progress_bar=False)

    data, dataset = training.load_splits(args.property, ROOT / "data/hub/datasets")
    if args.train_filter is not None:
        data = filtered(data, args.train_filter)
    started = time.perf_counter()
    with training.FitPool(section["workers"]) as pool:  # an ensemble's members side by side
        fitted = training.fit_model(training.fitting_splits(data), settings, dataset=dataset, pool=pool)
    seconds = time.perf_counter() - started
    net = fitted.net
    scores = {}
    symmetry_settings = load_section("symmetry")
    for split in ("validation", "test", "external"):
        if split not in data:  # only elastic has an external split
            continue
        chosen = training.for_parts(data[split], net.parts)
        predictions = {"model": evaluation.predict(net, chosen)}
        if properties.get(args.property).zero_baseline:  # piezo: the null model it must beat, on the same records
            predictions["zero_tensor"] = np.zeros_like(predictions["model"])
        infos = [symmetry_settings.analyze(structure) for structure in chosen.structures]
        scores[split], _, _, _ = evaluation.score(args.property, predictions, chosen, infos)
    result = {"label": args.label, "property": args.property, "profile": name, "overrides": overrides,
              "train_filter": args.train_filter, "train_seconds": round(seconds, 1),
              "epochs": [member.epochs_run for member in fitted.members],
              "best_epochs": [member.best_epoch for member in fitted.members],
              "validation_metrics": scores["validation"]["model"], "metrics": scores["test"]["model"]}
    if "zero_tensor" in scores["test"]:
        result["zero_tensor"] = {split: scores[split]["zero_tensor"] for split in ("validation", "test")}
    if "external" in scores:
        result["external_metrics"] = scores["external"]["model"]
    if args.property == "dielectric":
        result["reference"] = reference_predictions(net)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model cards (README.md of a Hub model repository): YAML header for the Hub, markdown for people.

Header: license, library_name, tags, datasets, and the facts `zoo info` reads back (model version, property,
headline test metric, dataset version and fingerprint). Body (``zoo/templates/model_card.md.j2``): test metrics
of the model and its baselines, the headline metric per crystal system, training parameters, dataset name,
version and fingerprint, the lineage of the DVC stage that trained it, intended use and limitations,
citations. Property facts come from ``zoo.properties``, source citations from ``zoo.data.cards``.

The header also carries, for `zoo audit` (zoo.release.audit) to re-derive the card, machine-readable facts:
    weights_sha256   the weights the card describes (the training data it names are, as before, `datasets`,
                     dataset_version and dataset_fingerprint)
    test_metrics     split, n_test, headline, printed_format (how the body prints every value: PRINTED_FORMAT),
                     model / baselines (name -> metric -> value), per_crystal_system (predictor -> system -> metric
                     -> value), at full precision, and baseline_settings (what the evaluate stage fitted the
                     baselines with: composition_gbm GBMSettings, non_equivariant TrainSettings)
    provenance       the lineage (zoo.release.lineage) of the DVC stage that trained the model: dvc_stage (its DVC
                     address), dependencies (path -> md5 as DVC hashes it), params (params file -> key -> value),
                     and of the dependencies dataset_path and
                     dataset_dvc_md5, the dataset folder it was trained on (null without a lineage: the model was not
                     made by a DVC stage). No git commit, time or machine: the card is the same wherever it is made
                     (the commit that added a shipped release is the one that holds its code: `git log`).
`printed_metrics` reads the body's tables back, so that an audit compares the printed values too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zoo import properties
from zoo.core import templates

CARD_FILE = "README.md"
TEMPLATE = "model_card.md.j2"
LICENSE = "mit"
LIBRARY_NAME = "e3nn"

# The model and the library it is built on (zoo.data.cards.BIBTEX holds the data sources).
MODEL_BIBTEX = {
    "wen2024matten": """@article{wen2024matten,
  author  = {Wen, Mingjian and Horton, Matthew K. and Munro, Jason M. and Huck, Patrick and Persson, Kristin A.},
  title   = {An equivariant graph neural network for the elasticity tensors of all seven crystal systems},
  journal = {Digital Discovery},
  volume  = {3},
  pages   = {869--882},
  year    = {2024},
  doi     = {10.1039/D3DD00233K}
}""",
    "geiger2022e3nn": """@misc{geiger2022e3nn,
  author  = {Geiger, Mario and Smidt, Tess},
  title   = {e3nn: Euclidean Neural Networks},
  year    = {2022},
  eprint  = {2207.09453},
  archivePrefix = {arXiv}
}""",
}
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
# Every metric in the body is printed with this format: the precision an audit compares to.
PRINTED_FORMAT = ".4g"
# The model's row label in the body's metrics table (the per-crystal-system table says "model").
MODEL_LABEL = "model (this)"
METRICS_HEADING = "## Test metrics"
# First header cell of the test metrics table, which has one row per metric and one column per predictor.
METRIC_COLUMN = "metric"
_PER_SYSTEM_HEADING = re.compile(r"### `(\w+)` per crystal system")
_SYSTEM_COLUMN = re.compile(r"(.+) \(n=(\d+)\)")


def card_metadata(info: Mapping[str, Any], metrics: Mapping[str, Any], version: str, dataset_repo: str,
                  per_system: Mapping[str, Any] | None = None, *,
                  lineage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML header as a dict. info: the model's config.json; metrics / per_system: the evaluate stage's metrics
    JSON and per-crystal-system JSON; lineage: as for render_model_card."""
    from zoo.data.datasets import HUB_DATASETS_DIR

    spec = properties.get(info["property"])
    headline = metrics["headline"]
    test_metrics = {"split": metrics["split"], "n_test": metrics["n_test"], "headline": headline,
                    "printed_format": PRINTED_FORMAT, "model": dict(metrics["model"]),
                    "baselines": {name: dict(scores) for name, scores in metrics["baselines"].items()},
                    "per_crystal_system": {name: {system: dict(scores) for system, scores in systems.items()}
                                           for name, systems in (per_system or {}).items()}}
    if "baseline_settings" in metrics:
        test_metrics["baseline_settings"] = metrics["baseline_settings"]
    dataset_path = (HUB_DATASETS_DIR / spec.dataset_name).as_posix()
    # The external split (materials no training source holds) and the learning curve, where evaluate measured them.
    beyond = {key: metrics[key] for key in ("external", "learning_curve") if key in metrics}
    if "external" in beyond:
        beyond["external"] = {"split": "external", **beyond["external"]}
    dependencies = dict((lineage or {}).get("deps") or {})
    return {
        "license": LICENSE,
        "library_name": LIBRARY_NAME,
        "tags": ["materials-science", "crystals", "materials-project", "equivariant", "e3nn", "tensor",
                 spec.name, "pytorch", "safetensors"],
        "datasets": [dataset_repo],
        "pipeline_tag": "tabular-regression",
        "model_version": version,
        "property": spec.name,
        "units": spec.units,
        "irreps": spec.irreps,
        "headline_metric": {"name": headline, "value": metrics["model"][headline], "split": metrics["split"],
                            "n_test": metrics["n_test"]},
        "dataset_version": info["dataset"]["version"],
        "dataset_fingerprint": info["dataset"]["fingerprint"],
        "weights_sha256": info["weights"]["sha256"],
        "test_metrics": test_metrics,
        **{f"{key}_metrics" if key == "external" else key: value for key, value in beyond.items()},
        "provenance": {"dvc_stage": (lineage or {}).get("stage"), "dependencies": dependencies,
                       "params": dict((lineage or {}).get("params") or {}),
                       "dataset_path": dataset_path, "dataset_dvc_md5": dependencies.get(dataset_path)},
    }


def format_metric(value: Any, float_format: str = PRINTED_FORMAT) -> str:
    """A metric as the card prints it: floats with `float_format`, None as '-', integers as they are."""
    return "-" if value is None else format(value, float_format) if isinstance(value, float) else str(value)


def rare_element_rows(metrics: Mapping[str, Any], headline: str) -> tuple[list[str], list[tuple]]:
    """The metric keys and the rows (split, predictor, n rare, rare values, n common, common values) of the card's
    rare-element table, from metrics["rare_element_breakdown"]."""
    breakdown = metrics.get("rare_element_breakdown", {})
    rare_keys = [key for key in (headline, "k_voigt_mae", "g_voigt_mae") if key in metrics["model"]]
    rare_rows = [(split, name if name != "model" else MODEL_LABEL, groups["rare"]["n"],
                  [format_metric(groups["rare"].get(key)) for key in rare_keys], groups["common"]["n"],
                  [format_metric(groups["common"].get(key)) for key in rare_keys])
                 for split, table in breakdown.items() if isinstance(table, dict)
                 for name, groups in table.items() if isinstance(groups, dict) and "rare" in groups]
    return rare_keys, rare_rows


def render_model_card(info: Mapping[str, Any], metrics: Mapping[str, Any], per_system: Mapping[str, Any],
                      *, version: str, dataset_repo: str, lineage: Mapping[str, Any] | None) -> str:
    """The complete README.md text (YAML header + markdown body).

    info: config.json of the model folder; metrics / per_system: data/reports/<property>-metrics.json and
    -metrics-per-crystal-system.json; lineage: the DVC stage that trained the model and its dependencies
    (zoo.release.lineage; None if the model was not made by a DVC stage).
    """
    from huggingface_hub import ModelCardData

    spec = properties.get(info["property"])
    if metrics.get("model_weights_sha256") != info["weights"]["sha256"]:
        raise ValueError(f"metrics are of weights {metrics.get('model_weights_sha256')}, but the model's weights are "
                         f"{info['weights']['sha256']}: evaluate this model first (dvc repro evaluate@{spec.name})")
    header = ModelCardData(**card_metadata(info, metrics, version, dataset_repo, per_system,
                                           lineage=lineage)).to_yaml()
    predictors = {MODEL_LABEL: metrics["model"], **metrics["baselines"]}
    metric_names = sorted({key for scores in predictors.values() for key in scores if key != "n"})
    headline = metrics["headline"]
    published = [{**row, "model": format_metric(row["model"]),
                  "best_baseline": f"{format_metric(row['best_baseline_value'])} ({row['best_baseline']})"
                  if row.get("best_baseline") else "-"} for row in metrics.get("published", [])]
    systems = sorted(per_system.get("model", {}))
    signs = metrics.get("sign_of_largest_component") or {}
    sign_groups = sorted(signs.get("model", {}), key=lambda group: (group != "all", group))
    external = metrics.get("external")
    external_predictors = {MODEL_LABEL: external["model"], **external["baselines"]} if external else {}
    breakdown = metrics.get("rare_element_breakdown", {})
    rare_keys, rare_rows = rare_element_rows(metrics, headline)
    body = templates.environment().get_template(TEMPLATE).render(
        external=external,
        external_predictor_names=list(external_predictors),
        external_rows=[(key, [format_metric(scores.get(key)) for scores in external_predictors.values()])
                       for key in metric_names],
        rare_keys=rare_keys, rare_rows=rare_rows, rare_definition=breakdown.get("definition"),
        learning_curve=metrics.get("learning_curve"), format_metric=format_metric,
        spec=spec, info=info, version=version, metrics=metrics, headline=headline, dataset_repo=dataset_repo,
        predictor_names=list(predictors),
        metric_rows=[(key, [format_metric(scores.get(key)) for scores in predictors.values()])
                     for key in metric_names],
        definitions=sorted((metrics.get("definitions") or {}).items()), published=published,
        systems=systems,
        system_rows=[(name, [format_metric(scores.get(s, {}).get(headline)) for s in systems])
                     for name, scores in per_system.items()],
        system_counts={s: v["n"] for s, v in per_system.get("model", {}).items()},
        sign_groups=sign_groups,
        sign_rows=[(MODEL_LABEL if name == "model" else name,
                    [f"{groups[g]['right']}/{groups[g]['n']}" if g in groups else "-" for g in sign_groups])
                   for name, groups in signs.items()],
        training=yaml.safe_dump(info["training"], sort_keys=True).rstrip(),
        model_config=yaml.safe_dump(info["model_config"], sort_keys=True, default_flow_style=None).rstrip(),
        lineage=lineage,
        lineage_yaml=yaml.safe_dump({key: lineage[key] for key in ("deps", "params")}, sort_keys=False).rstrip()
        if lineage else None,
        source_notes=[citation.note for citation in spec.citations],
        bibtex=list(MODEL_BIBTEX.values()) + [citation.bibtex for citation in spec.citations],
    )
    return f"---\n{header}\n---\n\n{body}"


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML header of a card as a dict ({} when it has none)."""
    match = _FRONT_MATTER.match(text or "")
    return (yaml.safe_load(match.group(1)) or {}) if match else {}


def printed_metrics(text: str) -> dict[str, Any]:
    """The metric values as the card's body prints them (strings, as printed):

    {"metrics": {predictor: {metric: text}},                      the test metrics table ('model' for the model)
     "per_crystal_system": {"metric": headline, "n": {system: text}, "values": {predictor: {system: text}}}}
    Tables that are absent give empty mappings.
    """
    out: dict[str, Any] = {"metrics": {}, "per_crystal_system": {"metric": None, "n": {}, "values": {}}}
    section, header = None, None
    for line in (text or "").splitlines():
        heading = _PER_SYSTEM_HEADING.fullmatch(line.strip())
        if line.startswith("#"):
            section, header = ("metrics" if line.strip() == METRICS_HEADING else
                               "per_crystal_system" if heading else None), None
            if heading:
                out["per_crystal_system"]["metric"] = heading.group(1)
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= {"-"} for cell in cells):  # the |---| rule under the header
            if section == "metrics" and header[0] == METRIC_COLUMN:  # one row per metric, one column per predictor
                for predictor, value in zip(header[1:], cells[1:]):
                    out["metrics"].setdefault("model" if predictor == MODEL_LABEL else predictor, {})[cells[0]] = value
                continue
            predictor = "model" if cells[0] == MODEL_LABEL else cells[0]
            values = dict(zip(header[1:], cells[1:]))
            if section == "metrics":  # cards before 1.1.0: one row per predictor
                out["metrics"][predictor] = values
            else:
                columns = {column: _SYSTEM_COLUMN.fullmatch(column) for column in header[1:]}
                out["per_crystal_system"]["n"] = {m.group(1): m.group(2) for m in columns.values() if m}
                out["per_crystal_system"]["values"][predictor] = {
                    (m.group(1) if m else column): value for (column, m), value in zip(columns.items(), cells[1:])}
    return out


# ------------------------------------------------------------------------------------------- the short form
LIMITATIONS_HEADING = "## Intended use and limitations"


@dataclass(frozen=True)
class ModelCard:
    """A model's card: `text` (the README.md: YAML header and markdown), `path` (where it is), `metadata` (the
    header). ``str(card)`` (and ``print(card)``) is `summary()`, a screenful; the full card is `text`."""

    text: str
    path: Path | None = None

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        return parse_front_matter(self.text)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """What the model predicts, its data, the headline test metric against the baselines, the limitations,
        and where the full card is."""
        header = self.metadata
        title = next((line[2:].strip() for line in self.text.splitlines() if line.startswith("# ")), "model card")
        lines = [title]
        prop = header.get("property")
        if prop in properties.PROPERTIES:
            spec = properties.get(prop)
            lines.append(f"predicts  {spec.title.lower()} ({spec.units}), {spec.target_part} part, irreps "
                         f"{spec.irreps}, from a crystal structure")
        if header.get("datasets"):
            fingerprint = str(header.get("dataset_fingerprint", ""))
            lines.append(f"data      {', '.join(header['datasets'])} {header.get('dataset_version', '')} "
                         f"({fingerprint[:19]}{'...' if len(fingerprint) > 19 else ''}), Materials Project DFT-PBE")
        lines += _headline_rows(header.get("test_metrics") or {})
        limitations = _section_bullets(self.text, LIMITATIONS_HEADING)
        if limitations:
            lines.append("limits")
            lines += [f"  - {bullet}" for bullet in limitations]
        where = f"{self.path}" if self.path is not None else "model.card.text"
        lines.append(f"full card {where} ({len(self.text.splitlines())} lines; model.card.text)")
        return "\n".join(lines)


def _headline_rows(test_metrics: Mapping[str, Any]) -> list[str]:
    headline = test_metrics.get("headline")
    model = (test_metrics.get("model") or {}).get(headline)
    if headline is None or model is None:
        return []
    rows = [f"test      {headline} on {test_metrics.get('n_test', '?')} {test_metrics.get('split', 'test')} "
            f"records (lower is better):"]
    scores = {MODEL_LABEL: model, **{name: values.get(headline)
                                     for name, values in (test_metrics.get("baselines") or {}).items()}}
    width = max(len(name) for name in scores)
    rows += [f"  {name:<{width}}  {format_metric(value)}" for name, value in scores.items()]
    return rows


def _section_bullets(text: str, heading: str) -> list[str]:
    """The first sentence of each bullet of a markdown section."""
    bullets: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("#"):
            inside = line.strip() == heading
        elif inside and line.startswith("- "):
            bullets.append(line[2:].strip())
        elif inside and line.startswith("  ") and bullets:
            bullets[-1] += " " + line.strip()
    return [re.split(r"(?<=\.)\s", bullet, maxsplit=1)[0].rstrip(".") for bullet in bullets]

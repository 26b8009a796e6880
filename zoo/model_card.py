"""Model cards (README.md of a Hub model repository): YAML header for the Hub, markdown for people.

Header: license, library_name, tags, datasets, and the facts `zoo info` reads back (model version, property,
headline test metric, dataset version and fingerprint). Body (``zoo/templates/model_card.md.j2``): test metrics
of the model and its baselines, the headline metric per crystal system, training parameters, dataset name,
version and fingerprint, git commit, the DVC lock entry of the training stage, intended use and limitations,
citations. Property facts come from ``zoo.properties``, source citations from ``zoo.cards``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import yaml

from zoo import cards, properties

CARD_FILE = "README.md"
TEMPLATE = "model_card.md.j2"
LICENSE = "mit"
LIBRARY_NAME = "e3nn"

# The model and the library it is built on (zoo.cards.BIBTEX holds the data sources).
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


def card_metadata(info: Mapping[str, Any], metrics: Mapping[str, Any], version: str,
                  dataset_repo: str) -> dict[str, Any]:
    """The YAML header as a dict. info: the model's config.json; metrics: the evaluate stage's metrics JSON."""
    spec = properties.get(info["property"])
    headline = metrics["headline"]
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
    }


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(cards.TEMPLATE_DIR)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                              lstrip_blocks=True)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def render_model_card(info: Mapping[str, Any], metrics: Mapping[str, Any], per_system: Mapping[str, Any],
                      *, version: str, dataset_repo: str, git_commit: str | None,
                      dvc_lock_entry: Mapping[str, Any] | None) -> str:
    """The complete README.md text (YAML header + markdown body).

    info: config.json of the model folder; metrics / per_system: data/reports/<property>-metrics.json and
    -metrics-per-crystal-system.json; dvc_lock_entry: the train stage's entry of dvc.lock (None if the model was
    not produced by `dvc repro`).
    """
    from huggingface_hub import ModelCardData

    spec = properties.get(info["property"])
    if metrics.get("model_weights_sha256") != info["weights"]["sha256"]:
        raise ValueError(f"metrics are of weights {metrics.get('model_weights_sha256')}, but the model's weights are "
                         f"{info['weights']['sha256']}: evaluate this model first (dvc repro evaluate@{spec.name})")
    header = ModelCardData(**card_metadata(info, metrics, version, dataset_repo)).to_yaml()
    predictors = {"model (this)": metrics["model"], **metrics["baselines"]}
    metric_names = sorted({key for scores in predictors.values() for key in scores if key != "n"})
    headline = metrics["headline"]
    body = _environment().get_template(TEMPLATE).render(
        spec=spec, info=info, version=version, metrics=metrics, headline=headline, dataset_repo=dataset_repo,
        metric_names=metric_names,
        metric_rows=[(name, [_number(scores.get(key)) for key in metric_names]) for name, scores in predictors.items()],
        systems=sorted(per_system.get("model", {})),
        system_rows=[(name, [_number(scores.get(s, {}).get(headline)) for s in sorted(per_system.get("model", {}))],
                      ) for name, scores in per_system.items()],
        system_counts={s: v["n"] for s, v in per_system.get("model", {}).items()},
        training=yaml.safe_dump(info["training"], sort_keys=True).rstrip(),
        model_config=yaml.safe_dump(info["model_config"], sort_keys=True, default_flow_style=None).rstrip(),
        git_commit=git_commit or "unknown (not published from a git checkout)",
        dvc_lock=yaml.safe_dump(dict(dvc_lock_entry), sort_keys=False).rstrip() if dvc_lock_entry else None,
        source_notes=[cards.SOURCE_NOTES[key] for key in spec.sources],
        bibtex=list(MODEL_BIBTEX.values()) + [cards.BIBTEX[key] for key in spec.sources],
    )
    return f"---\n{header}\n---\n\n{body}"


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML header of a card as a dict ({} when it has none)."""
    match = _FRONT_MATTER.match(text or "")
    return (yaml.safe_load(match.group(1)) or {}) if match else {}

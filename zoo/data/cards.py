"""Dataset cards (README.md of a Hub dataset repository): YAML header for the Hub, markdown for people.

The header (``huggingface_hub.DatasetCardData``) carries the license, the ``configs``/``data_files`` per split,
``dataset_info`` features and split sizes (the form ``datasets`` itself writes), tags, the dataset version and
content fingerprint, and the machine-readable ``tensor_columns`` map. The body is rendered from
``zoo/templates/dataset_card.md.j2``. Conventions are read from ``zoo.core.tensors`` and ``zoo.properties`` and
formatted here, never restated by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Features
from datasets.info import DatasetInfo
from datasets.splits import SplitDict, SplitInfo

from zoo.core import templates, tensor_checks, tensors
from zoo.core.config import SymmetryConfig
from zoo.data import dataset_schema
from zoo.data import splits
from zoo.properties import PropertySpec

CARD_TEMPLATE = "dataset_card.md.j2"
LICENSE = "cc-by-4.0"

# How a Voigt form indexes its Cartesian tensor, per zoo.core.tensors Voigt kind (m, n run over VOIGT_PAIRS).
_VOIGT_INDEXING = {
    "stiffness": "c_mn = f_mn C_ijkl with m <-> (i, j), n <-> (k, l)",
    "piezo_stress": "e_im = f_im e_ijk with m <-> (j, k)",
    "symmetric2": "v_m = f_m t_ij with m <-> (i, j)",
}


def voigt_factor_text(spec: PropertySpec) -> str:
    """The Voigt factors f of a property's Voigt kind, measured from zoo.core.tensors (Voigt form of an all-ones tensor)."""
    factors = np.asarray(tensors.cartesian_to_voigt(np.ones(spec.cartesian_shape), spec.voigt_kind))
    if np.all(factors == 1.0):
        return "none (f = 1: each Voigt entry is the Cartesian component itself, no factor 2 on shear entries)"
    return f"f = {factors.tolist()}"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def _feature_type(feature: Any) -> str:
    """Short text of a datasets feature, e.g. 'float64[3][3]', 'list[string]'."""
    if hasattr(feature, "dtype") and not hasattr(feature, "feature"):
        return feature.dtype
    if isinstance(feature, Mapping):  # a struct
        return "{" + ", ".join(f"{name}: {_feature_type(value)}" for name, value in feature.items()) + "}"
    inner = _feature_type(feature.feature)
    length = getattr(feature, "length", -1)
    if length is None or length < 0:
        return f"list[{inner}]"
    base, bracket, rest = inner.partition("[")
    return f"{base}[{length}]{bracket}{rest}"


def card_metadata(
    spec: PropertySpec,
    features: Features,
    version: str,
    fingerprint: str,
    counts: Mapping[str, int],
) -> dict[str, Any]:
    """The YAML header as a plain dict (also what tests compare against)."""
    present = [name for name in splits.ALL_SPLITS if name in counts]
    split_dict = SplitDict()
    for name in present:
        split_dict.add(SplitInfo(name=name, num_examples=int(counts[name])))
    info = DatasetInfo(features=features, splits=split_dict)._to_yaml_dict()
    return {
        "license": LICENSE,
        "pretty_name": f"{spec.title} ({spec.dataset_name})",
        "size_categories": [_size_category(sum(counts.values()))],
        "task_categories": ["tabular-regression", "graph-ml"],
        "tags": ["materials-science", "crystals", "materials-project", "tensor", "irreps", "e3nn",
                 "equivariance", spec.name],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": name, "path": f"{dataset_schema.DATA_DIR}/{name}-*.parquet"}
                           for name in present],
        }],
        "dataset_info": info,
        "dataset_version": version,
        "content_fingerprint": fingerprint,
        "tensor_columns": dataset_schema.tensor_column_map(spec),
        "source_citations": list(spec.sources),
    }


def render_dataset_card(
    spec: PropertySpec,
    *,
    features: Features,
    version: str,
    fingerprint: str,
    counts: Mapping[str, int],
    composition: Mapping[str, Mapping[str, int]],
    frame_actions: Mapping[tuple[str | None, str], int],
    frame_evidence: Mapping[str | None, int],
    report: Mapping[str, Any],
    salt: str,
    fractions: Mapping[str, float],
    pinned: bool,
    symmetry_settings: SymmetryConfig,
) -> str:
    """The complete README.md text (YAML header + markdown body).

    frame_actions: number of rows per (original_frame, frame_action) pair, as the clean stage recorded them.
    frame_evidence: number of rows per frame_evidence (what settled the frame; None for an invariant), printed
    most frequent first.
    """
    # Longer than ~60 lines: the template's context, one field per line; splitting it would only scatter the fields.
    from huggingface_hub import DatasetCardData

    metadata = card_metadata(spec, features, version, fingerprint, counts)
    header = DatasetCardData(**metadata).to_yaml()
    total = sum(int(counts[name]) for name in splits.SPLITS)  # the composition table's rows: assigned splits
    split_sizes = {name: int(counts[name]) for name in splits.SPLITS}
    deviations = splits.share_deviations(composition)
    systems = [
        {
            "name": system,
            "total": sum(row.values()),
            "counts": {name: row[name] for name in splits.SPLITS},
            "share": 100.0 * sum(row.values()) / total,
            "split_shares": {name: 100.0 * row[name] / split_sizes[name] if split_sizes[name] else 0.0
                             for name in splits.SPLITS},
        }
        for system, row in composition.items()
    ]
    columns = [
        {"name": c.name, "type": _feature_type(c.feature), "units": c.units or "-", "description": c.description}
        for c in dataset_schema.dataset_columns(spec, symmetry_settings)
    ]
    body = templates.environment().get_template(CARD_TEMPLATE).render(
        spec=spec,
        name=spec.dataset_name,
        version=version,
        fingerprint=fingerprint,
        fingerprint_definition=dataset_schema.FINGERPRINT_DEFINITION,
        version_file=dataset_schema.VERSION_FILE,
        total=total,
        counts=split_sizes,
        n_external=int(counts.get(splits.EXTERNAL, 0)),
        by_source=report.get("by_source") or {},
        merge=report.get("merge") or {},
        split_names=splits.SPLITS,
        systems=systems,
        max_deviation=max((abs(v) for row in deviations.values() for v in row.values()), default=0.0),
        min_stratum=splits.MIN_STRATUM_FOR_BALANCE,
        salt=salt,
        fractions=fractions,
        pinned=pinned,
        report=report,
        reasons=sorted(report["reasons"].items(), key=lambda item: (-item[1], item[0])),
        tensor_columns=dataset_schema.tensor_column_map(spec),
        voigt_order=dataset_schema.voigt_order_text(),
        voigt_indexing=_VOIGT_INDEXING.get(spec.voigt_kind, ""),
        voigt_factors=voigt_factor_text(spec) if spec.is_tensor else "",
        symmetry_rtol=tensor_checks.SYMMETRY_RTOL,
        columns=columns,
        frame_actions=[(frame or "-", action, count) for (frame, action), count in sorted(
            frame_actions.items(), key=lambda item: (-item[1], str(item[0])))],
        frame_evidence=sorted(((name, count) for name, count in frame_evidence.items() if name is not None),
                              key=lambda item: (-item[1], item[0])),
        frame_ambiguous=int(report["reasons"].get("frame_ambiguous", 0)),
        source_notes=[citation.note for citation in spec.citations],
        bibtex=[citation.bibtex for citation in spec.citations],
        example_irreps=next(iter(dataset_schema.tensor_column_map(spec))),
    )
    return f"---\n{header}\n---\n\n{body}"

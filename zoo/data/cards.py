"""Dataset cards (README.md of a Hub dataset repository): YAML header for the Hub, markdown for people.

The header (``huggingface_hub.DatasetCardData``) carries the license, the ``configs``/``data_files`` per split,
``dataset_info`` features and split sizes (the form ``datasets`` itself writes), tags, the dataset version and
content fingerprint, and the machine-readable ``tensor_columns`` map. The body is rendered from
``zoo/templates/dataset_card.md.j2``. Conventions are read from ``zoo.core.tensors`` and ``zoo.properties`` and
formatted here, never restated by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Features
from datasets.info import DatasetInfo
from datasets.splits import SplitDict, SplitInfo

from zoo.core import paths, tensors
from zoo.data import datasets as zoo_datasets
from zoo.data import splits
from zoo.properties import PropertySpec

TEMPLATE_DIR = paths.TEMPLATES_DIR
CARD_TEMPLATE = "dataset_card.md.j2"
LICENSE = "cc-by-4.0"

# BibTeX of every source a PropertySpec may name (spec.sources), and a line on what each contributes.
BIBTEX: dict[str, str] = {
    "dejong2015elastic": """@article{dejong2015elastic,
  author  = {de Jong, Maarten and Chen, Wei and Angsten, Thomas and Jain, Anubhav and Notestine, Randy and
             Gamst, Anthony and Sluiter, Marcel and Krishna Ande, Chaitanya and van der Zwaag, Sybrand and
             Plata, Jose J. and Toher, Cormac and Curtarolo, Stefano and Ceder, Gerbrand and Persson, Kristin A.
             and Asta, Mark},
  title   = {Charting the complete elastic properties of inorganic crystalline compounds},
  journal = {Scientific Data},
  volume  = {2},
  pages   = {150009},
  year    = {2015},
  doi     = {10.1038/sdata.2015.9}
}""",
    "petousis2017dielectric": """@article{petousis2017dielectric,
  author  = {Petousis, Ioannis and Mrdjenovich, David and Ballouz, Eric and Liu, Miao and Winston, Donald and
             Chen, Wei and Graf, Tanja and Schladt, Thomas D. and Persson, Kristin A. and Prinz, Fritz B.},
  title   = {High-throughput screening of inorganic compounds for the discovery of novel dielectric and optical
             materials},
  journal = {Scientific Data},
  volume  = {4},
  pages   = {160134},
  year    = {2017},
  doi     = {10.1038/sdata.2016.134}
}""",
    "dejong2015piezo": """@article{dejong2015piezo,
  author  = {de Jong, Maarten and Chen, Wei and Geerlings, Henry and Asta, Mark and Persson, Kristin A.},
  title   = {A database to enable discovery and design of piezoelectric materials},
  journal = {Scientific Data},
  volume  = {2},
  pages   = {150053},
  year    = {2015},
  doi     = {10.1038/sdata.2015.53}
}""",
    "petretto2018phonon": """@article{petretto2018phonon,
  author  = {Petretto, Guido and Dwaraknath, Shyam and Miranda, Henrique P. C. and Winston, Donald and
             Giantomassi, Matteo and van Setten, Michiel J. and Gonze, Xavier and Persson, Kristin A. and
             Hautier, Geoffroy and Rignanese, Gian-Marco},
  title   = {High-throughput density-functional perturbation theory phonons for inorganic materials},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180065},
  year    = {2018},
  doi     = {10.1038/sdata.2018.65}
}""",
    "chen2021phonon": """@article{chen2021phonon,
  author  = {Chen, Zhantao and Andrejevic, Nina and Smidt, Tess and Ding, Zhiwei and Xu, Qian and Chi, Yen-Ting
             and Nguyen, Quynh T. and Alatas, Ahmet and Kong, Jing and Li, Mingda},
  title   = {Direct Prediction of Phonon Density of States With Euclidean Neural Networks},
  journal = {Advanced Science},
  volume  = {8},
  pages   = {2004214},
  year    = {2021},
  doi     = {10.1002/advs.202004214}
}""",
    "materialsproject2013": """@article{materialsproject2013,
  author  = {Jain, Anubhav and Ong, Shyue Ping and Hautier, Geoffroy and Chen, Wei and Richards, William Davidson
             and Dacek, Stephen and Cholia, Shreyas and Gunter, Dan and Skinner, David and Ceder, Gerbrand and
             Persson, Kristin A.},
  title   = {Commentary: The Materials Project: A materials genome approach to accelerating materials innovation},
  journal = {APL Materials},
  volume  = {1},
  number  = {1},
  pages   = {011002},
  year    = {2013},
  doi     = {10.1063/1.4812323}
}""",
    "pakornchote2023straintensornet": """@article{pakornchote2023straintensornet,
  author  = {Pakornchote, Teerachote and Ektarawong, Annop and Chotibut, Thiparat},
  title   = {StrainTensorNet: Predicting crystal structure elastic properties using SE(3)-equivariant graph neural
             networks},
  journal = {Physical Review Research},
  volume  = {5},
  pages   = {043198},
  year    = {2023},
  doi     = {10.1103/PhysRevResearch.5.043198}
}""",
    "elatbot": """@misc{elatbot,
  title        = {ElaTBot},
  howpublished = {\\url{https://github.com/Grenzlinie/ElaTBot}, commit 7d72cd7,
                  reproduce/data/prompt_type_1/real_val_dataset_with_mpid.json},
  note         = {Materials Project elastic tensors (CC BY 4.0); code Apache-2.0}
}""",
}
SOURCE_NOTES: dict[str, str] = {
    "dejong2015elastic": "de Jong et al., Sci. Data 2, 150009 (2015): the DFT-PBE elastic tensors",
    "petousis2017dielectric": "Petousis et al., Sci. Data 4, 160134 (2017): the DFPT-PBE dielectric tensors",
    "dejong2015piezo": "de Jong et al., Sci. Data 2, 150053 (2015): the DFPT-PBE piezoelectric tensors",
    "petretto2018phonon": "Petretto et al., Sci. Data 5, 180065 (2018): the DFPT phonon densities of states",
    "chen2021phonon": "Chen et al., Adv. Sci. 8, 2004214 (2021): the 51-point, max-normalised DOS representation",
    "materialsproject2013": "Jain et al., APL Mater. 1, 011002 (2013): the Materials Project",
    "pakornchote2023straintensornet": "Pakornchote et al., Phys. Rev. Research 5, 043198 (2023), repository "
                                      "trachote/predict_elastic_tensor: newer Materials Project elastic tensors "
                                      "(`mp-elastic-extra/straintensornet_val.jsonl`)",
    "elatbot": "the ElaTBot repository (Grenzlinie/ElaTBot): newer Materials Project elastic tensors, the external "
               "split (`mp-elastic-extra/elatbot_val.jsonl`)",
}

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
            "data_files": [{"split": name, "path": f"{zoo_datasets.DATA_DIR}/{name}-*.parquet"}
                           for name in present],
        }],
        "dataset_info": info,
        "dataset_version": version,
        "content_fingerprint": fingerprint,
        "tensor_columns": zoo_datasets.tensor_column_map(spec),
        "source_citations": list(spec.sources),
    }


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty string in the card
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_dataset_card(
    spec: PropertySpec,
    *,
    features: Features,
    version: str,
    fingerprint: str,
    counts: Mapping[str, int],
    composition: Mapping[str, Mapping[str, int]],
    frame_actions: Mapping[tuple[str | None, str], int],
    report: Mapping[str, Any],
    salt: str,
    fractions: Mapping[str, float],
    pinned: bool,
) -> str:
    """The complete README.md text (YAML header + markdown body).

    frame_actions: number of rows per (original_frame, frame_action) pair, as the clean stage recorded them.
    """
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
        for c in zoo_datasets.dataset_columns(spec)
    ]
    body = _environment().get_template(CARD_TEMPLATE).render(
        spec=spec,
        name=spec.dataset_name,
        version=version,
        fingerprint=fingerprint,
        fingerprint_definition=zoo_datasets.FINGERPRINT_DEFINITION,
        version_file=zoo_datasets.VERSION_FILE,
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
        tensor_columns=zoo_datasets.tensor_column_map(spec),
        voigt_order=zoo_datasets.voigt_order_text(),
        voigt_indexing=_VOIGT_INDEXING.get(spec.voigt_kind, ""),
        voigt_factors=voigt_factor_text(spec) if spec.is_tensor else "",
        symmetry_rtol=tensors.SYMMETRY_RTOL,
        columns=columns,
        frame_actions=[(frame or "-", action, count) for (frame, action), count in sorted(
            frame_actions.items(), key=lambda item: (-item[1], str(item[0])))],
        source_notes=[SOURCE_NOTES[key] for key in spec.sources],
        bibtex=[BIBTEX[key] for key in spec.sources],
        example_irreps=next(iter(zoo_datasets.tensor_column_map(spec))),
    )
    return f"---\n{header}\n---\n\n{body}"

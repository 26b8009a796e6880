"""The training data: a built dataset's splits as SplitData (structures, targets, crystal systems), their graphs,
and the ModelConfig training derives from the training split."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo import properties
from zoo.core.train_config import TrainSettings
from zoo.data import dataset_schema
from zoo.data import datasets as zoo_datasets
from zoo.data import splits
from zoo.nn import graphs, model_config, model_files, models
from zoo.nn.model_config import ModelConfig


# ---------------------------------------------------------------------------------------------------- data
def target_column(property_name: str) -> str:
    """The dataset column of the property's target (headline) part in irreps form, or the DOS."""
    return properties.get(property_name).target_column


def target_columns(property_name: str) -> tuple[str, ...]:
    """The dataset columns a model of the property learns from: each predicted part (PropertySpec.predicted_parts)
    in irreps form, or the DOS."""
    spec = properties.get(property_name)
    if not spec.is_tensor or len(spec.dataset_parts) == 1:
        return (spec.target_column,)
    by_source = {part.source_column: part for part in spec.dataset_parts}
    return tuple(f"{by_source[part].prefix}_irreps" for part in spec.predicted_parts)


@dataclass(frozen=True, eq=False)  # eq=False: array fields make a generated __eq__ ambiguous
class SplitData:
    """One split of a property's dataset, as training and evaluation use it.

    record_ids, crystal_systems  one per record, in file order (sorted by record_id)
    structures                   pymatgen Structures (the frame of the tensors)
    targets                      (n, n_parts * dim) float64: target_columns in irreps form, one block per part of
                                 `parts` (the DOS for phonon)
    parts                        the parts of `targets`, in order (default PropertySpec.predicted_parts;
                                 ``for_parts``)
    """

    property: str
    record_ids: tuple[str, ...]
    crystal_systems: tuple[str, ...]
    structures: tuple[Any, ...]
    targets: np.ndarray
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:  # built without naming them: the targets are those of the parts a model predicts
            object.__setattr__(self, "parts", properties.get(self.property).predicted_parts)

    def __len__(self) -> int:
        return len(self.record_ids)


def for_parts(data: SplitData, parts: Sequence[str]) -> SplitData:
    """`data` with the targets of `parts` only (a model predicting fewer parts than the data hold), in that order."""
    parts = tuple(parts)
    if parts == data.parts:
        return data
    missing = [part for part in parts if part not in data.parts]
    if missing:
        raise ValueError(f"the data hold parts {data.parts}, not {missing}")
    blocks = np.split(data.targets, len(data.parts), axis=1)
    targets = np.concatenate([blocks[data.parts.index(part)] for part in parts], axis=1)
    return dataclasses.replace(data, targets=targets, parts=parts)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    version: str
    fingerprint: str


def load_splits(property_name: str, datasets_root: str | os.PathLike = zoo_datasets.HUB_DATASETS_DIR,
                ) -> tuple[dict[str, SplitData], DatasetInfo]:
    """Every split of the built dataset ``<datasets_root>/mp-<property>-irreps`` and its version facts."""
    spec = properties.get(property_name)
    folder = Path(datasets_root) / spec.dataset_name
    version_path = folder / dataset_schema.VERSION_FILE
    if not version_path.is_file():
        raise FileNotFoundError(f"{version_path} not found: build the dataset first (dvc repro build@{spec.name})")
    version = json.loads(version_path.read_text(encoding="utf-8"))
    info = DatasetInfo(name=spec.dataset_name, version=version["version"], fingerprint=version["fingerprint"])
    dataset = zoo_datasets.load_local(spec.name, datasets_root)
    columns = target_columns(spec.name)
    out = {}
    for split in (name for name in splits.ALL_SPLITS if name in dataset):
        table = dataset[split].select_columns(["record_id", "crystal_system", "lattice", "species", "frac_coords",
                                               *columns]).to_dict()
        rows = [dict(zip(table, values)) for values in zip(*table.values())]
        out[split] = SplitData(
            property=spec.name,
            record_ids=tuple(table["record_id"]),
            crystal_systems=tuple(table["crystal_system"]),
            structures=tuple(zoo_datasets.row_structure(row) for row in rows),
            targets=np.concatenate([np.asarray(table[column], dtype=np.float64).reshape(len(rows), -1)
                                    for column in columns], axis=1),
            parts=spec.predicted_parts,
        )
    return out, info


def split_domain(data: SplitData) -> dict[str, Any]:
    """The applicability domain of a split (zoo.nn.model_files.training_domain), for config.json's training_data:
    predictions outside it carry warnings (zoo.release.applicability)."""
    return model_files.training_domain((structure.lattice.matrix, [site.specie.symbol for site in structure])
                                       for structure in data.structures)


FITTING_SPLITS = ("train", "validation")


def fitting_splits(data: Mapping[str, SplitData]) -> dict[str, SplitData]:
    """The splits a fit may see: train (fitting) and validation (early stopping, model selection). The test and
    external splits are never handed to a fit."""
    return {name: data[name] for name in FITTING_SPLITS}


def subset(data: SplitData, indices: Sequence[int]) -> SplitData:
    """The records of `data` at `indices`, in that order."""
    indices = list(indices)
    return SplitData(data.property, tuple(data.record_ids[i] for i in indices),
                     tuple(data.crystal_systems[i] for i in indices), tuple(data.structures[i] for i in indices),
                     data.targets[indices], data.parts)


def split_graphs(data: Mapping[str, SplitData], r_cut: float) -> dict[str, graphs.GraphBatch]:
    """One collated GraphBatch per split (neighbour lists built once per distinct structure)."""
    cache = graphs.GraphCache(r_cut)
    return {name: graphs.GraphBatch.collate(cache.graphs(split.structures)) for name, split in data.items()}


# -------------------------------------------------------------------------------------------- model config
def make_model_config(property_name: str, settings: TrainSettings, train: SplitData,
                      train_graphs: graphs.GraphBatch, **overrides) -> ModelConfig:
    """The ModelConfig for `settings.model` with what training derives from the training split: the message
    normalisation (mean neighbours per atom) and, for tensors, the output scale and shift (of the targets as the
    network outputs them: ``zoo.nn.models.encode_targets``)."""
    spec = properties.get(property_name)
    fields = {**settings.model, **overrides}
    config = ModelConfig(spec.name, **fields, seed=settings.seed,
                                avg_num_neighbors=train_graphs.n_edges / max(train_graphs.n_atoms, 1))
    if not spec.is_tensor:
        return config
    encoded = models.encode_targets(config, for_parts(train, config.parts).targets)
    scale, shift = model_config.fit_output_normalisation(spec.name, encoded, config.head, n_parts=len(config.parts))
    return dataclasses.replace(config, output_scale=scale, output_shift=shift)

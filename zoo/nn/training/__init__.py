"""Training the zoo's models with Lightning: data from the built datasets, the loss, resumable fits, checkpoints.

Data. A split of ``data/hub/datasets/mp-<property>-irreps`` (``zoo.data.datasets.load``) becomes a ``SplitData``: the
structures, the target (the property's ``target_part`` in irreps form, or the max-normalised DOS for phonon) and
the crystal systems. Everything that does not change between epochs is computed once per run and kept: the
neighbour graphs (``zoo.nn.graphs.GraphCache``, which also reuses the graph of a repeated structure), one collated
``GraphBatch`` per split, and on it the spherical harmonics and radial bases of every edge
(``MattenNet.attach_geometry``). A mini-batch is then ``GraphBatch.select`` of its indices: tensor indexing only,
no per-step Python loop over structures and no recomputed edge features. The data loader yields indices only
(seeded per epoch, no worker processes), so loading is deterministic and resumes exactly.

Loss, per irreps block. For a tensor property, the mean over irrep instances b (5 for elastic 2x0e+2x2e+1x4e)
of mean_m (pred_bm - y_bm)^2 / s_b^2, where s_b is the block's RMS over the training targets (after removing the
mean of 0e blocks; ``zoo.nn.model_config.fit_output_normalisation``). Each block then counts equally, whatever its size
and dimension: the bulk-like 0e terms of the stiffness are ~10x the 4e part and would otherwise dominate. The
scale factors are invariants of the data set, so the loss stays rotation invariant. ``TrainSettings.
loss_irrep_weights`` then weighs the blocks of named irreps more (elastic {0e: w}: the two isotropic blocks, which
carry the bulk and shear moduli), the weights scaled to a mean of 1 over the blocks. Phonon: the plain MSE over
the 51 bins of the max-normalised DOS (already O(1); a per-bin scale would blow up the nearly empty high bins).

Fitting. Adam, ReduceLROnPlateau and EarlyStopping on the validation loss; the weights kept are those of the best
validation epoch. Seeds: the model initialisation (ModelConfig.seed) and the epoch permutation (seed, epoch) are
fixed; ``torch.use_deterministic_algorithms`` is on (Lightning ``deterministic``). Resume: Lightning writes
``last.ckpt`` (weights, optimiser, scheduler, early-stopping state, our best weights and history) into a resume
folder after every epoch, with ``run.json`` naming the run (settings, model config, dataset fingerprint); a later
run with the same name continues from it, loaded with ``weights_only=True`` (tensors and plain containers only).
The folder is deleted once the final outputs are written.

Data-parallel training (``TrainSettings.devices`` x ``num_nodes`` processes, strategy 'ddp'; README, 'Training on a
GPU or a cluster'). Every process runs the same stage: Lightning's launcher starts the other processes by running the same
command again, or torchrun / SLURM start them all. Each process loads the data, builds every graph and the same
initial network; each step's batch_size structures are shared out among the processes (``loaders``), DDP averages
the gradients, so each step is the single-process step up to float summation order. Losses are summed per epoch
and added over the processes, so every process takes the same early-stopping, learning-rate and best-epoch
decisions. Rank 0 alone writes: the resume folder (the other processes read it when they resume) and the model
folder, which is the same artefact as a single-process run's, its config.json recording devices, num_nodes and
strategy. An ensemble trains member by member, each member data-parallel; single-process members train side by
side in ``train.workers`` processes (``parallel``), the same networks as one after another.

Outputs (``save_model``), a folder ``data/models/matten-<property>/``:
    model.safetensors   the best weights (no pickle)
    config.json         format version, ModelConfig, property, irreps, units, target column, training settings,
                        dataset name/version/fingerprint, sha256 of the weights, the training split's applicability
                        domain (schema and checks: zoo.nn.model_files)
    training_log.json   per-epoch losses and learning rates, best and last epoch: deterministic content (no times)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


from zoo import properties
from zoo.core.config import parse
from zoo.core.train_config import PER_PROPERTY_KEY, TrainConfig, TrainSettings
from zoo.data import datasets as zoo_datasets
from zoo.nn.model_config import ModelConfig
from zoo.nn.training.artifacts import (
    CONFIG_FILE,
    LOG_FILE,
    MODEL_FORMAT,
    WEIGHTS_FILE,
    LoadedModel,
    load_model,
    network,
    save_model,
    training_log,
)
from zoo.nn.training.data import (
    FITTING_SPLITS,
    DatasetInfo,
    SplitData,
    for_parts,
    fitting_splits,
    load_splits,
    make_model_config,
    split_domain,
    subset,
    target_column,
    target_columns,
)
from zoo.nn.training.loop import LAST_CHECKPOINT, RUN_FILE, FitResult, ModelFit, fit, fit_model, submit_model
from zoo.nn.training.parallel import FitPool
from zoo.nn.training.loss import Loss, loss_weights

# The package's API: the stage below, and the parts its modules hold.
__all__ = [
    "CONFIG_FILE", "FITTING_SPLITS", "LAST_CHECKPOINT", "LOG_FILE", "MODELS_DIR", "MODEL_FORMAT", "RUN_FILE",
    "WEIGHTS_FILE", "DatasetInfo", "FitPool", "FitResult", "LoadedModel", "Loss", "ModelFit", "SplitData",
    "TrainSettings", "fit", "fit_model", "fitting_splits", "for_parts", "load_model", "load_splits", "loss_weights",
    "make_model_config", "network", "save_model", "select_profile", "split_domain", "submit_model", "subset",
    "target_column", "target_columns", "train_property", "training_log",
]

MODELS_DIR = Path("data/models")
RESUME_DIR = MODELS_DIR / ".resume"


# ------------------------------------------------------------------------------------------------ settings
def select_profile(section: TrainConfig | Mapping[str, Any], profile: str | None = None,
                   property_name: str | None = None) -> tuple[str, TrainSettings]:
    """(name, settings) of a profile of the ``train`` params section (TrainConfig, or its mapping
    {profile: <name>, profiles: {<name>: {...}}}) for `property_name`.

    `profile` overrides the section's own choice. ``TrainConfig.resolve`` applies the profile's ``extends`` and
    ``per_property`` settings (zoo.core.config says how); property names there are checked against zoo.properties.
    """
    if not isinstance(section, TrainConfig):
        section = parse(TrainConfig, section, "train")
    name = profile if profile is not None else section.profile
    unknown = sorted(section.per_property_names() - set(properties.PROPERTIES))
    if unknown:
        raise ValueError(f"{PER_PROPERTY_KEY} names unknown properties {unknown}; known: "
                         f"{sorted(properties.PROPERTIES)}")
    if property_name is not None:
        properties.get(property_name)  # ValueError naming the known properties
    settings = TrainSettings.from_params(section.resolve(name, property_name))
    check_model_fields(settings.model)
    return name, settings


def check_model_fields(fields: Mapping[str, Any]) -> None:
    """Refuse `model` settings that are not ModelConfig fields (by name)."""
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise ValueError(f"model has unknown ModelConfig fields {unknown}")


# ----------------------------------------------------------------------------------------------- the stage
def train_property(property_name: str, settings: TrainSettings, *, profile: str | None = None,
                   datasets_root: str | os.PathLike = zoo_datasets.HUB_DATASETS_DIR,
                   models_root: str | os.PathLike = MODELS_DIR, resume_root: str | os.PathLike | None = None,
                   live_dir: str | os.PathLike | None = None, stop_after_epochs: int | None = None,
                   callbacks: Sequence[Any] = (), workers: int = 1) -> tuple[Path | None, ModelFit]:
    """The train stage: load the dataset, fit (resuming a matching interrupted run), write the model folder.

    Returns (model folder, the fit); the folder is None when `stop_after_epochs` interrupted the run, and in every
    process but rank 0 of a data-parallel run (rank 0 writes the one model folder).
    resume_root: parent of the per-model resume folder (default ``<models_root>/.resume``).
    callbacks: more Lightning callbacks for every network's fit.
    workers: an ensemble's members trained side by side in up to this many processes (zoo.nn.training.parallel).
    """
    spec = properties.get(property_name)
    data, dataset = load_splits(spec.name, datasets_root)
    resume_root = Path(models_root) / ".resume" if resume_root is None else Path(resume_root)
    with FitPool(workers) as pool:
        fitted = fit_model(fitting_splits(data), settings, resume_dir=resume_root / spec.model_name, dataset=dataset,
                           live_dir=live_dir, stop_after_epochs=stop_after_epochs, callbacks=callbacks, pool=pool)
    if not fitted.complete or fitted.global_rank != 0:
        return None, fitted
    counts = {name: len(split) for name, split in data.items()}
    folder = save_model(Path(models_root) / spec.model_name, fitted.net, settings=settings, dataset=dataset,
                        log=training_log(fitted, settings, counts), profile=profile,
                        training_data=split_domain(data["train"]))
    return folder, fitted

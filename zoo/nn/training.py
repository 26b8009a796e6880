"""Training the zoo's models with Lightning: data from the built datasets, the loss, resumable fits, checkpoints.

Data. A split of ``data/hub/datasets/mp-<property>-irreps`` (``zoo.data.datasets.load``) becomes a ``SplitData``: the
structures, the target (the property's ``target_part`` in irreps form, or the max-normalised DOS for phonon) and
the crystal systems. Everything that does not change between epochs is computed once per run and kept: the
neighbour graphs (``zoo.nn.graphs.GraphCache``, which also reuses the graph of a repeated structure), one collated
``GraphBatch`` per split, and on it the spherical harmonics and radial bases of every edge
(``MattenNet.attach_geometry``). A mini-batch is then ``GraphBatch.select`` of its indices: tensor indexing only,
no per-step Python loop over structures and no recomputed edge features. The data loader yields indices only
(single process, seeded per epoch), so loading is deterministic and resumes exactly.

Loss, per irreps block. For a tensor property, the mean over irrep instances b (5 for elastic 2x0e+2x2e+1x4e)
of mean_m (pred_bm - y_bm)^2 / s_b^2, where s_b is the block's RMS over the training targets (after removing the
mean of 0e blocks; ``zoo.nn.models.fit_output_normalisation``). Each block then counts equally, whatever its size
and dimension: the bulk-like 0e terms of the stiffness are ~10x the 4e part and would otherwise dominate. The
scale factors are invariants of the data set, so the loss stays rotation invariant. Phonon: the plain MSE over
the 51 bins of the max-normalised DOS (already O(1); a per-bin scale would blow up the nearly empty high bins).

Fitting. Adam, ReduceLROnPlateau and EarlyStopping on the validation loss; the weights kept are those of the best
validation epoch. Seeds: the model initialisation (ModelConfig.seed) and the epoch permutation (seed, epoch) are
fixed; ``torch.use_deterministic_algorithms`` is on (Lightning ``deterministic``). Resume: Lightning writes
``last.ckpt`` (weights, optimiser, scheduler, early-stopping state, our best weights and history) into a resume
folder after every epoch, with ``run.json`` naming the run (settings, model config, dataset fingerprint); a later
run with the same name continues from it, loaded with ``weights_only=True`` (tensors and plain containers only).
The folder is deleted once the final outputs are written.

Outputs (``save_model``), a folder ``data/models/matten-<property>/``:
    model.safetensors   the best weights (no pickle)
    config.json         format version, ModelConfig, property, irreps, units, target column, training settings,
                        dataset name/version/fingerprint, sha256 of the weights
    training_log.json   per-epoch losses and learning rates, best and last epoch: deterministic content (no times)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from e3nn import o3

from zoo import properties
from zoo.core.io import atomic_write_bytes, canonical_json, sha256_bytes, write_json
from zoo.data import datasets as zoo_datasets
from zoo.data import splits
from zoo.nn import graphs, models

MODEL_FORMAT = "mp-tensor-zoo/model/1"
MODELS_DIR = Path("data/models")
RESUME_DIR = MODELS_DIR / ".resume"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "training_log.json"
LAST_CHECKPOINT = "last.ckpt"
RUN_FILE = "run.json"


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainSettings:
    """How to train (params.yaml, section ``train``, one profile).

    max_epochs               upper limit on epochs
    batch_size               structures per optimiser step
    learning_rate            Adam's initial learning rate
    plateau_factor           ReduceLROnPlateau: multiply the rate by this when the validation loss stalls ...
    plateau_patience         ... for this many epochs
    min_learning_rate        the rate never goes below this
    early_stopping_patience  stop after this many epochs without a better validation loss
    seed                     model initialisation and epoch permutations
    accelerator              Lightning accelerator: 'auto' (a GPU when there is one), 'cpu', 'gpu'
    threads                  torch intra-op threads on CPU (null: leave torch's default)
    deterministic            torch.use_deterministic_algorithms (True, False, or 'warn' where an op has no
                             deterministic kernel, e.g. some CUDA scatter ops)
    progress_bar             Lightning's progress bar
    loss                     'mse' (per-block normalised squared error) or 'block_norm' (mean of per-block error
                             norms, robust to heavy-tailed targets); see ``Loss``
    ensemble_size            networks trained, with seeds seed, seed + 1, ...; more than one makes the model a
                             zoo.nn.models.Ensemble predicting their mean (and spread)
    separate_parts           (a property with several predicted parts, dielectric) one network per part, each part
                             selected on its own validation loss, instead of one network with a head per part;
                             ensemble_size networks per part
    model                    ModelConfig fields (zoo.nn.models) other than property, seed, avg_num_neighbors and the
                             output normalisation, which training sets from the data
    """

    max_epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 0.005
    plateau_factor: float = 0.5
    plateau_patience: int = 4
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 10
    seed: int = 0
    accelerator: str = "auto"
    threads: int | None = 1
    deterministic: bool | str = True
    progress_bar: bool = True
    loss: str = "mse"
    ensemble_size: int = 1
    separate_parts: bool = False
    model: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("max_epochs", "batch_size", "plateau_patience", "early_stopping_patience", "ensemble_size"):
            _check_int(getattr(self, name), name, minimum=1)
        _check_int(self.seed, "seed", minimum=0)
        if self.threads is not None:
            _check_int(self.threads, "threads", minimum=1)
        for name in ("learning_rate", "min_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.plateau_factor, bool) or not isinstance(self.plateau_factor, (int, float)) \
                or not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be a number in (0, 1), got {self.plateau_factor!r}")
        if self.accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
            raise ValueError(f"accelerator must be one of auto, cpu, gpu, cuda, mps, got {self.accelerator!r}")
        if self.deterministic not in (True, False, "warn"):
            raise ValueError(f"deterministic must be true, false or 'warn', got {self.deterministic!r}")
        if not isinstance(self.separate_parts, bool):
            raise ValueError(f"separate_parts must be true or false, got {self.separate_parts!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not isinstance(self.model, Mapping):
            raise ValueError(f"model must be a mapping of ModelConfig fields, got {self.model!r}")
        reserved = sorted(set(self.model) & {"property", "seed", "avg_num_neighbors", "output_scale", "output_shift"})
        if reserved:
            raise ValueError(f"model must not set {reserved}: training derives them (seed comes from settings.seed)")
        known = {f.name for f in dataclasses.fields(models.ModelConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ValueError(f"model has unknown ModelConfig fields {unknown}")
        object.__setattr__(self, "model", dict(self.model))

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> TrainSettings:
        """Settings from one profile mapping of params.yaml; unknown keys are refused by name."""
        if not isinstance(section, Mapping):
            raise ValueError(f"a training profile must be a mapping of settings, got {section!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise ValueError(f"training profile has unknown keys {unknown}; known: {sorted(names)}")
        return cls(**section)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PER_PROPERTY_KEY = "per_property"


def select_profile(section: Mapping[str, Any], profile: str | None = None, property_name: str | None = None,
                   ) -> tuple[str, TrainSettings]:
    """(name, settings) of a profile of the ``train`` params section {profile: <name>, profiles: {<name>: {...}}}.

    `profile` overrides the section's own choice. A profile may hold ``per_property: {<property>: {settings}}``:
    for `property_name` those settings replace the profile's (``model`` fields are merged one by one), so one
    profile can give the DOS its own loss or a small data set more epochs.
    """
    profiles = section.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise ValueError("the train section needs 'profiles', a mapping of profile name -> settings")
    name = profile if profile is not None else section.get("profile")
    if name not in profiles:
        raise ValueError(f"profile must be one of {sorted(profiles)}, got {name!r}")
    chosen = dict(profiles[name]) if isinstance(profiles[name], Mapping) else profiles[name]
    if isinstance(chosen, dict):
        per_property = chosen.pop(PER_PROPERTY_KEY, None) or {}
        if not isinstance(per_property, Mapping):
            raise ValueError(f"profile {name}: {PER_PROPERTY_KEY} must map property names to settings")
        unknown = sorted(set(per_property) - set(properties.PROPERTIES))
        if unknown:
            raise ValueError(f"profile {name}: {PER_PROPERTY_KEY} names unknown properties {unknown}; known: "
                             f"{sorted(properties.PROPERTIES)}")
        extra = per_property.get(property_name) or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"profile {name}: {PER_PROPERTY_KEY}.{property_name} must be a mapping of settings")
        chosen = {**chosen, **extra, "model": {**(chosen.get("model") or {}), **(extra.get("model") or {})}}
    return name, TrainSettings.from_params(chosen)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------- data
def target_columns(property_name: str) -> tuple[str, ...]:
    """The dataset columns a model of the property learns from: each predicted part (PropertySpec.predicted_parts)
    in irreps form, or the DOS."""
    spec = properties.get(property_name)
    if not spec.is_tensor:
        return ("dos",)
    by_source = {part.source_column: part for part in zoo_datasets.TENSOR_PARTS[spec.name]}
    if len(by_source) == 1:
        return (f"{next(iter(by_source.values())).prefix}_irreps",)
    return tuple(f"{by_source[part].prefix}_irreps" for part in spec.predicted_parts)


@dataclass(frozen=True, eq=False)  # eq=False: array fields make a generated __eq__ ambiguous
class SplitData:
    """One split of a property's dataset, as training and evaluation use it.

    record_ids, crystal_systems  one per record, in file order (sorted by record_id)
    structures                   pymatgen Structures (the frame of the tensors)
    targets                      (n, n_parts * dim) float64: target_columns in irreps form, one block per part of
                                 `parts` (the DOS for phonon)
    parts                        the parts of `targets`, in order (PropertySpec.predicted_parts; ``for_parts``)
    """

    property: str
    record_ids: tuple[str, ...]
    crystal_systems: tuple[str, ...]
    structures: tuple[Any, ...]
    targets: np.ndarray
    parts: tuple[str, ...] = ()

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
    version_path = folder / zoo_datasets.VERSION_FILE
    if not version_path.is_file():
        raise FileNotFoundError(f"{version_path} not found: build the dataset first (dvc repro build@{spec.name})")
    version = json.loads(version_path.read_text(encoding="utf-8"))
    info = DatasetInfo(name=spec.dataset_name, version=version["version"], fingerprint=version["fingerprint"])
    dataset = zoo_datasets.load(spec.name, local_root=datasets_root)
    columns = target_columns(spec.name)
    out = {}
    for split in splits.SPLITS:
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
                      train_graphs: graphs.GraphBatch, **overrides) -> models.ModelConfig:
    """The ModelConfig for `settings.model` with what training derives from the training split: the message
    normalisation (mean neighbours per atom) and, for tensors, the output scale and shift (of the targets as the
    network outputs them: ``zoo.nn.models.encode_targets``)."""
    spec = properties.get(property_name)
    fields = {**settings.model, **overrides}
    config = models.ModelConfig(spec.name, **fields, seed=settings.seed,
                                avg_num_neighbors=train_graphs.n_edges / max(train_graphs.n_atoms, 1))
    if not spec.is_tensor:
        return config
    encoded = models.encode_targets(config, for_parts(train, config.parts).targets)
    scale, shift = models.fit_output_normalisation(spec.name, encoded, n_parts=len(config.parts))
    return dataclasses.replace(config, output_scale=scale, output_shift=shift)


LOSSES = ("mse", "block_norm")


def loss_weights(config: models.ModelConfig) -> torch.Tensor:
    """Per-component weights w with loss = sum_c w_c (pred_c - y_c)^2 averaged over structures (module docstring):
    1 / (n_blocks dim_b s_b^2) for a tensor, 1 / 51 for the DOS."""
    spec = properties.get(config.property)
    irreps = models.output_irreps(config)
    if not spec.is_tensor:
        return torch.full((irreps.dim,), 1.0 / irreps.dim, dtype=torch.float64)
    scale = config.output_scale or (1.0,) * irreps.num_irreps
    weights = []
    for (mul, ir), block_scales in zip(irreps, _instances(irreps, scale)):
        for s in block_scales:
            weights += [1.0 / (irreps.num_irreps * ir.dim * s * s)] * ir.dim
    return torch.tensor(weights, dtype=torch.float64)


def block_index(config: models.ModelConfig) -> torch.Tensor:
    """For each output component, the irrep instance (block) it belongs to: 0..n_blocks-1."""
    irreps = models.output_irreps(config)
    return torch.tensor([block for block, ir in enumerate(ir for mul, ir in irreps for _ in range(mul))
                         for _ in range(ir.dim)], dtype=torch.long)


class Loss(torch.nn.Module):
    """Per-structure loss of prediction errors (n, dim) -> (n,).

    mse         sum_c w_c e_c^2 (``loss_weights``): the per-block normalised mean squared error
    block_norm  mean over blocks b of |e_b| / s_b, the Euclidean norm of each irrep instance's error in units of
                its scale: an L1-like loss over blocks, so a few extreme targets (eps up to 257) pull less than under
                a square, and still rotation invariant (a norm per irrep, not a sum of |components|)
    """

    def __init__(self, config: models.ModelConfig, kind: str = "mse"):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
        self.kind = kind
        dtype = models.DTYPES[config.dtype]
        weights = loss_weights(config)
        self.register_buffer("weights", weights.to(dtype), persistent=False)
        blocks = block_index(config) if properties.get(config.property).is_tensor else \
            torch.arange(weights.numel())
        self.n_blocks = int(blocks.max()) + 1
        self.register_buffer("blocks", blocks, persistent=False)
        # w_c = 1 / (n_blocks dim_b s_b^2), so n_blocks dim_b w_c = 1 / s_b^2 on every component of block b
        dims = torch.bincount(blocks, minlength=self.n_blocks)[blocks]
        self.register_buffer("inverse_square_scale", (weights * self.n_blocks * dims).to(dtype), persistent=False)

    def forward(self, errors: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return (errors.square() * self.weights).sum(dim=1)
        scaled = errors.square() * self.inverse_square_scale
        per_block = scaled.new_zeros(errors.shape[0], self.n_blocks).index_add_(1, self.blocks, scaled)
        # sqrt(x + eps^2) - eps: the norm with a finite gradient at zero error
        eps = 1e-6
        return ((per_block + eps * eps).sqrt() - eps).mean(dim=1)


def _instances(irreps, values):
    """values (one per irrep instance) grouped by irreps entry."""
    out, start = [], 0
    for mul, _ in irreps:
        out.append(values[start:start + mul])
        start += mul
    return out


# --------------------------------------------------------------------------------------------- Lightning
def _lightning():
    import lightning

    return lightning


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of range(n) drawn from (seed, epoch): the same every run and after a resume. Lightning calls
    ``set_epoch`` before each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def make_datamodule(data: Mapping[str, SplitData], batch_size: int, seed: int, r_cut: float):
    """A LightningDataModule over the train and validation splits: loaders of record indices (one process);
    ``graphs`` holds each split's collated neighbour graphs, built once in ``setup``."""
    lightning = _lightning()

    class GraphDataModule(lightning.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.data = {name: data[name] for name in ("train", "validation")}
            self.graphs: dict[str, graphs.GraphBatch] | None = None

        def setup(self, stage: str) -> None:
            if self.graphs is None:
                self.graphs = split_graphs(self.data, r_cut)

        def train_dataloader(self):
            n = len(self.data["train"])
            return torch.utils.data.DataLoader(range(n), batch_size=batch_size, sampler=EpochSampler(n, seed),
                                               num_workers=0)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(range(len(self.data["validation"])), batch_size=max(batch_size, 64),
                                               shuffle=False, num_workers=0)

    return GraphDataModule()


def make_module(net: models.MattenNet, settings: TrainSettings):
    """The LightningModule: the network, the per-block loss, Adam + plateau schedule, best-weight tracking."""
    lightning = _lightning()

    class MattenModule(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.loss = Loss(net.config, settings.loss)
            self.history: list[dict[str, float]] = []
            self.best: dict[str, Any] = {"epoch": None, "val_loss": math.inf, "state": None}
            self._sums = {"train": [0.0, 0], "validation": [0.0, 0], "validation_mae": [0.0, 0]}
            self._graphs: dict[str, graphs.GraphBatch] = {}
            self._targets: dict[str, torch.Tensor] = {}

        def on_fit_start(self) -> None:
            datamodule = self.trainer.datamodule
            for split in ("train", "validation"):
                # Fixed per-edge features computed once per run, on the training device.
                self._graphs[split] = self.net.attach_geometry(datamodule.graphs[split].to(self.device))
                targets = models.encode_targets(self.net.config,
                                                for_parts(datamodule.data[split], self.net.config.parts).targets)
                self._targets[split] = torch.as_tensor(targets, dtype=self.net.dtype, device=self.device)

        def _errors(self, split: str, index: torch.Tensor) -> torch.Tensor:
            prediction = self.net(self._graphs[split].select(index))
            return prediction - self._targets[split][index]

        def training_step(self, index, batch_idx):
            errors = self._errors("train", index)
            loss = self.loss(errors).mean()
            self._accumulate("train", float(loss.detach()) * len(index), len(index))
            return loss

        def validation_step(self, index, batch_idx):
            errors = self._errors("validation", index)
            self._accumulate("validation", float(self.loss(errors).sum()), len(index))
            self._accumulate("validation_mae", float(errors.abs().sum()), errors.numel())

        def _accumulate(self, key: str, total: float, count: int) -> None:
            self._sums[key][0] += total
            self._sums[key][1] += count

        def _mean(self, key: str) -> float:
            total, count = self._sums[key]
            self._sums[key] = [0.0, 0]
            return total / count if count else math.nan

        def on_validation_epoch_end(self) -> None:
            val_loss, val_mae = self._mean("validation"), self._mean("validation_mae")
            self.log("val_loss", val_loss, prog_bar=True)
            self.log("val_mae", val_mae)
            if self.trainer.sanity_checking:
                return
            epoch = self.current_epoch
            train_loss = self._mean("train")
            learning_rate = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train_loss", train_loss, prog_bar=True)
            self.log("learning_rate", learning_rate)
            self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_mae_irreps": val_mae, "learning_rate": learning_rate})
            if val_loss < self.best["val_loss"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
                self.best = {"epoch": epoch, "val_loss": val_loss, "state": state}

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=settings.plateau_factor, patience=settings.plateau_patience,
                min_lr=settings.min_learning_rate)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}}

        def on_save_checkpoint(self, checkpoint: dict) -> None:
            checkpoint["zoo_history"] = list(self.history)
            checkpoint["zoo_best"] = dict(self.best)

        def on_load_checkpoint(self, checkpoint: dict) -> None:
            self.history = list(checkpoint["zoo_history"])
            self.best = dict(checkpoint["zoo_best"])

    return MattenModule()


def make_epoch_timer():
    """A callback recording the wall time of each epoch, validation included (Lightning validates inside the
    training epoch), and logging it as epoch_time_s."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self._start = None

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            if self._start is not None:
                self.seconds.append(time.perf_counter() - self._start)
                pl_module.log("epoch_time_s", self.seconds[-1])
                self._start = None

    return EpochTimer()


@dataclass
class FitResult:
    net: models.MattenNet
    config: models.ModelConfig
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    complete: bool
    resumed_after_epochs: int | None
    epoch_seconds: list[float]
    setup_seconds: float


def run_key(config: models.ModelConfig, settings: TrainSettings, dataset: DatasetInfo | None) -> str:
    """sha256 naming a training run: what a resume checkpoint must match to be continued."""
    described = {"config": json.loads(config.to_json()), "settings": settings.as_dict(),
                 "dataset": None if dataset is None else dataclasses.asdict(dataset)}
    return hashlib.sha256(canonical_json(described).encode()).hexdigest()


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit(data: Mapping[str, SplitData], settings: TrainSettings, *, config_overrides: Mapping[str, Any] | None = None,
        resume_dir: str | os.PathLike | None = None, dataset: DatasetInfo | None = None,
        live_dir: str | os.PathLike | None = None, stop_after_epochs: int | None = None) -> FitResult:
    """Train a model on data['train'], selecting on data['validation'].

    config_overrides: ModelConfig fields on top of settings.model (e.g. head='invariant_voigt' for the baseline).
    resume_dir: where Lightning keeps last.ckpt; a matching run there is continued (None: a temporary folder).
    live_dir: dvclive metrics folder (None: no logger).
    stop_after_epochs: end this call after that many epochs (in total) as if interrupted; the resume folder keeps
        the run (for tests of resuming).
    """
    lightning = _lightning()
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    started = time.perf_counter()
    for split in ("train", "validation"):
        if split not in data or len(data[split]) == 0:
            raise ValueError(f"data must hold a non-empty {split!r} split")
    prop = data["train"].property
    with _torch_threads(settings.threads):
        lightning.seed_everything(settings.seed, workers=True, verbose=False)
        r_cut = {**settings.model, **(config_overrides or {})}.get("r_cut", models.ModelConfig.r_cut)
        datamodule = make_datamodule(data, settings.batch_size, settings.seed, r_cut)
        datamodule.setup("fit")
        config = make_model_config(prop, settings, data["train"], datamodule.graphs["train"],
                                   **(config_overrides or {}))
        net = models.MattenNet(config)
        module = make_module(net, settings)

        with contextlib.ExitStack() as stack:
            if resume_dir is None:
                resume_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-train-"))
            resume_dir = Path(resume_dir)
            key = run_key(config, settings, dataset)
            checkpoint = _resumable_checkpoint(resume_dir, key)
            resumed_after = None
            if checkpoint is not None:
                # Lightning's "epoch" counts the completed epochs. Our own file; loaded without pickle's code execution.
                resumed_after = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
            timer = make_epoch_timer()
            early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=settings.early_stopping_patience)
            last_checkpoint = ModelCheckpoint(dirpath=resume_dir, save_last=True, save_top_k=0,
                                              enable_version_counter=False)
            callbacks = [early_stopping, last_checkpoint, timer]
            logger = False
            if live_dir is not None:
                from dvclive.lightning import DVCLiveLogger

                # dvcyaml=None: dvclive must not write into the project's dvc.yaml; no experiment bookkeeping.
                logger = DVCLiveLogger(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None,
                                       resume=checkpoint is not None)
            max_epochs = settings.max_epochs if stop_after_epochs is None else min(settings.max_epochs,
                                                                                   stop_after_epochs)
            trainer = lightning.Trainer(
                max_epochs=max_epochs, accelerator=settings.accelerator, devices=1,
                deterministic=settings.deterministic, callbacks=callbacks, logger=logger,
                enable_progress_bar=settings.progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
                log_every_n_steps=1, default_root_dir=str(resume_dir),
            )
            _write_run_file(resume_dir, key)
            setup_seconds = time.perf_counter() - started
            trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
            stopped = bool(early_stopping.stopped_epoch)
            complete = stopped or len(module.history) >= settings.max_epochs
            if complete:
                shutil.rmtree(resume_dir, ignore_errors=True)

        if module.best["state"] is None:
            raise ValueError("training ran no complete epoch: no validation loss to select weights by")
        net.load_state_dict(module.best["state"])
        net.to("cpu").eval()
        return FitResult(net=net, config=config, history=list(module.history), best_epoch=module.best["epoch"],
                         epochs_run=len(module.history), stopped_early=stopped, complete=complete,
                         resumed_after_epochs=resumed_after,
                         epoch_seconds=list(timer.seconds), setup_seconds=setup_seconds)


def _resumable_checkpoint(resume_dir: Path, key: str) -> str | None:
    """resume_dir/last.ckpt if it belongs to the run `key`; otherwise the folder is cleared and None returned."""
    last, run = resume_dir / LAST_CHECKPOINT, resume_dir / RUN_FILE
    if last.is_file() and run.is_file():
        try:
            if json.loads(run.read_text(encoding="utf-8")).get("run_key") == key:
                return str(last)
        except json.JSONDecodeError:
            pass
    if resume_dir.exists():
        shutil.rmtree(resume_dir)  # another run's state: never continue it
    return None


def _write_run_file(resume_dir: Path, key: str) -> None:
    resume_dir.mkdir(parents=True, exist_ok=True)
    write_json(resume_dir / RUN_FILE, {"run_key": key})


# ------------------------------------------------------------------------------------------------ ensembles
MEMBER_WEIGHTS = "member.safetensors"
MEMBER_RESULT = "member.json"


@dataclass
class ModelFit:
    """The fit of a model: one FitResult per network (settings.ensemble_size of them), and the network to use: the
    single MattenNet, or their zoo.nn.models.Ensemble. `net` is None while a member is incomplete (interrupted)."""

    members: list[FitResult]
    net: models.MattenNet | models.Ensemble | None

    @property
    def complete(self) -> bool:
        return self.net is not None


def fit_model(data: Mapping[str, SplitData], settings: TrainSettings, *,
              config_overrides: Mapping[str, Any] | None = None, resume_dir: str | os.PathLike | None = None,
              dataset: DatasetInfo | None = None, live_dir: str | os.PathLike | None = None,
              stop_after_epochs: int | None = None) -> ModelFit:
    """``fit`` once per ensemble member: member k with seed settings.seed + k (arguments as for ``fit``); with
    settings.separate_parts, that for each predicted part in turn (model parts one by one).

    With a resume_dir, each member resumes in <resume_dir>/member-<k>/ (member-<part>-<k> for separate parts) and,
    once complete, leaves its weights and result there, so an interrupted ensemble continues with the member it was
    training. dvclive: the first member logs to live_dir, the others to live_dir/<their folder name>.
    """
    groups = _part_groups(data, settings, config_overrides)
    if settings.ensemble_size == 1 and len(groups) == 1:
        result = fit(data, settings, config_overrides=config_overrides, resume_dir=resume_dir, dataset=dataset,
                     live_dir=live_dir, stop_after_epochs=stop_after_epochs)
        return ModelFit([result], result.net if result.complete else None)
    members = []
    for parts in groups:
        overrides = {**(config_overrides or {}), **({"parts": parts} if len(groups) > 1 else {})}
        for k in range(settings.ensemble_size):
            name = f"member-{k}" if len(groups) == 1 else f"member-{'-'.join(parts)}-{k}"
            member_settings = dataclasses.replace(settings, seed=settings.seed + k, ensemble_size=1,
                                                  separate_parts=False)
            folder = None if resume_dir is None else Path(resume_dir) / name
            result = None if folder is None else _completed_member(folder, member_settings, dataset)
            if result is None:
                result = fit(data, member_settings, config_overrides=overrides,
                             resume_dir=None if folder is None else folder / "run", dataset=dataset,
                             live_dir=None if live_dir is None else Path(live_dir) / name if members else live_dir,
                             stop_after_epochs=stop_after_epochs)
                if not result.complete:
                    return ModelFit(members + [result], None)
                if folder is not None:
                    _save_member(folder, result, member_settings, dataset)
            members.append(result)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return ModelFit(members, models.Ensemble(member.net for member in members))


def _part_groups(data: Mapping[str, SplitData], settings: TrainSettings,
                 config_overrides: Mapping[str, Any] | None) -> list[tuple[str, ...]]:
    """The parts each network predicts: all the model's parts in one network, or one network per part."""
    spec = properties.get(data["train"].property)
    parts = {**settings.model, **(config_overrides or {})}.get("parts") or spec.predicted_parts
    if settings.separate_parts and len(parts) < 2:
        raise ValueError(f"separate_parts needs a model of several parts; {spec.name} predicts {tuple(parts)}")
    return [(part,) for part in parts] if settings.separate_parts else [tuple(parts)]


def _save_member(folder: Path, result: FitResult, settings: TrainSettings, dataset: DatasetInfo | None) -> None:
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in result.net.state_dict().items()}
    atomic_write_bytes(folder / MEMBER_WEIGHTS, save(state))
    write_json(folder / MEMBER_RESULT, {
        "run_key": run_key(result.config, settings, dataset), "config": json.loads(result.config.to_json()),
        "history": result.history, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early})


def _completed_member(folder: Path, settings: TrainSettings, dataset: DatasetInfo | None) -> FitResult | None:
    """The member completed earlier in `folder` for these settings and data, or None."""
    from safetensors.torch import load

    weights, saved = folder / MEMBER_WEIGHTS, folder / MEMBER_RESULT
    if not weights.is_file() or not saved.is_file():
        return None
    recorded = json.loads(saved.read_text(encoding="utf-8"))
    config = models.ModelConfig.from_json(json.dumps(recorded["config"]))
    if recorded.get("run_key") != run_key(config, settings, dataset):
        return None  # another run's member: trained again
    net = models.MattenNet(config)
    net.load_state_dict(load(weights.read_bytes()), strict=True)  # our own file, safetensors: no pickle
    return FitResult(net=net.eval(), config=config, history=recorded["history"], best_epoch=recorded["best_epoch"],
                     epochs_run=recorded["epochs_run"], stopped_early=recorded["stopped_early"], complete=True,
                     resumed_after_epochs=recorded["epochs_run"], epoch_seconds=[], setup_seconds=0.0)


# --------------------------------------------------------------------------------------------- checkpoints
LOSS_DESCRIPTIONS = {"mse": "per-irreps-block normalised MSE (zoo.nn.training.Loss); phonon: MSE over the 51 DOS bins",
                     "block_norm": "mean of per-irreps-block error norms over the block scales (zoo.nn.training.Loss)"}


def training_log(fitted: ModelFit, settings: TrainSettings, n_records: Mapping[str, int]) -> dict[str, Any]:
    """The deterministic training log (no wall times): per-epoch values and the selection, per ensemble member."""
    logs = [{
        "seed": result.config.seed,
        **({"parts": list(result.config.parts)} if settings.separate_parts else {}),
        "epochs": result.history,
        "best_epoch": result.best_epoch,
        "best_val_loss": min(entry["val_loss"] for entry in result.history),
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
    } for result in fitted.members]
    shared = {"max_epochs": settings.max_epochs, "n_records": dict(n_records), "loss": LOSS_DESCRIPTIONS[settings.loss]}
    if len(logs) == 1:
        return {**{k: v for k, v in logs[0].items() if k != "seed"}, **shared}
    return {"members": logs, **shared}


def save_model(folder: str | os.PathLike, net: models.MattenNet | models.Ensemble, *, settings: TrainSettings,
               dataset: DatasetInfo, log: Mapping[str, Any], profile: str | None = None) -> Path:
    """Write model.safetensors, config.json and training_log.json into `folder`, replacing it only once complete.

    config.json: model_config is the network's (for an Ensemble, member 0's, whose members differ only in the seed,
    ``ensemble_seeds``; with groups of parts, Ensemble.config and ``ensemble_parts``, the parts of each member)."""
    from safetensors.torch import save

    spec = properties.get(net.config.property)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in net.state_dict().items()}
    weights = save(state, metadata={"format": MODEL_FORMAT})
    config = {
        "format_version": MODEL_FORMAT,
        "model_name": spec.model_name,
        "property": spec.name,
        "irreps": spec.irreps,
        "formula": spec.formula,
        "units": spec.units,
        "target_columns": [column for column, part in zip(target_columns(spec.name), spec.predicted_parts)
                           if part in net.config.parts] if spec.has_parts else list(target_columns(spec.name)),
        "target_part": spec.target_part,
        "parts": list(spec.output_parts(net.config.parts)) if spec.is_tensor else None,
        "model_config": json.loads(net.config.to_json()),
        **({"ensemble_seeds": net.seeds} if isinstance(net, models.Ensemble) else {}),
        **({"ensemble_parts": [list(parts) for parts in net.member_parts]}
           if isinstance(net, models.Ensemble) and len(net.groups) > 1 else {}),
        "training": {"profile": profile, **settings.as_dict()},
        "dataset": dataclasses.asdict(dataset),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_bytes(weights)},
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        atomic_write_bytes(staging / WEIGHTS_FILE, weights)
        write_json(staging / CONFIG_FILE, config)
        write_json(staging / LOG_FILE, dict(log))
        staging.chmod(0o755)
        zoo_datasets._replace_directory(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


@dataclass(frozen=True)
class LoadedModel:
    net: models.MattenNet | models.Ensemble
    info: dict[str, Any]


def load_model(folder: str | os.PathLike) -> LoadedModel:
    """A model folder written by ``save_model``: config checked (format version, weights hash), weights from
    safetensors (no pickle), network in eval mode on the CPU."""
    from safetensors.torch import load

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {CONFIG_FILE} or {WEIGHTS_FILE}: not a model folder (train it first)")
    info = json.loads(config_path.read_text(encoding="utf-8"))
    if info.get("format_version") != MODEL_FORMAT:
        raise ValueError(f"{config_path} has format {info.get('format_version')!r}; this code reads {MODEL_FORMAT!r}")
    data = weights_path.read_bytes()
    if sha256_bytes(data) != info["weights"]["sha256"]:
        raise ValueError(f"{weights_path} does not match the sha256 in {config_path}: the folder is corrupt")
    net = network(info)
    net.load_state_dict(load(data), strict=True)
    return LoadedModel(net=net.eval(), info=info)


def network(info: Mapping[str, Any]) -> models.MattenNet | models.Ensemble:
    """The untrained network a config.json describes (an Ensemble when it lists ensemble_seeds)."""
    return models.build(models.ModelConfig.from_json(json.dumps(info["model_config"])), info.get("ensemble_seeds"),
                        info.get("ensemble_parts"))


# ----------------------------------------------------------------------------------------------- the stage
def train_property(property_name: str, settings: TrainSettings, *, profile: str | None = None,
                   datasets_root: str | os.PathLike = zoo_datasets.HUB_DATASETS_DIR,
                   models_root: str | os.PathLike = MODELS_DIR, resume_root: str | os.PathLike | None = None,
                   live_dir: str | os.PathLike | None = None, stop_after_epochs: int | None = None,
                   ) -> tuple[Path | None, ModelFit]:
    """The train stage: load the dataset, fit (resuming a matching interrupted run), write the model folder.

    Returns (model folder, the fit); the folder is None when `stop_after_epochs` interrupted the run.
    resume_root: parent of the per-model resume folder (default ``<models_root>/.resume``).
    """
    spec = properties.get(property_name)
    data, dataset = load_splits(spec.name, datasets_root)
    resume_root = Path(models_root) / ".resume" if resume_root is None else Path(resume_root)
    fitted = fit_model(data, settings, resume_dir=resume_root / spec.model_name, dataset=dataset, live_dir=live_dir,
                       stop_after_epochs=stop_after_epochs)
    if not fitted.complete:
        return None, fitted
    counts = {name: len(split) for name, split in data.items()}
    folder = save_model(Path(models_root) / spec.model_name, fitted.net, settings=settings, dataset=dataset,
                        log=training_log(fitted, settings, counts), profile=profile)
    return folder, fitted

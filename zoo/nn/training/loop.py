"""Resumable Lightning fits: the data module, the Lightning module, fit (one network) and fit_model (an ensemble,
member by member)."""

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.core.config import TrainSettings
from zoo.core.io import atomic_write_bytes, canonical_json, write_json
from zoo.nn import graphs, models
from zoo import properties
from zoo.nn.training.data import DatasetInfo, SplitData, for_parts, make_model_config, split_graphs
from zoo.nn.training.loss import Loss

LAST_CHECKPOINT = "last.ckpt"
RUN_FILE = "run.json"


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
    # Longer than ~60 lines: the LightningModule is defined here because Lightning is imported only when training runs.
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
    training epoch). Not logged to dvclive: the train stage's metrics and plots are DVC outputs recorded in dvc.lock,
    which must not change with the machine's speed (the stage prints the times instead)."""
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
    # Longer than ~60 lines: Lightning's trainer, callbacks and resume state are set up and torn down in one context.
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
            checkpoint = resumable_checkpoint(resume_dir, key)
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


def resumable_checkpoint(resume_dir: Path, key: str) -> str | None:
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

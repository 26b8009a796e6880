"""Resumable Lightning fits: the data module, the Lightning module, fit (one network) and fit_model (an ensemble,
member by member)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo import properties
from zoo.core.train_config import TrainSettings
from zoo.core.io import atomic_write_bytes, canonical_json, write_json
from zoo.nn import graphs, model_config, models
from zoo.nn.model_config import ModelConfig
from zoo.nn.training.data import FITTING_SPLITS, DatasetInfo, SplitData, for_parts, make_model_config
from zoo.nn.training.loaders import PADDING, make_datamodule, step_weight
from zoo.nn.training.loss import Loss
from zoo.nn.training.parallel import FitPool, PendingFit

LAST_CHECKPOINT = "last.ckpt"
RUN_FILE = "run.json"


# --------------------------------------------------------------------------------------------- Lightning
def _lightning():
    import lightning

    return lightning


def make_module(net: models.MattenNet, settings: TrainSettings, resumed_after: int | None = None,
                block_scales: Sequence[float] | None = None):
    """The LightningModule: the network, the per-block loss (block_scales: of the training targets; default the
    config's output scale), Adam + plateau schedule, best-weight tracking.

    Every process of a data-parallel run holds the same module state: its own losses are summed per epoch and the
    sums added over the processes (``_epoch_means``), so the validation loss that early stopping, the plateau
    schedule and the best-weight choice read is the same number everywhere. `resumed_after`: the epochs this
    process resumes after (None: a fresh run); every process must say the same (checked at the start).
    """
    # Longer than ~60 lines: the LightningModule is defined here because Lightning is imported only when training runs.
    lightning = _lightning()
    step_size = settings.batch_size

    class MattenModule(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.loss = Loss(net.config, settings.loss, block_scales, settings.loss_irrep_weights)
            self.history: list[dict[str, float]] = []
            self.best: dict[str, Any] = {"epoch": None, "val_loss": math.inf, "state": None}
            self._sums: dict[str, torch.Tensor] = {}
            self._graphs: dict[str, graphs.GraphBatch] = {}
            self._targets: dict[str, torch.Tensor] = {}

        def on_fit_start(self) -> None:
            if settings.threads is not None:
                torch.set_num_threads(settings.threads)  # Lightning's DDP launcher sets its own count
            _check_same_start(self, resumed_after)
            datamodule = self.trainer.datamodule
            for split in ("train", "validation"):
                # Fixed per-edge features computed once per run, on the training device.
                self._graphs[split] = self.net.attach_geometry(datamodule.graphs[split].to(self.device))
                targets = models.encode_targets(self.net.config,
                                                for_parts(datamodule.data[split], self.net.config.parts).targets)
                self._targets[split] = torch.as_tensor(targets, dtype=self.net.dtype, device=self.device)
            self._reset_sums()

        def _reset_sums(self) -> None:
            # (sum, count) per quantity, float64 on the device: no host synchronisation per step.
            self._sums = {key: torch.zeros(2, dtype=torch.float64, device=self.device)
                          for key in ("train", "validation", "validation_mae")}

        def _errors(self, split: str, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(prediction errors, targets, 1 for a record and 0 for PADDING) of a batch."""
            real = (index != PADDING).to(self.net.dtype)
            index = index.clamp(min=0)
            prediction = self.net(self._graphs[split].select(index))
            targets = self._targets[split][index]
            return prediction - targets, targets, real

        def training_step(self, index, batch_idx):
            errors, targets, real = self._errors("train", index)
            world_size = self.trainer.world_size
            if world_size == 1:
                loss = self.loss(errors, targets).mean()
                total = loss.detach().double() * len(index)  # the sum of the per-record losses
            else:
                summed = (self.loss(errors, targets) * real).sum()
                loss = summed * step_weight(len(self.trainer.datamodule.data["train"]), step_size, batch_idx,
                                            world_size)
                total = summed.detach().double()
            self._sums["train"] += torch.stack([total, real.double().sum()])
            return loss

        def validation_step(self, index, batch_idx):
            errors, targets, real = self._errors("validation", index)
            self._sums["validation"] += torch.stack([(self.loss(errors, targets) * real).sum().double(),
                                                     real.double().sum()])
            self._sums["validation_mae"] += torch.stack([(errors.abs() * real[:, None]).sum().double(),
                                                         real.double().sum() * errors.shape[1]])

        def _epoch_means(self) -> dict[str, float]:
            """Each quantity's mean over the epoch's records of every process; the sums start again."""
            totals = torch.stack([self._sums[key] for key in sorted(self._sums)])
            if self.trainer.world_size > 1:
                totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
            self._reset_sums()
            return {key: total / count if count else math.nan
                    for key, (total, count) in zip(sorted(self._sums), totals.tolist())}

        def on_validation_epoch_end(self) -> None:
            means = self._epoch_means()
            val_loss, val_mae, train_loss = means["validation"], means["validation_mae"], means["train"]
            # The values are already the same in every process (_epoch_means); sync_dist says so to Lightning, which
            # would otherwise warn, and averages equal numbers.
            self.log("val_loss", val_loss, prog_bar=True, sync_dist=True)
            self.log("val_mae", val_mae, sync_dist=True)
            if self.trainer.sanity_checking:
                return
            epoch = self.current_epoch
            learning_rate = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train_loss", train_loss, prog_bar=True, sync_dist=True)
            self.log("learning_rate", learning_rate, sync_dist=True)
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


def _check_same_start(module, resumed_after: int | None) -> None:
    """Refuse a data-parallel run whose processes would start from different states (one resuming, one not)."""
    if module.trainer.world_size == 1:
        return
    starts = module.all_gather(torch.tensor(-1 if resumed_after is None else resumed_after, device=module.device))
    if len(set(starts.tolist())) > 1:
        raise RuntimeError(f"the training processes would resume after {starts.tolist()} epochs: their resume folders "
                           "differ (every process must see rank 0's resume folder, e.g. on a shared file system)")


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
    """global_rank: this process's rank in a data-parallel run (0 for a single process): only rank 0 writes."""

    net: models.MattenNet
    config: ModelConfig
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    complete: bool
    resumed_after_epochs: int | None
    epoch_seconds: list[float]
    setup_seconds: float
    global_rank: int = 0


def run_key(config: ModelConfig, settings: TrainSettings, dataset: DatasetInfo | None) -> str:
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
        live_dir: str | os.PathLike | None = None, stop_after_epochs: int | None = None,
        callbacks: Sequence[Any] = (), progress_bar: bool | None = None) -> FitResult:
    """Train a model on data['train'], selecting on data['validation'].

    config_overrides: ModelConfig fields on top of settings.model (e.g. head='invariant_voigt' for the baseline).
    resume_dir: where Lightning keeps last.ckpt; a matching run there is continued (None: a temporary folder).
    live_dir: dvclive metrics folder (None: no logger).
    stop_after_epochs: end this call after that many epochs (in total) as if interrupted; the resume folder keeps
        the run (for tests of resuming).
    callbacks: more Lightning callbacks (e.g. to stop or time a run).
    progress_bar: Lightning's progress bar on or off (None: settings.progress_bar); not a training setting, so not
        part of the run.

    With settings.devices x num_nodes > 1 every process runs this function (Lightning's launcher starts the others
    by running the same command, or torchrun / SLURM starts them all); rank 0 alone writes the resume folder, and a
    process of another rank only reads it.
    """
    # Longer than ~60 lines: Lightning's trainer, callbacks and resume state are set up and torn down in one context.
    lightning = _lightning()
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    started = time.perf_counter()
    for split in FITTING_SPLITS:
        if split not in data or len(data[split]) == 0:
            raise ValueError(f"data must hold a non-empty {split!r} split")
    if set(data) - set(FITTING_SPLITS):  # the held-out splits must not even reach a fit (fitting_splits)
        raise ValueError(f"data for a fit must hold only {FITTING_SPLITS}, got {sorted(data)}")
    prop = data["train"].property
    with _torch_threads(settings.threads):
        lightning.seed_everything(settings.seed, workers=True, verbose=False)
        r_cut = {**settings.model, **(config_overrides or {})}.get("r_cut", ModelConfig.r_cut)
        datamodule = make_datamodule(data, settings.batch_size, settings.seed, r_cut)
        datamodule.setup("fit")
        config = make_model_config(prop, settings, data["train"], datamodule.graphs["train"],
                                   **(config_overrides or {}))
        net = models.MattenNet(config)
        # The loss is normalised by the blocks of the targets it compares the output with (those of the network's
        # output map: log-space for spd_log), also where the head works on their logarithm (equivariant_spd).
        block_scales = model_config.fit_output_normalisation(
            prop, models.encode_targets(config, for_parts(data["train"], config.parts).targets),
            n_parts=len(config.parts))[0] if properties.get(prop).is_tensor else None

        with contextlib.ExitStack() as stack:
            if resume_dir is None:
                resume_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-train-"))
            resume_dir = Path(resume_dir)
            timer = make_epoch_timer()
            early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=settings.early_stopping_patience)
            # last.ckpt after every epoch, written by rank 0 only. (save_last=True with save_top_k=0 would write it
            # only when training ends: Lightning saves "last" only in an epoch where a top-k checkpoint was saved.)
            last_checkpoint = ModelCheckpoint(dirpath=resume_dir, filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                                              save_top_k=1, enable_version_counter=False)
            max_epochs = settings.max_epochs if stop_after_epochs is None else min(settings.max_epochs,
                                                                                   stop_after_epochs)
            trainer = lightning.Trainer(
                max_epochs=max_epochs, accelerator=settings.accelerator, devices=settings.devices,
                num_nodes=settings.num_nodes, strategy=settings.strategy,
                deterministic=settings.deterministic, callbacks=[early_stopping, last_checkpoint, timer, *callbacks],
                logger=False, enable_model_summary=False,
                enable_progress_bar=settings.progress_bar if progress_bar is None else progress_bar,
                num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(resume_dir),
                use_distributed_sampler=False,  # the data module gives each process its share (loaders.py)
            )
            rank_zero = trainer.is_global_zero  # known from the launch environment before the processes meet
            key = run_key(config, settings, dataset)
            checkpoint, resumed_after = resumable_checkpoint(resume_dir, key, clear_other_runs=rank_zero) or \
                (None, None)
            if live_dir is not None:
                from dvclive.lightning import DVCLiveLogger

                if checkpoint is not None and rank_zero:
                    _drop_live_rows_after(Path(live_dir), resumed_after)
                # dvcyaml=None: dvclive must not write into the project's dvc.yaml; no experiment bookkeeping. It
                # logs from rank 0 only.
                trainer.loggers = [DVCLiveLogger(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None,
                                                 resume=checkpoint is not None)]
            if rank_zero:
                _write_run_file(resume_dir, key)
            module = make_module(net, settings, resumed_after, block_scales)
            setup_seconds = time.perf_counter() - started
            with warnings.catch_warnings():
                # The resume folder holds run.json beside the checkpoint by design.
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
                trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
            stopped = bool(early_stopping.stopped_epoch)
            complete = stopped or len(module.history) >= settings.max_epochs
            if complete and rank_zero:
                shutil.rmtree(resume_dir, ignore_errors=True)

        if module.best["state"] is None:
            raise ValueError("training ran no complete epoch: no validation loss to select weights by")
        net.load_state_dict(module.best["state"])
        net.to("cpu").eval()
        return FitResult(net=net, config=config, history=list(module.history), best_epoch=module.best["epoch"],
                         epochs_run=len(module.history), stopped_early=stopped, complete=complete,
                         resumed_after_epochs=resumed_after, epoch_seconds=list(timer.seconds),
                         setup_seconds=setup_seconds, global_rank=trainer.global_rank)


def resumable_checkpoint(resume_dir: Path, key: str, clear_other_runs: bool = True) -> tuple[str, int] | None:
    """(resume_dir/last.ckpt, the epochs it completed) if it belongs to the run `key` and reads, else None; with
    clear_other_runs (rank 0) the folder of another run, or of a checkpoint torn by a kill while it was written,
    is cleared (never continued). Other ranks only read: the folder is rank 0's."""
    last, run = resume_dir / LAST_CHECKPOINT, resume_dir / RUN_FILE
    if last.is_file() and run.is_file():
        try:
            if json.loads(run.read_text(encoding="utf-8")).get("run_key") == key:
                # The epochs completed: our history's (Lightning's "epoch" depends on when the file was written). Our
                # own file; loaded without pickle's code execution.
                return str(last), len(torch.load(last, map_location="cpu", weights_only=True)["zoo_history"])
        except (json.JSONDecodeError, pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError):
            pass  # unreadable: started again
    if clear_other_runs and resume_dir.exists():
        shutil.rmtree(resume_dir)  # another run's state: never continue it
    return None


def _drop_live_rows_after(live_dir: Path, epochs: int) -> None:
    """Remove the dvclive rows (plots/metrics/**.tsv) of the epochs after the first `epochs`: a process killed
    between logging an epoch and saving its checkpoint wrote them, and the resumed run logs that epoch again (a
    duplicated row). Rows are keyed by Lightning's step; epoch.tsv says which step ended which epoch."""
    metrics = live_dir / "plots" / "metrics"
    epoch_rows = metrics / "epoch.tsv"
    if not epoch_rows.is_file():
        return
    steps = [(int(step), int(float(epoch))) for step, epoch in
             (line.split("\t") for line in epoch_rows.read_text(encoding="utf-8").splitlines()[1:] if line)]
    last_kept = max((step for step, epoch in steps if epoch < epochs), default=-1)
    for table in sorted(metrics.rglob("*.tsv")):
        header, *rows = table.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [row for row in rows if int(row.split("\t", 1)[0]) <= last_kept]
        if len(kept) != len(rows):
            atomic_write_bytes(table, "".join([header, *kept]).encode("utf-8"))


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

    @property
    def global_rank(self) -> int:
        """This process's rank in a data-parallel run (0 for one process): only rank 0 writes the model."""
        return self.members[-1].global_rank


def fit_model(data: Mapping[str, SplitData], settings: TrainSettings, *,
              config_overrides: Mapping[str, Any] | None = None, resume_dir: str | os.PathLike | None = None,
              dataset: DatasetInfo | None = None, live_dir: str | os.PathLike | None = None,
              stop_after_epochs: int | None = None, callbacks: Sequence[Any] = (),
              pool: FitPool | None = None) -> ModelFit:
    """``fit`` once per ensemble member: member k with seed settings.seed + k (arguments as for ``fit``); with
    settings.separate_parts, that for each predicted part in turn (model parts one by one). The members train in
    `pool` (zoo.nn.training.parallel; None: one after another, in this process), side by side where it has several
    workers: the same networks either way.

    With a resume_dir, each member resumes in <resume_dir>/member-<k>/ (member-<part>-<k> for separate parts) and,
    once complete, leaves its weights and result there (written by rank 0), so an interrupted ensemble continues
    with the members it was training. dvclive: the first member logs to live_dir, the others to
    live_dir/<their folder name>. A model of one network trains in this process (with its progress bar).
    """
    if settings.ensemble_size == 1 and len(_part_groups(data, settings, config_overrides)) == 1:
        pool = None  # one network: here, where its progress bar can draw, rather than beside nothing in a worker
    with contextlib.ExitStack() as stack:
        return submit_model(data, settings, config_overrides=config_overrides, resume_dir=resume_dir,
                            dataset=dataset, live_dir=live_dir, stop_after_epochs=stop_after_epochs,
                            callbacks=callbacks, pool=pool or stack.enter_context(FitPool(1)))()


def submit_model(data: Mapping[str, SplitData], settings: TrainSettings, *, pool: FitPool,
                 config_overrides: Mapping[str, Any] | None = None, resume_dir: str | os.PathLike | None = None,
                 dataset: DatasetInfo | None = None, live_dir: str | os.PathLike | None = None,
                 stop_after_epochs: int | None = None, callbacks: Sequence[Any] = ()) -> Callable[[], ModelFit]:
    """``fit_model`` in two steps: its networks submitted to `pool` now, and a function that waits for them and
    returns the ModelFit (so that a caller can have other networks train meanwhile)."""
    groups = _part_groups(data, settings, config_overrides)
    if settings.ensemble_size == 1 and len(groups) == 1:
        single = submit_fit(pool, data, settings, config_overrides=config_overrides, resume_dir=resume_dir,
                            dataset=dataset, live_dir=live_dir, stop_after_epochs=stop_after_epochs,
                            callbacks=callbacks)

        def single_fit() -> ModelFit:
            result = single.result()
            return ModelFit([result], result.net if result.complete else None)

        return single_fit
    planned = []  # per member: (resume folder, settings, its earlier completed result or None, its submitted fit)
    for parts in groups:
        overrides = {**(config_overrides or {}), **({"parts": parts} if len(groups) > 1 else {})}
        for k in range(settings.ensemble_size):
            name = f"member-{k}" if len(groups) == 1 else f"member-{'-'.join(parts)}-{k}"
            member_settings = dataclasses.replace(settings, seed=settings.seed + k, ensemble_size=1,
                                                  separate_parts=False)
            folder = None if resume_dir is None else Path(resume_dir) / name
            result = None if folder is None else _completed_member(folder, member_settings, dataset)
            pending = None if result is not None else submit_fit(
                pool, data, member_settings, config_overrides=overrides,
                resume_dir=None if folder is None else folder / "run", dataset=dataset,
                live_dir=None if live_dir is None else Path(live_dir) / name if planned else live_dir,
                stop_after_epochs=stop_after_epochs, callbacks=callbacks)
            planned.append((folder, member_settings, result, pending))

    def ensemble_fit() -> ModelFit:
        members = []
        for folder, member_settings, result, pending in planned:
            if result is None:
                result = pending.result()
                if not result.complete:
                    return ModelFit(members + [result], None)
                if folder is not None and result.global_rank == 0:
                    _save_member(folder, result, member_settings, dataset)
            members.append(result)
        if resume_dir is not None and members[-1].global_rank == 0:
            shutil.rmtree(resume_dir, ignore_errors=True)
        return ModelFit(members, models.Ensemble(member.net for member in members))

    return ensemble_fit


def submit_fit(pool: FitPool, data: Mapping[str, SplitData], settings: TrainSettings,
               **fit_arguments: Any) -> PendingFit:
    """``fit(data, settings, **fit_arguments)`` submitted to `pool`: in a worker process where the pool has several
    and the fit can run in one, else in this process. Fits with Lightning callbacks (objects of this process) and
    data-parallel fits (their own processes) run in this process."""
    in_process = bool(fit_arguments.get("callbacks")) or settings.devices * settings.num_nodes > 1
    return pool.submit(lambda: fit(data, settings, **fit_arguments), _fit_in_worker,
                       (data, settings, fit_arguments), _received_fit, in_process=in_process)


def _fit_in_worker(data, settings, fit_arguments: dict[str, Any]) -> dict[str, Any]:
    """A worker's fit, as plain values (the network as its config and safetensors weights). Lightning's progress bar
    is off: several workers would draw over each other; the caller reports each finished fit."""
    from safetensors.torch import save

    result = fit(data, settings, progress_bar=False, **fit_arguments)
    state = {name: tensor.detach().contiguous() for name, tensor in result.net.state_dict().items()}
    return {"weights": save(state), "config": result.config.to_json(), "history": result.history,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "complete": result.complete, "resumed_after_epochs": result.resumed_after_epochs,
            "epoch_seconds": result.epoch_seconds, "setup_seconds": result.setup_seconds}


def _received_fit(sent: dict[str, Any]) -> FitResult:
    """The FitResult of a worker's fit (``_fit_in_worker``)."""
    from safetensors.torch import load

    config = ModelConfig.from_json(sent["config"])
    net = models.MattenNet(config)
    net.load_state_dict(load(sent["weights"]), strict=True)
    return FitResult(net=net.eval(), config=config, history=sent["history"], best_epoch=sent["best_epoch"],
                     epochs_run=sent["epochs_run"], stopped_early=sent["stopped_early"], complete=sent["complete"],
                     resumed_after_epochs=sent["resumed_after_epochs"], epoch_seconds=sent["epoch_seconds"],
                     setup_seconds=sent["setup_seconds"])


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
    config = ModelConfig.from_json(json.dumps(recorded["config"]))
    if recorded.get("run_key") != run_key(config, settings, dataset):
        return None  # another run's member: trained again
    net = models.MattenNet(config)
    net.load_state_dict(load(weights.read_bytes()), strict=True)  # our own file, safetensors: no pickle
    return FitResult(net=net.eval(), config=config, history=recorded["history"], best_epoch=recorded["best_epoch"],
                     epochs_run=recorded["epochs_run"], stopped_early=recorded["stopped_early"], complete=True,
                     resumed_after_epochs=recorded["epochs_run"], epoch_seconds=[], setup_seconds=0.0,
                     global_rank=_launch_rank())


def _launch_rank() -> int:
    """This process's rank as Lightning knows it without a trainer (from the launch environment: torchrun's RANK,
    SLURM_PROCID, Lightning's LOCAL_RANK; a trainer sets the exact value)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))

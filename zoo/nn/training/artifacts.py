"""The model folder the train stage writes (model.safetensors, config.json, training_log.json) and reads back."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from zoo import properties
from zoo.core.train_config import TrainSettings
from zoo.core.io import atomic_write_bytes, sha256_bytes, staged_folder, write_json
from zoo.nn import model_files, models
from zoo.nn.model_files import CONFIG_FILE, LOG_FILE, MODEL_FORMAT, WEIGHTS_FILE  # noqa: F401 (the package's names)
from zoo.nn.models import network  # noqa: F401 (zoo.nn.training.network: the network a config.json describes)
from zoo.nn.training.data import DatasetInfo, target_column, target_columns
from zoo.nn.training.loop import ModelFit
from zoo.nn.training.loss import LOSS_KINDS


# --------------------------------------------------------------------------------------------- checkpoints
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
    shared = {"max_epochs": settings.max_epochs, "n_records": dict(n_records), "loss": LOSS_KINDS[settings.loss]}
    if len(logs) == 1:
        return {**{k: v for k, v in logs[0].items() if k != "seed"}, **shared}
    return {"members": logs, **shared}


def save_model(folder: str | os.PathLike, net: models.MattenNet | models.Ensemble, *, settings: TrainSettings,
               dataset: DatasetInfo, log: Mapping[str, Any], profile: str | None = None,
               training_data: Mapping[str, Any] | None = None) -> Path:
    """Write model.safetensors, config.json and training_log.json into `folder`, replacing it only once complete.

    config.json (schema: zoo.nn.model_files): model_config is the network's (for an Ensemble, member 0's, whose
    members differ only in the seed, ``ensemble_seeds``; with groups of parts, Ensemble.config and
    ``ensemble_parts``, the parts of each member); training_data, the training split's
    applicability domain (``zoo.nn.training.data.split_domain``), when given."""
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
        "target_column": target_column(spec.name),
        "target_part": spec.target_part,
        **({"target_columns": [column for column, part in zip(target_columns(spec.name), spec.predicted_parts)
                               if part in net.config.parts],
            "parts": list(spec.output_parts(net.config.parts))} if spec.has_parts else {}),
        "model_config": json.loads(net.config.to_json()),
        **({"ensemble_seeds": net.seeds} if isinstance(net, models.Ensemble) else {}),
        **({"ensemble_parts": [list(parts) for parts in net.member_parts]}
           if isinstance(net, models.Ensemble) and len(net.groups) > 1 else {}),
        # separate_parts and loss_irrep_weights only where set: a config without them reads as their default
        # (TrainSettings.from_record), as the shipped releases trained before them record
        "training": {"profile": profile, **{key: value for key, value in settings.as_dict().items()
                                            if key not in ("separate_parts", "loss_irrep_weights") or value}},
        "dataset": dataclasses.asdict(dataset),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_bytes(weights)},
        **({"training_data": dict(training_data)} if training_data is not None else {}),
    }
    model_files.check_config(config, f"the config.json written for {folder}")  # what a load will accept
    with staged_folder(folder) as staging:
        atomic_write_bytes(staging / WEIGHTS_FILE, weights)
        write_json(staging / CONFIG_FILE, config)
        write_json(staging / LOG_FILE, dict(log))
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
    model_files.check_config(info, str(config_path))
    data = weights_path.read_bytes()
    if sha256_bytes(data) != info["weights"]["sha256"]:
        raise ValueError(f"{weights_path} does not match the sha256 in {config_path}: the folder is corrupt")
    net = network(info)
    net.load_state_dict(load(data), strict=True)
    return LoadedModel(net=net.eval(), info=info)

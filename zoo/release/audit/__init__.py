"""`zoo audit`: re-derive what a model card or a dataset version claims from the files, and say what differs.

A published model is only as trustworthy as the claims on its card: that these weights, trained on that dataset,
score those metrics. The audit re-derives each claim from the files and reports one row per check (what was
compared, expected, found, pass / FAIL / not checked); any FAIL fails the audit.

Model audit (`audit_model`), the version `zoo.load` would load (local store first on a version tie):
    files     every file of the version against the sha256 recorded where it was found: the local store's
              versions.json for a locally published version, the registry's release entry (zoo/registry.json) for
              a shipped or downloaded release; the weights against config.json; the card's weights_sha256,
              model_version and dataset against config.json
    card      every value printed in the card's tables against its machine-readable header (zoo.release.model_card)
    dataset   the dataset version the card names, from the local build ``<project>/data/hub/datasets/<name>``
              (rebuilt with ``dvc repro build@<property>`` when absent): its version and Parquet files against
              dataset_version.json; its content fingerprint recomputed from the Parquet files against the model
              card, dataset_version.json and the dataset card
    lineage   the DVC md5 of the dataset folder in the workspace against dvc.lock's (build stage output) and against
              the md5 in the card's lineage; the card's lineage (zoo.release.lineage: the DVC stage that trained the
              model, its dependencies' md5s and params) against that stage's dvc.lock entry (releases/dvc.lock for a
              release stage) when the entry is of this model: its output md5 against the files, then the
              dependencies (a release's lock may record a later rerun that reproduced the model on other code: not
              checked, the row says which differ)
    metrics   the checkpoint re-evaluated on the dataset's test split with the evaluate stage's code
              (zoo.nn.evaluation): every metric of the card, overall and per crystal system, compared as the card
              prints it (model_card.format_metric with the card's printed_format: 4 significant digits); the
              deterministic baselines (crystal_system_mean, composition_gbm with the recorded GBMSettings,
              piezo's zero_tensor) refitted and compared the same way. The non-equivariant baseline is a trained
              network: it is compared only with retrain.
    retrain   (retrain=True) zoo.nn.training.fit with the TrainSettings recorded in config.json, on the CPU when they
              say accelerator 'auto': same ModelConfig and bit-identical weights expected (same seed, deterministic
              kernels), reported as the largest absolute weight difference; the retrained model's metrics, and the
              retrained non-equivariant baseline's (with its recorded settings), within RETRAIN_RTOL of the card.
Metrics are recomputed only from verified inputs: when the weights or config fail their hashes or the dataset is
not the card's, the metric rows say "not checked" and name the cause, which fails the audit itself.

Dataset audit (`audit_dataset`): the local build (or, with a version, the local store's copy of that version):
every file against dataset_version.json (and the store's versions.json), the fingerprint recomputed against
dataset_version.json and the dataset card, and for the local build dvc.lock's md5 against the workspace.

Long steps report through `step`, a callable(text) returning a context manager (the CLI shows a rich spinner).

Parts: report (the rows), models (the version, its files, card and lineage), datasets, metrics.
"""

from zoo.release.audit.datasets import (
    UnknownDatasetError,
    audit_dataset,
    dvc_md5,
    local_build,
    lock_output_md5,
    recompute_fingerprint,
    run_dvc,
)
from zoo.release.audit.metrics import RETRAIN_RTOL
from zoo.release.audit.models import audit_model
from zoo.release.audit.report import FAIL, NOT_CHECKED, PASS, AuditError, Check, Report, abbreviate

__all__ = [
    "FAIL", "NOT_CHECKED", "PASS", "RETRAIN_RTOL", "AuditError", "Check", "Report", "UnknownDatasetError",
    "abbreviate", "audit_dataset", "audit_model", "dvc_md5", "local_build", "lock_output_md5",
    "recompute_fingerprint", "run_dvc",
]

"""The expectation suites: loaded from schemas/expectations/<property>.json, run in an ephemeral GX context,
with reproducible Data Docs."""

from __future__ import annotations

import contextlib
import copy
import datetime
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from zoo.core import environment  # noqa: E402

environment.apply()  # before GX is imported: it reads GX_ANALYTICS_ENABLED at import

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.render.renderer import ValidationResultsPageRenderer  # noqa: E402
from great_expectations.render.view import (  # noqa: E402
    DefaultJinjaIndexPageView,
    DefaultJinjaPageView,
)

from zoo import properties  # noqa: E402
from zoo.core.io import sha256_bytes, staged_folder  # noqa: E402
from zoo.data.cleaning import parquet_bytes  # noqa: E402
from zoo.data.validation import expectations  # noqa: E402
from zoo.data.validation.params import ValidationParams, reason_priority  # noqa: E402

# The custom expectation types the suites use: importing their module registers them with Great Expectations.
CUSTOM_EXPECTATIONS = (expectations.ExpectColumnValuesToBeSymmetricPositiveDefinite,
                       expectations.ExpectColumnValuesToBeZeroTensors)


# ---------------------------------------------------------------------------------------------------- the suites
def suite_path(prop: str) -> Path:
    return properties.get(prop).expectation_suite


def load_suite(prop: str) -> gx.ExpectationSuite:
    """The property's GX suite from schemas/expectations/<prop>.json; every expectation must carry a reason code."""
    path = suite_path(prop)
    with open(path, encoding="utf-8") as handle:
        as_dict = json.load(handle)
    suite = gx.ExpectationSuite(**as_dict)
    codes = reason_priority(properties.get(prop))
    for expectation in suite.expectations:
        code = (expectation.meta or {}).get("reason_code")
        if code not in codes:
            raise ValueError(f"{path}: expectation {type(expectation).__name__} on "
                             f"{getattr(expectation, 'column', '?')} has reason_code {code!r}, not one of "
                             f"{prop}'s codes (zoo.data.validation.reason_priority): {', '.join(codes)}")
    return suite


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result: its configuration (parameters resolved), success and counts, failing rows."""

    config: dict[str, Any]
    reason_code: str
    success: bool
    element_count: int
    missing_count: int
    unexpected_count: int
    unexpected_index: tuple[Any, ...]

    def stats(self) -> dict[str, Any]:
        return {"expectation": self.config, "reason_code": self.reason_code, "success": self.success,
                "element_count": self.element_count, "missing_count": self.missing_count,
                "unexpected_count": self.unexpected_count}


def run_suite(batch: pd.DataFrame, prop: str, params: ValidationParams,
              docs_dir: str | os.PathLike | None = None) -> list[ExpectationOutcome]:
    """Run the property's suite on `batch` (metric and value columns) in an ephemeral GX context.

    With `docs_dir`, GX's own Data Docs site for this run is built there (the directory is replaced).
    Raises ValueError if an expectation raised inside GX (a missing column, a bad parameter).
    """
    spec = properties.get(prop)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (context.data_sources.add_pandas(f"clean-{spec.name}")
                        .add_dataframe_asset(spec.name).add_batch_definition_whole_dataframe("all-records"))
    suite = context.suites.add(load_suite(spec.name))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate-{spec.name}", data=batch_definition, suite=suite))
    with _docs_site(context, docs_dir) as site:
        result = definition.run(batch_parameters={"dataframe": batch},
                                expectation_parameters=params.expectation_parameters(spec),
                                result_format={"result_format": "COMPLETE"}, run_id=docs_run_id(batch))
        if site is not None:
            context.build_data_docs(site_names=[site])
    outcomes = []
    for item in result.results:
        config = item.expectation_config.to_json_dict()
        config["kwargs"].pop("batch_id", None)
        config.pop("id", None)  # a fresh uuid per run
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise ValueError(f"validate {spec.name}: expectation {config['type']} on {config['kwargs'].get('column')} "
                             f"raised: {item.exception_info.get('exception_message')}")
        res = item.result
        if len(res.get("unexpected_index_list") or ()) != int(res.get("unexpected_count", 0)):
            raise ValueError(f"validate {spec.name}: GX listed {len(res.get('unexpected_index_list') or ())} failing "
                             f"rows of {res.get('unexpected_count')} for {config['type']} on "
                             f"{config['kwargs'].get('column')}: a record would escape its reason code")
        outcomes.append(ExpectationOutcome(
            config=config, reason_code=config["meta"]["reason_code"], success=bool(item.success),
            element_count=int(res.get("element_count", 0)), missing_count=int(res.get("missing_count", 0)),
            unexpected_count=int(res.get("unexpected_count", 0)),
            unexpected_index=tuple(res.get("unexpected_index_list") or ())))
    return outcomes


# ------------------------------------------------------------------------------------ reproducible Data Docs
# The Data Docs are a DVC output, and the same inputs must give the same bytes (zoo.release.determinism). GX stamps a page
# with the run's identifier (its time also names the folder validations/<suite>/<run_name>/<run_time>/), the
# batch's load time, the time of rendering (a query string on the logo's URL) and random element ids. So the run
# is identified by its data (``docs_run_id``), and the renderer and views below, which ``_docs_site`` configures
# the site with, leave out the times and number the ids.

# No time belongs to the inputs (the snapshot, the clean frame and the params carry none), so every run is dated
# the Unix epoch, the usual fixed date of reproducible builds; the run name, the sha256 of the validated batch,
# tells runs on different data apart.
DOCS_RUN_TIME = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def docs_run_id(batch: pd.DataFrame) -> RunIdentifier:
    """The GX run identifier of validating `batch`: a function of the batch alone."""
    return RunIdentifier(run_name=f"sha256-{sha256_bytes(frame_parquet_bytes(batch))[:16]}", run_time=DOCS_RUN_TIME)


class ReproducibleValidationResultsPageRenderer(ValidationResultsPageRenderer):
    """GX's validation page without the batch marker ``ge_load_time`` (the wall-clock time the batch was loaded);
    the marker that identifies the data, ``pandas_data_fingerprint``, stays."""

    def render(self, validation_results, suite_parameters=None):
        shown = copy.copy(validation_results)
        shown.meta = {**validation_results.meta, "batch_markers": {
            key: value for key, value in (validation_results.meta.get("batch_markers") or {}).items()
            if key != "ge_load_time"}}
        return super().render(shown, suite_parameters)


class _ReproducibleView:
    """Jinja filters of GX's page views, made free of times and random numbers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._element_ids = itertools.count()

    def add_data_context_id_to_url(self, url: str, add_datetime: bool = True) -> str:
        """The URL as it is: GX appends the time of rendering and the data context's id (a tracking query)."""
        return url

    def generate_html_element_uuid(self, prefix: str | None = None) -> str:
        """GX suffixes element ids with a uuid4; a count gives distinct suffixes without randomness."""
        return f"{prefix or ''}{next(self._element_ids)}"


class ReproduciblePageView(_ReproducibleView, DefaultJinjaPageView):
    """The expectation suite and validation pages."""


class ReproducibleIndexPageView(_ReproducibleView, DefaultJinjaIndexPageView):
    """The index page."""


def _ours(class_name: str) -> dict[str, str]:
    return {"module_name": __name__, "class_name": class_name}


@contextlib.contextmanager
def _docs_site(context, docs_dir: str | os.PathLike | None):
    """A GX Data Docs site building into a fresh temporary sibling of docs_dir, moved onto docs_dir on success."""
    if docs_dir is None:
        yield None
        return
    with staged_folder(Path(docs_dir).resolve()) as staging:  # GX wants an absolute base_directory
        context.add_data_docs_site("zoo", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staging)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": _ours("ReproducibleIndexPageView")},
            # merged by GX into its default sections (expectations, validations, profiling)
            "site_section_builders": {
                "expectations": {"view": _ours("ReproduciblePageView")},
                "validations": {"renderer": _ours("ReproducibleValidationResultsPageRenderer"),
                                "view": _ours("ReproduciblePageView")},
            },
        })
        yield "zoo"


def frame_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet with the clean stage's fixed writer settings (same frame -> same bytes)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "reasons" in table.column_names:  # typed even when empty (an empty object column would be Arrow null)
        position = table.column_names.index("reasons")
        table = table.set_column(position, "reasons", pa.array(frame["reasons"].tolist(), type=pa.list_(pa.string())))
        table = table.set_column(table.column_names.index("primary_reason"), "primary_reason",
                                 pa.array(frame["primary_reason"].tolist(), type=pa.string()))
    return parquet_bytes(table)

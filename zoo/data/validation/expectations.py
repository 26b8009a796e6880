"""Great Expectations custom expectations of the suites (symmetric positive definite, zero tensor, one polarity per
tetrahedral compound), with the Data Docs sentence of each."""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import pandas as pd

from zoo.core import environment  # noqa: E402

environment.apply()  # before GX is imported: it reads GX_ANALYTICS_ENABLED at import

from great_expectations.core.suite_parameters import SuiteParameterDict  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import (  # noqa: E402
    ColumnMapExpectation,
    MulticolumnMapExpectation,
)
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    ColumnMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_condition_partial,
    multicolumn_condition_partial,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent  # noqa: E402
from great_expectations.render.renderer.renderer import renderer  # noqa: E402
from great_expectations.render.renderer_configuration import (  # noqa: E402
    RendererConfiguration,
    RendererValueType,
)

from zoo.core.polarity import consistent_signs  # noqa: E402
from zoo.properties.spec import as_float_array, relative_asymmetry  # noqa: E402


# ----------------------------------------------------------------------------------------- custom expectations
def is_symmetric_positive_definite(value: Any, symmetry_rtol: float) -> bool:
    """Symmetric within symmetry_rtol (relative) and every eigenvalue of the symmetric part > 0."""
    matrix = as_float_array(value)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.isfinite(matrix).all():
        return False
    if relative_asymmetry(matrix) > symmetry_rtol:
        return False
    return bool(np.linalg.eigvalsh(0.5 * (matrix + matrix.T))[0] > 0.0)


def is_zero_tensor(value: Any, atol: float) -> bool:
    """Every component at most atol in absolute value (the same test on a Voigt form without factors)."""
    matrix = as_float_array(value)
    return bool(np.isfinite(matrix).all() and (matrix.size == 0 or np.abs(matrix).max() <= atol))


class ColumnValuesSymmetricPositiveDefinite(ColumnMapMetricProvider):
    """Per row: the value is a square matrix, symmetric within ``symmetry_rtol`` and positive definite."""

    condition_metric_name = "column_values.symmetric_positive_definite"
    condition_value_keys = ("symmetry_rtol",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, symmetry_rtol: float, **kwargs) -> pd.Series:
        return column.map(lambda value: is_symmetric_positive_definite(value, symmetry_rtol))


class _TemplatedRendering:
    """Mixin for our expectations: the Data Docs sentence comes from ``_prescriptive_template`` alone.

    GX's Data Docs pages use the legacy prescriptive renderer, whose default prints the raw kwargs; this one
    renders the same sentence as the atomic renderer (row condition included, as "If ..., then ...").
    """

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None, **kwargs):
        renderer_configuration = cls._prescriptive_template(RendererConfiguration(
            configuration=configuration, result=result, runtime_configuration=runtime_configuration))
        params = {name: param["value"] for name, param in renderer_configuration.params.dict().items() if param}
        return [RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": renderer_configuration.template_str, "params": params},
        )]


class _TemplatedColumnMapExpectation(_TemplatedRendering, ColumnMapExpectation):
    """A column-map expectation rendered by ``_TemplatedRendering``."""


class ExpectColumnValuesToBeSymmetricPositiveDefinite(_TemplatedColumnMapExpectation):
    """Expect each value to be a symmetric positive definite matrix (e.g. a Born-stable 6x6 Voigt stiffness).

    Symmetric: max |a - a^T| <= symmetry_rtol * max |a|. Positive definite: the smallest eigenvalue of
    (a + a^T)/2 is > 0.
    """

    map_metric = "column_values.symmetric_positive_definite"
    success_keys = ("mostly", "symmetry_rtol")
    symmetry_rtol: Union[float, SuiteParameterDict]

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """How Data Docs state the expectation."""
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="symmetry_rtol", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = (
            "$column values must be symmetric matrices (max |a - a^T| at most $symmetry_rtol of max |a|) "
            "that are positive definite."
        )
        return renderer_configuration


class ColumnValuesZeroTensor(ColumnMapMetricProvider):
    """Per row: every component of the value is at most ``atol`` in absolute value."""

    condition_metric_name = "column_values.zero_tensor"
    condition_value_keys = ("atol",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, atol: float, **kwargs) -> pd.Series:
        return column.map(lambda value: is_zero_tensor(value, atol))


class ExpectColumnValuesToBeZeroTensors(_TemplatedColumnMapExpectation):
    """Expect each value to be a zero tensor (every component at most atol in absolute value).

    With a row condition on ``is_centrosymmetric``: Neumann's principle makes every odd-rank polar tensor (the
    piezoelectric e_ijk) vanish in a crystal whose point group holds the inversion.
    """

    map_metric = "column_values.zero_tensor"
    success_keys = ("mostly", "atol")
    atol: Union[float, SuiteParameterDict]

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """How Data Docs state the expectation."""
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="atol", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = "$column values must be zero tensors (every component at most $atol)."
        return renderer_configuration


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


class MulticolumnValuesPolarityConsistent(MulticolumnMapMetricProvider):
    """Per row of (compound, e_long): whether e_long has its compound's sign (polarity.consistent_signs)."""

    condition_metric_name = "multicolumn_values.polarity_consistent"
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser",
                             "ignore_row_if")
    condition_value_keys = ("min_abs",)

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, min_abs: float, **kwargs) -> pd.Series:
        compound, value = column_list.columns
        values = [None if _missing(v) else float(v) for v in column_list[value]]
        compounds = [None if _missing(c) else str(c) for c in column_list[compound]]
        return pd.Series(consistent_signs(compounds, values, min_abs), index=column_list.index)


class ExpectTetrahedralPolarityToBeConsistent(_TemplatedRendering, MulticolumnMapExpectation):
    """Expect the bond-longitudinal piezo coefficient of tetrahedral binaries (column_list: compound, e_long) to
    have one sign per compound, across records and polymorphs (wurtzite, zinc blende): zoo.core.polarity.

    A record whose sign is not the strict majority sign of its compound fails (with a tie, every signed record of
    the compound fails); |e_long| <= min_abs has no sign. Rows without a compound are not tetrahedral binaries.
    """

    map_metric = "multicolumn_values.polarity_consistent"
    success_keys = ("mostly", "min_abs")
    args_keys = ("column_list", "min_abs")
    min_abs: Union[float, SuiteParameterDict]

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """How Data Docs state the expectation."""
        renderer_configuration.add_param(name="min_abs", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = (
            "Tetrahedral binaries must have one sign of the longitudinal piezo coefficient along the cation->anion "
            "bond per compound (|e_long| at most $min_abs has no sign)."
        )
        return renderer_configuration

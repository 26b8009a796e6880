"""The validate stage's codes and thresholds: reason codes in priority order, the value columns, ValidationParams."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


from zoo.core import symmetry, tensors
from zoo.core.config import (
    SymmetryConfig,
    ValidateConfig,
    check_non_negative,
    check_positive,
    is_real,
    load_section,
)
from zoo.data.cleaning import ISSUE_CODES
from zoo.properties.spec import PropertySpec


# The clean stage's issue codes (a record with one is quarantined with it), then validate's own codes: one fixed
# priority order, data integrity first, then the structure, then physics. ``primary_reason`` is the first code
# of a record in this order.
CLEAN_ISSUE_CODES: tuple[str, ...] = ISSUE_CODES
VALIDATE_CODES: tuple[str, ...] = (
    "nan_value", "dos_not_finite", "dos_empty", "dos_wrong_grid",
    "structure_nonpositive_volume", "structure_overlapping_atoms", "symmetry_undetermined",
    "elastic_asymmetric", "elastic_not_positive_definite", "modulus_out_of_range",
    "dielectric_asymmetric", "dielectric_eigenvalue_below_one", "dielectric_ionic_not_psd",
    "piezo_nonzero_centrosymmetric", "neumann_violation", "dos_negative",
)
REASON_PRIORITY: tuple[str, ...] = CLEAN_ISSUE_CODES + VALIDATE_CODES


@dataclass(frozen=True)
class ValueColumn:
    """A clean-format column holding (part of) a record's value.

    name   column name in the clean frame
    shape  shape of one stored value (Voigt for elastic and piezo, Cartesian for dielectric)
    """

    name: str
    shape: tuple[int, ...]


def value_columns(spec: PropertySpec) -> tuple[ValueColumn, ...]:
    """The columns of the clean frame that hold a property's values (the spec's stored columns)."""
    return tuple(ValueColumn(name, spec.stored_shape) for name in spec.stored_columns)


# ------------------------------------------------------------------------------------------------------ params
@dataclass(frozen=True)
class ValidationParams:
    """Thresholds of the physics checks: params.yaml's ``symmetry`` and ``validate`` sections (zoo.core.config).

    symprec, angle_tolerance    spglib tolerances of the point group the Neumann residual is measured against
    neumann_tolerance           max relative Neumann residual of an accepted tensor record
    min_interatomic_distance_a  shortest allowed distance between two sites (periodic images included), A
    k_vrh_range_gpa             [min, max] of the Hill bulk modulus, GPa (checked for SPD stiffness only)
    g_vrh_range_gpa             [min, max] of the Hill shear modulus, GPa
    dielectric_eigenvalue_atol  slack on eps >= 1 (electronic, total) and on ionic >= 0, for rounding: the snapshot
                                prints 8 decimals and ionic = total - electronic carries both roundings (after
                                clean, the snapshot's smallest ionic eigenvalue is 0.0, electronic 1.63)
    piezo_zero_atol_c_m2        a piezo tensor with every component at most this in absolute value is zero (C/m^2)
    workers                     processes computing the metrics (1: in this process); does not change results
    """

    symprec: float
    angle_tolerance: float
    neumann_tolerance: float
    min_interatomic_distance_a: float
    k_vrh_range_gpa: tuple[float, float]
    g_vrh_range_gpa: tuple[float, float]
    dielectric_eigenvalue_atol: float
    piezo_zero_atol_c_m2: float
    workers: int

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"validate.workers must be a positive integer, got {self.workers!r}")
        for name in ("neumann_tolerance", "min_interatomic_distance_a", "dielectric_eigenvalue_atol",
                     "piezo_zero_atol_c_m2"):
            check_non_negative(getattr(self, name), f"validate.{name}")
        for name in ("symprec", "angle_tolerance"):
            check_positive(getattr(self, name), f"symmetry.{name}")
        for name in ("k_vrh_range_gpa", "g_vrh_range_gpa"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(is_real(v) for v in value) or not value[0] < value[1]):
                raise ValueError(f"validate.{name} must be [min, max] with min < max (GPa), got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))

    @classmethod
    def from_config(cls, symmetry_settings: SymmetryConfig, validate: ValidateConfig) -> ValidationParams:
        return cls(**asdict(symmetry_settings), **asdict(validate))

    @classmethod
    def from_params(cls, path: str | os.PathLike | None = None) -> ValidationParams:
        """From a params file (default: the checkout's params.yaml)."""
        return cls.from_config(load_section("symmetry", path), load_section("validate", path))

    def analyze(self, structure) -> symmetry.SymmetryInfo:
        """The structure's symmetry with these tolerances."""
        return symmetry.analyze(structure, symprec=self.symprec, angle_tolerance=self.angle_tolerance)

    def expectation_parameters(self) -> dict[str, float]:
        """The values of the ``$PARAMETER`` references in the suites."""
        return {
            "symmetry_rtol": tensors.SYMMETRY_RTOL,
            "neumann_tolerance": self.neumann_tolerance,
            "min_interatomic_distance_a": self.min_interatomic_distance_a,
            "k_vrh_min_gpa": self.k_vrh_range_gpa[0],
            "k_vrh_max_gpa": self.k_vrh_range_gpa[1],
            "g_vrh_min_gpa": self.g_vrh_range_gpa[0],
            "g_vrh_max_gpa": self.g_vrh_range_gpa[1],
            "eps_min_eigenvalue": 1.0 - self.dielectric_eigenvalue_atol,
            "ionic_min_eigenvalue": -self.dielectric_eigenvalue_atol,
            "piezo_zero_atol_c_m2": self.piezo_zero_atol_c_m2,
        }

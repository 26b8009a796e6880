"""ModelConfig: the JSON-serialisable settings of a MatTen-style network (zoo.nn.models), its checks, the sizes of
the default and the MatTen models, and the output normalisation fitted from training targets."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from zoo import properties
from zoo.core import tensors
from zoo.core.schema_checks import check_positive
from zoo.nn import e3nn_import, species
from zoo.nn.model_files import CONFIG_FORMAT, HEADS, OUTPUT_MAPS

with e3nn_import.lean():  # without torch._dynamo and sympy, which no network here needs (see there)
    from e3nn import o3

MATTEN_HIDDEN_IRREPS = "32x0o+32x0e+16x1o+16x1e+4x2o+4x2e+2x3o+2x3e+2x4e"  # REFERENCE.md
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Fields added to ModelConfig after CONFIG_FORMAT 1 was first written, with the value that reproduces older models
# (parts: the property's target part alone, see ``from_json``).
_ADDED_FIELDS = {"species_embedding": "learned", "output_map": "linear"}
# The small CPU model. Hidden atom features carry l <= 2 in both parities (odd-parity features are what let piezo's
# 2o and pseudo-scalar paths appear); higher degrees are produced only by the last layer, for the head (elastic's
# 4e, piezo's 3o), from spherical harmonics up to the output's degree. Measured on the 2-core machine (elastic,
# snapshot structures, 1 thread): hidden l <= 4 instead of l <= 2 makes training 2x slower with 2 layers (58 vs
# 115 structures/s) and 2.8x with 3 (13 vs 37).
DEFAULT_HIDDEN_IRREPS = "16x0o+16x0e+8x1o+8x1e+4x2o+4x2e"
DEFAULT_READOUT_MULTIPLICITY = 16
_MIN_L_MAX = 2  # even the invariant DOS needs directional (l > 0) information from its neighbours


def head_irreps(property_name: str, head: str = "equivariant") -> o3.Irreps:
    """The distinct irreps a head reads from the pooled features: the property's own for the equivariant head;
    scalars (0e) only for the invariant_voigt baseline."""
    spec = properties.get(property_name)
    if head == "invariant_voigt":
        return o3.Irreps("0e")
    # equivariant_spd reads the same irreps: the logarithm has the stiffness's symmetry
    return o3.Irreps([(1, ir) for ir in sorted({ir for _, ir in o3.Irreps(spec.irreps)})])


# -------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; saved as JSON beside its weights.

    property            'elastic' | 'dielectric' | 'piezo' | 'phonon' (zoo.properties)
    head                'equivariant' (default), 'invariant_voigt' (non-equivariant baseline, tensors only) or
                        'equivariant_spd' (elastic: positive definite output, expm of an equivariant logarithm)
    r_cut               neighbour cutoff, A (the graphs must be built with the same value)
    n_radial            number of Bessel radial basis functions
    cutoff_power        p of the polynomial cutoff envelope (NequIP's p = 6: smooth to second derivative)
    hidden_irreps       irreps of the atom features between interaction layers
    readout_irreps      irreps the last interaction layer produces, pooled and read by the head: only irreps the
                        head reads (``head_irreps``); None -> DEFAULT_READOUT_MULTIPLICITY x each of them
    l_max               highest spherical-harmonic degree of the edge directions; None -> the larger of 2 and the
                        output's highest degree (elastic 4, piezo 3)
    n_layers            number of interaction layers
    species_dim         width of the species embedding (scalars)
    species_embedding   'learned', 'descriptors' or 'descriptors+learned' (zoo.nn.species)
    radial_hidden       hidden layer widths of the radial MLP that gives each edge its tensor-product weights
    avg_num_neighbors   divides the summed messages; set it from the training graphs (zoo.nn.graphs.average_neighbors)
    invariant_hidden    hidden width of the invariant_voigt head's MLP
    output_scale        one factor per irrep instance of the property's irreps (5 for elastic 2x0e+2x2e+1x4e) that
                        multiplies the head's output, so the network itself works with unit-size numbers;
                        None -> all 1. See ``fit_output_normalisation`` (for equivariant_spd: of the logarithm)
    output_shift        one offset per 0e instance, added after the scale; None -> all 0
    dtype               'float32' (default, fast) or 'float64'
    seed                seeds the weight initialisation (the global RNG is left untouched)
    parts               the tensor parts predicted, in this order (PropertySpec.tensor_parts); None -> the property's
                        predicted_parts (dielectric: electronic and ionic; total is their sum)
    output_map          'linear' or 'spd_log' (module docstring; spd_log needs the parts' eigenvalue floors)
    """

    property: str
    head: str = "equivariant"
    r_cut: float = 5.0
    n_radial: int = 8
    cutoff_power: int = 6
    hidden_irreps: str = DEFAULT_HIDDEN_IRREPS
    readout_irreps: str | None = None
    l_max: int | None = None
    n_layers: int = 2
    species_dim: int = 16
    species_embedding: str = "learned"
    radial_hidden: tuple[int, ...] = (32,)
    avg_num_neighbors: float = 34.0  # elastic snapshot at r_cut 5 A: 33.6
    invariant_hidden: int = 32
    output_scale: tuple[float, ...] | None = None
    output_shift: tuple[float, ...] | None = None
    dtype: str = "float32"
    seed: int = 0
    parts: tuple[str, ...] | None = None
    output_map: str = "linear"

    def __post_init__(self):
        # Longer than ~60 lines: one check per ModelConfig field, each with its own message.
        spec = properties.get(self.property)  # ValueError naming the known properties
        set_field = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head == "invariant_voigt" and not spec.is_tensor:
            raise ValueError(f"head 'invariant_voigt' needs a tensor property; {self.property!r} is invariant")
        if self.head == "equivariant_spd" and spec.voigt_kind != "stiffness":
            raise ValueError(f"head 'equivariant_spd' needs a stiffness (elastic); {self.property!r} is not")
        if self.species_embedding not in species.SPECIES_EMBEDDINGS:
            raise ValueError(f"species_embedding must be one of {species.SPECIES_EMBEDDINGS}, "
                             f"got {self.species_embedding!r}")
        set_field("r_cut", check_positive(self.r_cut, "r_cut", convert=True))
        set_field("avg_num_neighbors", check_positive(self.avg_num_neighbors, "avg_num_neighbors", convert=True))
        for name in ("n_radial", "cutoff_power", "n_layers", "species_dim", "invariant_hidden"):
            set_field(name, _positive_int(getattr(self, name), name))
        set_field("seed", _nonnegative_int(self.seed, "seed"))
        try:
            widths = tuple(self.radial_hidden)
        except TypeError:
            raise ValueError(f"radial_hidden must be a list of positive integers, got {self.radial_hidden!r}") from None
        set_field("radial_hidden", tuple(_positive_int(width, "radial_hidden[...]") for width in widths))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")

        self._check_parts(spec, set_field)
        hidden = _irreps_field(self.hidden_irreps, "hidden_irreps")
        if "0e" not in hidden:
            raise ValueError(f"hidden_irreps must contain scalars (0e) to gate the other features, got {hidden}")
        set_field("hidden_irreps", str(hidden))
        output = o3.Irreps(spec.irreps)
        l_max = max(_MIN_L_MAX, output.lmax) if self.l_max is None else self.l_max
        set_field("l_max", _nonnegative_int(l_max, "l_max"))
        reads = head_irreps(self.property, self.head)
        if self.readout_irreps is None:
            readout = o3.Irreps([(DEFAULT_READOUT_MULTIPLICITY, ir) for _, ir in reads])
        else:
            readout = _irreps_field(self.readout_irreps, "readout_irreps")
        missing = [str(ir) for _, ir in reads if ir not in readout]
        unread = [str(ir) for _, ir in readout if ir not in reads]
        if missing or unread:
            raise ValueError(f"readout_irreps must hold exactly the irreps the {self.head} head of {self.property} "
                             f"reads ({reads}): {readout} lacks {missing} and has unread {unread}")
        set_field("readout_irreps", str(readout))
        # The last layer can only produce irreps in (its input) x (spherical harmonics up to l_max).
        last_input = hidden if self.n_layers > 1 else o3.Irreps(f"{self.species_dim}x0e")
        reachable = {ir_out for _, ir_in in last_input for _, ir_sh in o3.Irreps.spherical_harmonics(l_max)
                     for ir_out in ir_in * ir_sh}
        unreachable = [str(ir) for _, ir in readout if ir not in reachable]
        if unreachable:
            raise ValueError(f"readout irreps {unreachable} cannot come out of a layer whose input is {last_input} "
                             f"with l_max {l_max}: raise l_max, add odd-parity hidden_irreps or use n_layers >= 2")

        output = output_irreps(self)
        n_instances = output.num_irreps
        n_scalars = sum(mul for mul, ir in output if ir == o3.Irrep("0e"))
        for name, length in (("output_scale", n_instances), ("output_shift", n_scalars)):
            value = getattr(self, name)
            if value is None:
                continue
            if not spec.is_tensor:
                raise ValueError(f"{name} applies to tensor properties only; {self.property!r} is a "
                                 "non-negative DOS that the softplus head keeps on its own scale")
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be {length} numbers for {output}, got {value!r}") from None
            if len(value) != length or not all(math.isfinite(v) for v in value):
                raise ValueError(f"{name} must be {length} finite numbers for {output}, got {value!r}")
            if name == "output_scale" and min(value) <= 0:
                raise ValueError(f"output_scale must be positive, got {value!r}")
            set_field(name, value)

    def _check_parts(self, spec, set_field) -> None:
        parts = spec.predicted_parts if self.parts is None else self.parts
        if isinstance(parts, str) or not all(isinstance(part, str) for part in parts):
            raise ValueError(f"parts must be a list of part names, got {self.parts!r}")
        parts = tuple(parts)
        unknown = [part for part in parts if part not in spec.tensor_parts]
        if not parts or unknown or len(set(parts)) != len(parts):
            raise ValueError(f"parts must be distinct parts of {spec.name} {spec.tensor_parts}, got {self.parts!r}")
        if spec.summed_part is not None and spec.summed_part[0] in parts:
            raise ValueError(f"parts must not include {spec.summed_part[0]!r}: it is the sum of "
                             f"{' + '.join(spec.summed_part[1])}, derived from them")
        set_field("parts", parts)
        if self.output_map not in OUTPUT_MAPS:
            raise ValueError(f"output_map must be one of {OUTPUT_MAPS}, got {self.output_map!r}")
        if self.output_map == "spd_log":
            if spec.formula != "ij=ji":
                raise ValueError(f"output_map 'spd_log' needs a symmetric rank-2 tensor; {spec.name} is not one")
            for part in parts:
                spec.eigenvalue_floor(part)  # ValueError when the property states none

    # ---------------------------------------------------------------------------------------------- JSON
    def to_json(self) -> str:
        """Deterministic JSON (sorted keys) with the config format version. parts and output_map are left out where
        they hold the value a config without them is read as (``from_json``): a model of the target part alone with
        the linear map writes the config it wrote before these fields existed, so a shipped release (piezo and
        phonon 1.1.0) retrained on this code reproduces its config.json byte for byte."""
        data = dataclasses.asdict(self)
        if data["parts"] == (properties.get(self.property).target_part,):
            del data["parts"]
        if data["output_map"] == _ADDED_FIELDS["output_map"]:
            del data["output_map"]
        return json.dumps({"format": CONFIG_FORMAT, **data}, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of ``to_json``; refuses another format version and unknown or missing fields."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"text is not a JSON model config: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"text must hold a JSON object, got {type(data).__name__}")
        found = data.pop("format", None)
        if found != CONFIG_FORMAT:
            raise ValueError(f"text has config format {found!r}; this code reads {CONFIG_FORMAT!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        # Configs written before parts existed (releases 1.0.0) predicted the property's target part alone.
        if "property" in data and "parts" not in data:
            data["parts"] = [properties.get(data["property"]).target_part]
        data = {**{name: value for name, value in _ADDED_FIELDS.items() if name not in data}, **data}
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise ValueError(f"text does not match ModelConfig: unknown fields {unknown}, missing fields {missing}")
        for name in ("radial_hidden", "output_scale", "output_shift", "parts"):
            if isinstance(data[name], list):
                data[name] = tuple(data[name])
        return cls(**data)

    @classmethod
    def matten_reference(cls, property_name: str, **overrides) -> ModelConfig:
        """MatTen's published training configuration (REFERENCE.md) for a property."""
        settings = dict(
            property=property_name, r_cut=5.0, n_radial=8, n_layers=3, species_dim=16, radial_hidden=(32, 32),
            hidden_irreps=MATTEN_HIDDEN_IRREPS, l_max=4,
        )
        # MatTen's head selects the output's irreps from the last layer's pooled features; the rest of that layer
        # is never read, so ours computes only those irreps, with the multiplicities MatTen's hidden irreps give.
        hidden = o3.Irreps(MATTEN_HIDDEN_IRREPS)
        reads = head_irreps(property_name, overrides.get("head", "equivariant"))
        settings["readout_irreps"] = str(o3.Irreps([(mul, ir) for mul, ir in hidden if ir in reads]))
        settings.update(overrides)
        return cls(**settings)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _irreps_field(value, name: str) -> o3.Irreps:
    try:
        irreps = o3.Irreps(value).sort().irreps.simplify()
    except (ValueError, AssertionError, TypeError) as exc:
        raise ValueError(f"{name} must be an e3nn irreps string such as '16x0e+8x1o', got {value!r}: {exc}") from None
    if irreps.dim == 0:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return irreps


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def output_irreps(config: ModelConfig) -> o3.Irreps:
    """The irreps the network outputs: the property's irreps once per predicted part (the DOS: 51x0e)."""
    irreps = properties.get(config.property).irreps
    return o3.Irreps("+".join([irreps] * len(config.parts)))


@functools.cache
def mandel_maps(formula: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with mandel.flatten() = irreps @ A and irreps = mandel.flatten() @ B for symmetric Mandel matrices of a
    stiffness (zoo.core.tensors conventions): the linear maps the equivariant_spd head applies around expm."""
    dim = tensors.change_of_basis(formula).shape[0]
    to_mandel = lambda x: tensors.stiffness_voigt_to_mandel(  # noqa: E731
        tensors.cartesian_to_voigt(tensors.irreps_to_cartesian(x, formula), "stiffness"))
    forward = to_mandel(np.eye(dim)).reshape(dim, 36)
    flat = np.eye(36).reshape(36, 6, 6)
    backward = tensors.voigt_to_irreps(tensors.mandel_to_stiffness_voigt((flat + np.swapaxes(flat, 1, 2)) / 2),
                                       "stiffness", formula)
    return forward, backward


def log_stiffness_irreps(targets, formula: str) -> np.ndarray:
    """Irreps of logm of each (positive definite) stiffness's Mandel matrix: what an equivariant_spd head predicts."""
    forward, backward = mandel_maps(formula)
    mandel = (np.asarray(targets, dtype=np.float64) @ forward).reshape(-1, 6, 6)
    eigenvalues, vectors = np.linalg.eigh(mandel)
    if (eigenvalues <= 0).any():
        raise ValueError("targets must be positive definite stiffness tensors to take their logarithm")
    logarithm = np.einsum("nij,nj,nkj->nik", vectors, np.log(eigenvalues), vectors)
    return logarithm.reshape(-1, 36) @ backward


def fit_output_normalisation(property_name: str, targets, head: str = "equivariant", n_parts: int = 1,
                             ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(output_scale, output_shift) for ModelConfig from training targets in the network's output form (irreps of
    each of `n_parts` parts, concatenated; log-space for output_map spd_log), shape (n, n_parts * dim).

    shift: the mean of each 0e component (a rotation-invariant offset). scale: per irrep instance, the RMS of
    its components after the shift, so each block reaches the network with unit size. Both are invariants of
    the data set, so the normalised model stays equivariant. For the equivariant_spd head they are those of the
    targets' logarithms (``log_stiffness_irreps``), what that head's linear layer produces.
    """
    spec = properties.get(property_name)
    if head == "equivariant_spd":
        targets = log_stiffness_irreps(targets, spec.formula)
    if not spec.is_tensor:
        raise ValueError(f"property_name {property_name!r}: output normalisation applies to tensor properties only")
    irreps = o3.Irreps("+".join([spec.irreps] * n_parts))
    values = np.asarray(targets, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != irreps.dim or len(values) == 0:
        raise ValueError(f"targets must have shape (n >= 1, {irreps.dim}) for {irreps}, got {values.shape}")
    scale, shift, start = [], [], 0
    for mul, ir in irreps:
        for _ in range(mul):
            block = values[:, start : start + ir.dim]
            if ir == o3.Irrep("0e"):
                shift.append(float(block.mean()))
                block = block - shift[-1]
            rms = float(np.sqrt(np.mean(block**2)))
            scale.append(rms if rms > 0 else 1.0)  # an all-zero block (e.g. one irrep never present) keeps 1
            start += ir.dim
    return tuple(scale), tuple(shift)



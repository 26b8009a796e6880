"""MatTen-style equivariant networks (e3nn) for the four properties, configured by one JSON-serialisable dataclass.

Architecture (Wen et al. 2024, after Tensor Field Networks / NequIP), irreps declared at each module's edges:

    species embedding (Z -> species_dim x 0e; learned per element, or from physical descriptors: zoo.nn.species)
    edge geometry: Bessel radial basis x smooth polynomial cutoff, spherical harmonics Y_0..Y_l_max of the edge
                   direction ("component" normalisation, unit vectors)
    n_layers x Interaction:
        h -> Linear -> uvu tensor product with Y (per-edge path weights from an MLP on the radial basis)
          -> sum over each atom's incoming edges / avg_num_neighbors -> Linear
          + self-interaction Linear(h) -> Gate (SiLU / tanh on scalars, sigmoid gates on l > 0) -> + h (residual)
    mean pooling over atoms -> head:
        "equivariant":     o3.Linear onto the property's irreps (PropertySpec.irreps) -> x scale + shift
        "invariant_voigt": the pooled 0e scalars -> MLP -> independent Voigt components (a non-equivariant
                           baseline: it cannot rotate with the input) -> irreps -> x scale + shift
        "equivariant_spd": (elastic) as "equivariant", read as the matrix logarithm S of the stiffness in Mandel
                           form (GPa units inside the log); the output is C = expm(S), positive definite for any
                           input. A rotation acts on Mandel matrices as S -> Q S Q^T with Q orthogonal, and
                           expm(Q S Q^T) = Q expm(S) Q^T, so the output stays equivariant
        phonon:            o3.Linear onto 51x0e -> softplus (non-negative DOS; why not ReLU: see ``forward``)
    A property with several parts (dielectric) gets one block of its irreps per predicted part (ModelConfig.parts).

Output maps (ModelConfig.output_map, tensors):
    "linear"   the head's irreps are the tensor's (the default).
    "spd_log"  the head's irreps, per part, are those of A = log(T - floor I), the matrix logarithm of the part's
               excess over its eigenvalue floor (PropertySpec.eigenvalue_floors: eps >= 1 electronic, ionic >= 0);
               the tensor is T = floor I + exp(A) (zoo.core.tensors.symmetric_exp), so every prediction satisfies
               the bound by construction, equivariantly (exp(R A R^T) = R exp(A) R^T). Training compares A with
               the log of the targets (``encode_targets``): a squared error in log-eigenvalue space, in which the
               heavy tail (eps up to 257) weighs like relative errors instead of dominating.

Outputs are irreps vectors in the e3nn CartesianTensor basis of ``zoo.core.tensors``; ``predict_cartesian`` maps them to
Cartesian tensors with its cached change of basis. Differences from MatTen: no equivariant batch norm (outputs
then depend on the other structures in a batch; the 1/avg_num_neighbors message normalisation and the
residuals keep activations O(1) instead); Bessel frequencies are fixed, not trained, so the radial basis of a
fixed structure can be computed once (``attach_geometry``) and reused every epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo import properties
from zoo.core import tensors
from zoo.nn import e3nn_import, species
from zoo.nn.graphs import EdgeGeometry, GraphBatch
from zoo.nn.model_files import CONFIG_FORMAT, HEADS, OUTPUT_MAPS

with e3nn_import.lean():  # without torch._dynamo and sympy, which no network here needs (see there)
    from e3nn import nn as e3nn_nn
    from e3nn import o3

# spd_log targets: eigenvalues of T - floor I below this are raised to it before the logarithm (1.4% of the ionic
# eigenvalues of the dielectric training split are below it, 0.4% exactly 0; log 0.1 = -2.3 against a bulk of
# log eps_ionic in 0..4.3). The prediction's error from the clip is at most 0.1 per eigenvalue.
SPD_LOG_MINIMUM = 0.1
# Fields added to ModelConfig after CONFIG_FORMAT 1 was first written, with the value that reproduces older models
# (parts: the property's target part alone, see ``from_json``).
_ADDED_FIELDS = {"species_embedding": "learned", "output_map": "linear"}
MATTEN_HIDDEN_IRREPS = "32x0o+32x0e+16x1o+16x1e+4x2o+4x2e+2x3o+2x3e+2x4e"  # REFERENCE.md
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Edges per chunk in inference (no gradients): bounds memory at ~chunk x irreps_mid floats per temporary, a few
# hundred MB for MatTen's size, with no loss of speed (CPU throughput per edge does not grow with batch size).
INFERENCE_EDGE_CHUNK = 8192
MAX_ATOMIC_NUMBER = species.MAX_ATOMIC_NUMBER

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


class NonFiniteOutputError(ValueError):
    """The network's output holds NaN or infinity for the graphs at `graphs` (indices in the batch)."""

    def __init__(self, graphs: list[int]):
        super().__init__(f"the network produced non-finite values for graph(s) {graphs} of the batch")
        self.graphs = graphs


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
        set_field("r_cut", _positive_float(self.r_cut, "r_cut"))
        set_field("avg_num_neighbors", _positive_float(self.avg_num_neighbors, "avg_num_neighbors"))
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


def _positive_float(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


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


# ------------------------------------------------------------------------------------------------- modules
class RadialBasis(torch.nn.Module):
    """Bessel functions sqrt(2/r_cut) sin(n pi d / r_cut) / d, n = 1..n_radial (MatTen eq. 6), times NequIP's
    polynomial envelope u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = d / r_cut, so
    every feature goes to zero smoothly at the cutoff (no jump when an atom crosses r_cut)."""

    def __init__(self, r_cut: float, n_radial: int, cutoff_power: int):
        super().__init__()
        self.r_cut, self.p = r_cut, cutoff_power
        self.register_buffer("frequencies", torch.arange(1, n_radial + 1, dtype=torch.float64) * math.pi / r_cut)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        x = lengths / self.r_cut
        p = self.p
        envelope = (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2))
        envelope = envelope * (x < 1)
        bessel = math.sqrt(2 / self.r_cut) * torch.sin(lengths[:, None] * self.frequencies) / lengths[:, None]
        return bessel * envelope[:, None]


class EdgeEmbedding(torch.nn.Module):
    """Edge vectors -> EdgeGeometry (spherical harmonics of the direction, enveloped Bessel basis of the length).

    Nothing here is trained, so for fixed structures the result can be computed once and cached.
    """

    def __init__(self, r_cut: float, n_radial: int, cutoff_power: int, l_max: int):
        super().__init__()
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = RadialBasis(r_cut, n_radial, cutoff_power)
        self.settings = f"sh{l_max}:component:normalized|bessel{n_radial}:r_cut={r_cut!r}:p={cutoff_power}"

    def key(self, dtype: torch.dtype) -> str:
        return f"{self.settings}|{dtype}"

    def forward(self, edge_vectors: torch.Tensor) -> EdgeGeometry:
        lengths = torch.linalg.norm(edge_vectors, dim=1)
        return EdgeGeometry(
            key=self.key(edge_vectors.dtype),
            spherical_harmonics=self.spherical_harmonics(edge_vectors),
            radial_basis=self.radial(lengths),
        )


def _gate_for(irreps_out: o3.Irreps) -> e3nn_nn.Gate:
    """Gate whose output is `irreps_out` (sorted): SiLU on 0e, tanh on 0o (an odd function keeps the parity),
    and each l > 0 irrep multiplied by the sigmoid of its own extra 0e gate scalar."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    activations = {1: torch.nn.functional.silu, -1: torch.tanh}
    return e3nn_nn.Gate(
        scalars, [activations[ir.p] for _, ir in scalars],
        o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps(""), [torch.sigmoid] if gated else [],
        gated,
    )


class Interaction(torch.nn.Module):
    """One message-passing layer, irreps_in -> irreps_out (module docstring)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, n_radial: int,
                 radial_hidden: tuple[int, ...], avg_num_neighbors: float):
        super().__init__()
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.avg_num_neighbors = avg_num_neighbors
        self.gate = _gate_for(irreps_out)
        wanted = {ir for _, ir in self.gate.irreps_in}
        # uvu paths: each input channel u is multiplied by one spherical harmonic and weighted per edge, keeping
        # its multiplicity (NequIP). Every output irrep the gate needs is kept, sorted, then mixed by a Linear.
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", False))
                        mid.append((mul, ir_out))
        irreps_mid, permutation, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
        self.linear_in = o3.Linear(irreps_in, irreps_in)
        # The per-edge uvu weight w[e, path, u] scales the whole output block (u, all m) of its path, so the
        # product is computed unweighted and multiplied by the weights spread over the m components. Identical to
        # e3nn's weighted uvu, but e3nn slices one weight tensor per path and each slice's backward fills a
        # zero tensor of the full (n_edges, n_weights) size: O(paths^2 x edges), most of the step time on CPU.
        self.tensor_product = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions)
        mid_slices = irreps_mid.slices()
        spread, offset = np.zeros(irreps_mid.dim, dtype=np.int64), 0
        for instruction in self.tensor_product.instructions:
            mul, ir = irreps_mid[instruction.i_out]
            block = mid_slices[instruction.i_out]
            spread[block] = offset + np.repeat(np.arange(mul), ir.dim)  # layout of a block is [u][m]
            offset += mul
        self.register_buffer("weight_spread", torch.from_numpy(spread))
        self.radial_mlp = e3nn_nn.FullyConnectedNet([n_radial, *radial_hidden, offset], torch.nn.functional.silu)
        self.linear_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(irreps_in, self.gate.irreps_in)
        self.residual = irreps_in == irreps_out

    def forward(self, features: torch.Tensor, geometry: EdgeGeometry, edge_index: torch.Tensor) -> torch.Tensor:
        mixed = self.linear_in(features)
        summed = mixed.new_zeros(features.shape[0], self.tensor_product.irreps_out.dim)
        # Without gradients nothing per edge has to be kept, so edges go through in chunks and the largest
        # temporaries (n_edges x irreps_mid) stay bounded whatever the batch size. Training needs them all.
        chunk = max(edge_index.shape[1], 1) if torch.is_grad_enabled() else INFERENCE_EDGE_CHUNK
        for start in range(0, edge_index.shape[1], chunk):
            edges = slice(start, start + chunk)
            senders, receivers = edge_index[0, edges], edge_index[1, edges]
            weights = torch.index_select(self.radial_mlp(geometry.radial_basis[edges]), 1, self.weight_spread)
            messages = self.tensor_product(mixed[senders], geometry.spherical_harmonics[edges]) * weights
            summed.index_add_(0, receivers, messages)
        update = self.gate(self.linear_out(summed / self.avg_num_neighbors) + self.self_interaction(features))
        return features + update if self.residual else update


# ------------------------------------------------------------------------------------------------- network
class MattenNet(torch.nn.Module):
    """One network for any property in zoo.properties, shaped by a ModelConfig (module docstring).

    ``forward(batch)`` -> (n_graphs, n_parts * dim) irreps in the property's e3nn basis, per part (log-space ones
    for output_map spd_log; the DOS for phonon), in the model dtype. Without gradients, float64:
    ``predict_irreps(batch)`` -> the tensors' irreps (n_graphs, n_parts * dim), whatever the output map;
    ``predict_cartesian(batch)`` -> Cartesian tensors (n_graphs, *cartesian_shape), with a parts axis
    (n_graphs, n_output_parts, *cartesian_shape) for a property with several parts (the predicted parts and their
    sum, PropertySpec.output_parts); the DOS (n_graphs, 51) for phonon.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.spec = properties.get(config.property)
        self.dtype = DTYPES[config.dtype]
        hidden = o3.Irreps(config.hidden_irreps)
        self.irreps_out = output_irreps(config)
        self.parts = config.parts
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.embedding = species.SpeciesEmbedding(config.species_dim, config.species_embedding)
            self.edge_embedding = EdgeEmbedding(config.r_cut, config.n_radial, config.cutoff_power, config.l_max)
            # The last layer only produces what the head reads (MatTen's head, too, reads only the output's
            # irreps from the pooled features): a much smaller tensor product than a full hidden layer.
            last = o3.Irreps(config.readout_irreps)
            layers, irreps = [], self.embedding.irreps_out
            for position in range(config.n_layers):
                irreps_out = last if position == config.n_layers - 1 else hidden
                layers.append(Interaction(irreps, irreps_out, self.edge_embedding.irreps_sh, config.n_radial,
                                          config.radial_hidden, config.avg_num_neighbors))
                irreps = irreps_out
            self.layers = torch.nn.ModuleList(layers)
            if config.head == "invariant_voigt":
                self._init_invariant_voigt_head(last)
            else:
                self.head = o3.Linear(last, self.irreps_out, biases=True)
        self._init_output_normalisation()
        self.to(self.dtype)
        if config.head == "equivariant_spd":  # after .to(dtype): the maps around expm stay float64
            forward, backward = mandel_maps(self.spec.formula)
            self.register_buffer("to_mandel", torch.from_numpy(forward.copy()), persistent=False)
            self.register_buffer("from_mandel", torch.from_numpy(backward.copy()), persistent=False)

    def _init_invariant_voigt_head(self, hidden: o3.Irreps) -> None:
        scalar_columns = [index for (mul, ir), part in zip(hidden, hidden.slices()) if ir == o3.Irrep("0e")
                          for index in range(part.start, part.stop)]
        self.register_buffer("scalar_columns", torch.tensor(scalar_columns, dtype=torch.int64))
        voigt_shape = self.spec.voigt_shape
        self.voigt_symmetric = len(voigt_shape) == 2 and voigt_shape[0] == voigt_shape[1]
        if self.voigt_symmetric:  # a symmetric Voigt matrix (stiffness): the upper triangle is independent
            positions = np.ravel_multi_index(np.triu_indices(voigt_shape[0]), voigt_shape)
        else:
            positions = np.arange(int(np.prod(voigt_shape)))
        self.register_buffer("voigt_positions", torch.as_tensor(positions, dtype=torch.int64))
        self.head = e3nn_nn.FullyConnectedNet(
            [len(scalar_columns), self.config.invariant_hidden, len(positions) * len(self.parts)],
            torch.nn.functional.silu)

    def _init_output_normalisation(self) -> None:
        config = self.config
        scale = np.ones(self.irreps_out.dim)
        shift = np.zeros(self.irreps_out.dim)
        if config.output_scale is not None:
            instance_dims = [ir.dim for mul, ir in self.irreps_out for _ in range(mul)]
            scale = np.repeat(config.output_scale, instance_dims)
        if config.output_shift is not None:
            scalar_positions = [s.start + k for (mul, ir), s in zip(self.irreps_out, self.irreps_out.slices())
                                if ir == o3.Irrep("0e") for k in range(mul)]
            shift[scalar_positions] = config.output_shift
        self.register_buffer("output_scale", torch.tensor(scale))
        self.register_buffer("output_shift", torch.tensor(shift))

    # ------------------------------------------------------------------------------------------- geometry
    def attach_geometry(self, batch: GraphBatch) -> GraphBatch:
        """The batch with its fixed per-edge features computed once (no gradient; valid while positions are fixed).

        Typical use: collate the whole data set, attach once, then ``select`` mini-batches every epoch.
        """
        _check_batch(batch)
        with torch.no_grad():
            geometry = self.edge_embedding(batch.edge_vectors.to(self.dtype))
        return batch.with_geometry(geometry)

    def _geometry(self, batch: GraphBatch) -> EdgeGeometry:
        if batch.geometry is None:
            return self.edge_embedding(batch.edge_vectors.to(self.dtype))
        expected = self.edge_embedding.key(self.dtype)
        if batch.geometry.key != expected:
            raise ValueError(f"batch.geometry was computed as {batch.geometry.key!r} but this model needs "
                             f"{expected!r}: attach it with this model's attach_geometry")
        return batch.geometry

    # -------------------------------------------------------------------------------------------- forward
    def forward(self, batch: GraphBatch) -> torch.Tensor:
        _check_batch(batch)
        geometry = self._geometry(batch)
        features = self.embedding(batch.atomic_numbers)
        for layer in self.layers:
            features = layer(features, geometry, batch.edge_index)
        counts = (batch.node_ptr[1:] - batch.node_ptr[:-1]).to(features.dtype)
        pooled = features.new_zeros(batch.n_graphs, features.shape[1]).index_add_(0, batch.batch, features)
        pooled = pooled / counts[:, None]
        if not self.spec.is_tensor:
            # Softplus, not ReLU (Chen et al.'s choice): many DOS bins are exactly zero, and a ReLU output pushed
            # below zero has zero gradient and stops learning for good; softplus keeps a gradient everywhere.
            return torch.nn.functional.softplus(self.head(pooled))
        if self.config.head == "invariant_voigt":
            normalised = self._invariant_voigt(pooled)
        else:
            normalised = self.head(pooled)
        output = normalised * self.output_scale + self.output_shift
        return self._exponential(output) if self.config.head == "equivariant_spd" else output

    def _exponential(self, logarithm: torch.Tensor) -> torch.Tensor:
        """Irreps of expm(S) for irreps of S (Mandel form), in float64 (expm amplifies float32 rounding)."""
        mandel = (logarithm.to(torch.float64) @ self.to_mandel).reshape(-1, 6, 6)
        stiffness = torch.linalg.matrix_exp((mandel + mandel.transpose(1, 2)) / 2)
        return (stiffness.reshape(-1, 36) @ self.from_mandel).to(logarithm.dtype)

    def _invariant_voigt(self, pooled: torch.Tensor) -> torch.Tensor:
        all_components = self.head(pooled[:, self.scalar_columns])
        size, n = int(np.prod(self.spec.voigt_shape)), len(self.voigt_positions)
        out = []
        for k in range(len(self.parts)):
            components = all_components[:, k * n:(k + 1) * n]
            voigt = components.new_zeros(len(pooled), size).index_copy(1, self.voigt_positions, components)
            voigt = voigt.reshape(len(pooled), *self.spec.voigt_shape)
            if self.voigt_symmetric:
                voigt = voigt + voigt.transpose(1, 2) - torch.diag_embed(torch.diagonal(voigt, dim1=1, dim2=2))
            out.append(tensors.voigt_to_irreps(voigt, self.spec.voigt_kind, self.spec.formula).to(self.dtype))
        return torch.cat(out, dim=1)

    def predict_irreps(self, batch: GraphBatch) -> torch.Tensor:
        """Inference: float64 irreps of the predicted tensors, (n_graphs, n_parts * dim); the DOS for phonon.
        NonFiniteOutputError names the graphs whose output holds NaN or infinity."""
        with torch.no_grad():
            output = self(batch)
        finite = torch.isfinite(output).all(dim=1)
        if not bool(finite.all()):
            raise NonFiniteOutputError(torch.nonzero(~finite).flatten().tolist())
        return decode_outputs(self.config, output.to(torch.float64))

    def predict_cartesian(self, batch: GraphBatch) -> torch.Tensor:
        """Inference: float64 Cartesian tensors (class docstring), or the DOS (n_graphs, 51). The parts axis holds
        ``spec.output_parts(parts)``: the predicted parts, then their sum (dielectric total = electronic + ionic)."""
        cartesian = irreps_to_cartesian_parts(self.config, self.predict_irreps(batch))
        if len(self.spec.output_parts(self.parts)) > len(self.parts):
            summands = [self.parts.index(part) for part in self.spec.summed_part[1]]
            cartesian = torch.cat([cartesian, cartesian[:, summands].sum(dim=1, keepdim=True)], dim=1)
        return cartesian


def encode_targets(config: ModelConfig, targets):
    """Targets as the network outputs them: tensor irreps (n, n_parts * dim) -> per part the irreps of
    log(T - floor I) for output_map spd_log (eigenvalues clipped at SPD_LOG_MINIMUM); unchanged otherwise.
    numpy or torch, float64 out."""
    if config.output_map == "linear":
        return targets
    spec = properties.get(config.property)
    cartesian = irreps_to_cartesian_parts(config, targets, parts_axis=True)
    logs = [tensors.symmetric_log(cartesian[:, k], spec.eigenvalue_floor(part), SPD_LOG_MINIMUM)
            for k, part in enumerate(config.parts)]
    return _concatenate([tensors.cartesian_to_irreps(log, spec.formula) for log in logs])


def decode_outputs(config: ModelConfig, outputs):
    """Network outputs -> the tensors' irreps, the inverse of ``encode_targets`` (float64)."""
    if config.output_map == "linear":
        return outputs
    spec = properties.get(config.property)
    logs = irreps_to_cartesian_parts(config, outputs, parts_axis=True)
    values = [tensors.symmetric_exp(logs[:, k], spec.eigenvalue_floor(part)) for k, part in enumerate(config.parts)]
    return _concatenate([tensors.cartesian_to_irreps(value, spec.formula) for value in values])


def irreps_to_cartesian_parts(config: ModelConfig, values, parts_axis: bool | None = None):
    """Irreps (n, n_parts * dim) -> Cartesian (n, n_parts, *shape), or (n, *shape) for a property with a single
    part (parts_axis None: as ``MattenNet.predict_cartesian`` returns them); the DOS is returned as it is."""
    spec = properties.get(config.property)
    if not spec.is_tensor:
        return values
    cartesian = tensors.irreps_to_cartesian(values.reshape(len(values), len(config.parts), -1), spec.formula)
    keep = spec.has_parts if parts_axis is None else parts_axis
    return cartesian if keep else cartesian[:, 0]


def _concatenate(arrays):
    return torch.cat(arrays, dim=1) if isinstance(arrays[0], torch.Tensor) else np.concatenate(arrays, axis=1)


class Ensemble(torch.nn.Module):
    """Networks of one architecture trained from different seeds; the prediction is their mean, and the standard
    deviation across members (``predict_with_spread``) an uncertainty estimate (deep ensembles, Lakshminarayanan et al.
    2017). Averaging removes the part of each member's error that comes from its initialisation and mini-batch
    order, which on our small training sets is a large part (phonon DOS test MSE: one network 0.0261, two 0.0239).
    The mean of equivariant members is equivariant, and the mean of non-negative DOS non-negative.

    Members may predict different parts of a property (ModelConfig.parts; TrainSettings.separate_parts): each part
    is then the mean of the members that predict it (a group), and the parts of the groups are concatenated in
    order. A summed part (dielectric total) is the sum of its summands' means; its spread across groups, whose
    networks are trained independently, is the root sum of the summands' variances.

    Same interface as MattenNet for inference and evaluation: ``config`` (member 0's; for groups of parts, with the
    parts of all groups and no output normalisation, which each member keeps in its weights), ``spec``, ``dtype``,
    ``parts``, ``irreps_out``, ``attach_geometry``, ``predict_irreps``, ``predict_cartesian``. The mean is taken of
    the members' tensors (not of their log-space outputs), as is the spread.
    """

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if len(members) < 2 or not all(isinstance(m, MattenNet) for m in members):
            raise ValueError("an Ensemble needs at least two MattenNet members")
        shared = {dataclasses.replace(m.config, seed=0, parts=None, output_scale=None, output_shift=None)
                  for m in members}
        if len(shared) != 1:
            raise ValueError("ensemble members must share one ModelConfig apart from the seed and the parts")
        keys = [(m.config.parts, m.config.seed) for m in members]
        if len(set(keys)) != len(keys):
            raise ValueError(f"ensemble members need distinct seeds (per parts), got {keys}")
        self.members = torch.nn.ModuleList(members)
        self.groups = {}  # parts -> indices of the members that predict them
        for index, member in enumerate(members):
            self.groups.setdefault(member.parts, []).append(index)
        self.parts = tuple(part for parts in self.groups for part in parts)
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"ensemble member groups must predict disjoint parts, got {list(self.groups)}")
        first = members[0].config
        self.config = first if len(self.groups) == 1 else dataclasses.replace(
            first, parts=self.parts, output_scale=None, output_shift=None)
        self.spec, self.dtype = members[0].spec, members[0].dtype
        self.irreps_out = output_irreps(self.config)

    @property
    def seeds(self) -> list[int]:
        return [member.config.seed for member in self.members]

    @property
    def member_parts(self) -> list[tuple[str, ...]]:
        return [member.config.parts for member in self.members]

    @property
    def has_spread(self) -> bool:
        """Every part is predicted by two or more members (a standard deviation needs two)."""
        return all(len(indices) > 1 for indices in self.groups.values())

    def attach_geometry(self, batch: GraphBatch) -> GraphBatch:
        return self.members[0].attach_geometry(batch)  # one geometry serves all: it depends on the shared config

    def predict_irreps(self, batch: GraphBatch) -> torch.Tensor:
        batch = self.attach_geometry(batch) if batch.geometry is None else batch
        return torch.cat([torch.stack([self.members[i].predict_irreps(batch) for i in indices]).mean(dim=0)
                          for indices in self.groups.values()], dim=1)

    def predict_cartesian(self, batch: GraphBatch) -> torch.Tensor:
        return self.predict_with_spread(batch)[0]

    def predict_with_spread(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, standard deviation) across members of the Cartesian prediction, from one pass over the members."""
        batch = self.attach_geometry(batch) if batch.geometry is None else batch
        if len(self.groups) == 1:
            members = torch.stack([member.predict_cartesian(batch) for member in self.members])
            return members.mean(dim=0), members.std(dim=0)
        means, spreads = [], []
        for indices in self.groups.values():
            members = torch.stack([irreps_to_cartesian_parts(self.members[i].config, self.members[i].predict_irreps(
                batch), parts_axis=True) for i in indices])
            means.append(members.mean(dim=0))
            spreads.append(members.std(dim=0) if len(indices) > 1 else torch.full_like(members[0], math.nan))
        mean, spread = torch.cat(means, dim=1), torch.cat(spreads, dim=1)
        if len(self.spec.output_parts(self.parts)) > len(self.parts):
            summands = [self.parts.index(part) for part in self.spec.summed_part[1]]
            mean = torch.cat([mean, mean[:, summands].sum(dim=1, keepdim=True)], dim=1)
            spread = torch.cat([spread, spread[:, summands].square().sum(dim=1, keepdim=True).sqrt()], dim=1)
        return mean, spread


@contextlib.contextmanager
def serving(threads: int = 1):
    """Settings for building and running networks to serve predictions, restored afterwards:

    - `threads` torch intra-op threads. Measured on the shared 2-core machine (elastic model, OMP_WAIT_POLICY=PASSIVE):
      one NaCl cell 0.01 s with 1 thread, 0.08-0.36 s with 2; 64 cells of 8 atoms 0.22-0.39 s with 1, 1.6-2.0 s with
      2; building the network 0.8 s with 1, 1.4 s with 2.
    - e3nn's einsum-order optimisation (opt_einsum_fx) off: it costs 0.5-0.7 s of a 1.4 s build and did not make
      those predictions faster. The contraction order changes float32 rounding only (relative 1e-7).
    """
    import e3nn

    saved_threads, saved_e3nn = torch.get_num_threads(), dict(e3nn.get_optimization_defaults())
    torch.set_num_threads(threads)
    e3nn.set_optimization_defaults(optimize_einsums=False)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        e3nn.set_optimization_defaults(optimize_einsums=saved_e3nn["optimize_einsums"])


def network(info: Mapping[str, Any]) -> MattenNet | Ensemble:
    """The untrained network a config.json (zoo.nn.model_files) describes (an Ensemble when it lists ensemble_seeds;
    members of different parts with ensemble_parts)."""
    return build(ModelConfig.from_json(json.dumps(info["model_config"])), info.get("ensemble_seeds"),
                 info.get("ensemble_parts"))


def build(config: ModelConfig, seeds=None, member_parts=None) -> MattenNet | Ensemble:
    """The network of `config`, or with `seeds` (two or more) the Ensemble of config with each seed; `member_parts`
    (one tuple of parts per seed) makes members predicting different parts, whose output normalisation comes with
    their weights."""
    if seeds is None or len(seeds) == 1:
        return MattenNet(config if seeds is None else dataclasses.replace(config, seed=int(seeds[0])))
    if member_parts is None:
        return Ensemble(MattenNet(dataclasses.replace(config, seed=int(seed))) for seed in seeds)
    return Ensemble(MattenNet(dataclasses.replace(config, seed=int(seed), parts=tuple(parts), output_scale=None,
                                                  output_shift=None)) for seed, parts in zip(seeds, member_parts))


def _check_batch(batch) -> None:
    if not isinstance(batch, GraphBatch):
        raise ValueError(f"batch must be a zoo.nn.graphs.GraphBatch, got {type(batch).__name__}")
    if batch.n_atoms and (int(batch.atomic_numbers.min()) < 1 or int(batch.atomic_numbers.max()) > MAX_ATOMIC_NUMBER):
        raise ValueError(f"batch.atomic_numbers must lie in 1..{MAX_ATOMIC_NUMBER}, got "
                         f"{int(batch.atomic_numbers.min())}..{int(batch.atomic_numbers.max())}")

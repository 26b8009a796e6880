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

The settings live in zoo.nn.model_config (ModelConfig, importable from here too), the e3nn layers in zoo.nn.blocks.

Outputs are irreps vectors in the e3nn CartesianTensor basis of ``zoo.core.tensors``; ``predict_cartesian`` maps them to
Cartesian tensors with its cached change of basis. Differences from MatTen: no equivariant batch norm (outputs
then depend on the other structures in a batch; the 1/avg_num_neighbors message normalisation and the
residuals keep activations O(1) instead); Bessel frequencies are fixed, not trained, so the radial basis of a
fixed structure can be computed once (``attach_geometry``) and reused every epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from zoo import properties
from zoo.core import tensors
from zoo.nn import e3nn_import, species
from zoo.nn.blocks import EdgeEmbedding, Interaction
from zoo.nn.graphs import EdgeGeometry, GraphBatch
from zoo.nn.model_config import (
    DTYPES,
    ModelConfig,  # also zoo.nn.models.ModelConfig, the path the model cards (zoo/templates/model_card.md.j2) print
    mandel_maps,
    output_irreps,
)

with e3nn_import.lean():  # without torch._dynamo and sympy, which no network here needs (see there)
    from e3nn import nn as e3nn_nn
    from e3nn import o3

# spd_log targets: eigenvalues of T - floor I below this are raised to it before the logarithm (1.4% of the ionic
# eigenvalues of the dielectric training split are below it, 0.4% exactly 0; log 0.1 = -2.3 against a bulk of
# log eps_ionic in 0..4.3). The prediction's error from the clip is at most 0.1 per eigenvalue.
SPD_LOG_MINIMUM = 0.1
MAX_ATOMIC_NUMBER = species.MAX_ATOMIC_NUMBER

class NonFiniteOutputError(ValueError):
    """The network's output holds NaN or infinity for the graphs at `graphs` (indices in the batch)."""

    def __init__(self, graphs: list[int]):
        super().__init__(f"the network produced non-finite values for graph(s) {graphs} of the batch")
        self.graphs = graphs


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

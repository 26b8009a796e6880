"""The e3nn building blocks of zoo.nn.models' networks: radial basis, edge embedding, gate and the interaction
layer (zoo.nn.models' docstring describes the architecture)."""

from __future__ import annotations

import math

import numpy as np
import torch

from zoo.nn import e3nn_import
from zoo.nn.graphs import EdgeGeometry

with e3nn_import.lean():  # without torch._dynamo and sympy, which no network here needs (see there)
    from e3nn import nn as e3nn_nn
    from e3nn import o3

# Edges per chunk in inference (no gradients): bounds memory at ~chunk x irreps_mid floats per temporary, a few
# hundred MB for MatTen's size, with no loss of speed (CPU throughput per edge does not grow with batch size).
INFERENCE_EDGE_CHUNK = 8192


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



"""Periodic neighbour graphs of crystal structures, their batching and their caches.

Conventions (the models rely on them):
- An edge is a pair (sender s, receiver r) of atoms, with the sender taken in the periodic image shifted by
  the integer lattice translation n_s: ``edge_vector = pos[s] + n_s @ lattice - pos[r]`` (A, float64), the vector
  from the receiver to the sender's image. Messages flow from sender to receiver. Every pair closer than r_cut
  is included in both directions, periodic self-images too; the zero-length pair (an atom and itself) is not.
- Edges are ordered by (receiver, sender, n_s) lexicographically, so a graph does not depend on the order the
  neighbour-list library returns pairs in.
- Geometry is stored in float64; models cast it to their own dtype.

Neighbour search is pymatgen's ``Structure.get_neighbor_list`` (compiled cell lists). vesin was measured as the
alternative: on 1,000 elastic-snapshot structures at r_cut 5 A (12.6 atoms, 424 edges each) both ran at 6,000-8,000
structures/s on 2 cores, within the noise of a shared machine, so pymatgen, already a dependency, is used. Building
graphs (1,000-2,500 structures/s with the bookkeeping here) is small next to one training epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from pymatgen.core.structure import IStructure

from zoo.core.io import atomic_write_bytes
from zoo.core.schema_checks import check_positive

# Version of the on-disk cache layout: a file written by another layout is refused, never misread.
CACHE_FORMAT = "zoo-graphs/1"


# ----------------------------------------------------------------------------------------------- one graph
@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make a generated __eq__ ambiguous
class StructureGraph:
    """The neighbour graph of one structure, in numpy (see the module docstring for the conventions).

    atomic_numbers  (n_atoms,) int64
    positions       (n_atoms, 3) float64 Cartesian positions, A
    lattice         (3, 3) float64, rows are the lattice vectors, A
    edge_index      (2, n_edges) int64: row 0 the senders, row 1 the receivers
    edge_shifts     (n_edges, 3) int64 lattice translation of the sender's image
    edge_vectors    (n_edges, 3) float64 pos[sender] + shift @ lattice - pos[receiver], A
    r_cut           cutoff radius the graph was built with, A
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray
    edge_index: np.ndarray
    edge_shifts: np.ndarray
    edge_vectors: np.ndarray
    r_cut: float

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]


def _check_structure(structure, name: str = "structure") -> IStructure:
    if not isinstance(structure, IStructure):  # IStructure is also the base of the mutable Structure
        raise ValueError(f"{name} must be a pymatgen Structure, got {type(structure).__name__}")
    if len(structure) == 0:
        raise ValueError(f"{name} has no sites")
    if not structure.is_ordered:
        raise ValueError(
            f"{name} ({structure.composition.reduced_formula}) has partially occupied sites; "
            "a graph needs one element per site"
        )
    return structure


def structure_key(structure, r_cut: float) -> str:
    """Cache key: sha256 of the atomic numbers, lattice and Cartesian positions (exact float64 bytes), and r_cut.

    Exact bytes on purpose: any change of the structure, however small, changes the edge vectors, so it must
    not hit a stale entry.
    """
    structure = _check_structure(structure)
    r_cut = check_positive(r_cut, "r_cut", "angstroms", convert=True)
    digest = hashlib.sha256()
    digest.update(np.asarray(structure.atomic_numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(structure.cart_coords, dtype=np.float64).tobytes())
    return f"{digest.hexdigest()}-rcut{r_cut!r}"


def build_graph(structure, r_cut: float) -> StructureGraph:
    """The periodic neighbour graph of `structure` within `r_cut` (A), edges in canonical order."""
    structure = _check_structure(structure)
    r_cut = check_positive(r_cut, "r_cut", "angstroms", convert=True)
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64)
    positions = np.ascontiguousarray(structure.cart_coords, dtype=np.float64)
    # pymatgen pairs (center, point, image) with the point's image at pos[point] + image @ lattice: the point is
    # our sender, the center our receiver. Images are integral floats.
    receivers, senders, images, _ = structure.get_neighbor_list(r_cut)
    receivers = receivers.astype(np.int64)
    senders = senders.astype(np.int64)
    shifts = np.rint(images).astype(np.int64).reshape(-1, 3)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], senders, receivers))
    receivers, senders, shifts = receivers[order], senders[order], shifts[order]
    vectors = positions[senders] + shifts @ lattice - positions[receivers]
    return StructureGraph(
        atomic_numbers=np.asarray(structure.atomic_numbers, dtype=np.int64),
        positions=positions,
        lattice=lattice,
        edge_index=np.stack([senders, receivers]),
        edge_shifts=shifts,
        edge_vectors=vectors,
        r_cut=r_cut,
    )


def average_neighbors(graphs: Iterable[StructureGraph]) -> float:
    """Mean number of neighbours per atom (edges / atoms) over `graphs`: the models' message normalisation."""
    n_edges = n_atoms = 0
    for graph in graphs:
        n_edges += graph.n_edges
        n_atoms += graph.n_atoms
    if n_atoms == 0:
        raise ValueError("graphs is empty: the average number of neighbours needs at least one atom")
    return n_edges / n_atoms


# --------------------------------------------------------------------------------------------------- batch
@dataclass(frozen=True, eq=False)  # eq=False: tensor fields make a generated __eq__ ambiguous
class EdgeGeometry:
    """Per-edge quantities a model derives from fixed edge vectors, computed once and reused every epoch.

    key                 describes how they were computed (model settings and dtype); a model refuses a
                        mismatching key rather than silently use features from another configuration
    spherical_harmonics (n_edges, (l_max + 1)**2)
    radial_basis        (n_edges, n_radial), already multiplied by the smooth cutoff envelope
    """

    key: str
    spherical_harmonics: torch.Tensor
    radial_basis: torch.Tensor


def _concatenated_ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """cat([arange(s, s + c) for s, c in zip(starts, counts)]) without a Python loop."""
    total = int(counts.sum())
    offsets = torch.cumsum(counts, 0) - counts
    positions = torch.arange(total, device=starts.device)
    return torch.repeat_interleave(starts - offsets, counts, output_size=total) + positions


@dataclass(frozen=True, eq=False)  # eq=False: tensor fields make a generated __eq__ ambiguous
class GraphBatch:
    """Many graphs as flat torch tensors (PyTorch Geometric layout; CPU tensors unless moved with ``to``).

    atomic_numbers  (n_atoms,) int64
    edge_index      (2, n_edges) int64 into the batch's atoms: row 0 senders, row 1 receivers
    edge_vectors    (n_edges, 3) float64, A
    batch           (n_atoms,) int64 graph index of each atom
    node_ptr        (n_graphs + 1,) int64: atoms of graph g are node_ptr[g]:node_ptr[g + 1]
    edge_ptr        (n_graphs + 1,) int64: edges of graph g are edge_ptr[g]:edge_ptr[g + 1]
    geometry        cached per-edge model inputs (``zoo.nn.models``), or None
    """

    atomic_numbers: torch.Tensor
    edge_index: torch.Tensor
    edge_vectors: torch.Tensor
    batch: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    geometry: EdgeGeometry | None = None

    @property
    def n_graphs(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]

    @classmethod
    def collate(cls, graphs: Sequence[StructureGraph]) -> GraphBatch:
        """Concatenate graphs, offsetting each graph's atom indices by the atoms before it."""
        graphs = list(graphs)
        if not graphs:
            raise ValueError("graphs is empty: a batch needs at least one graph")
        for position, graph in enumerate(graphs):
            if not isinstance(graph, StructureGraph):
                raise ValueError(f"graphs[{position}] must be a StructureGraph, got {type(graph).__name__}")
        n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int64)
        n_edges = np.array([g.n_edges for g in graphs], dtype=np.int64)
        node_ptr = np.concatenate([[0], np.cumsum(n_atoms)])
        edge_ptr = np.concatenate([[0], np.cumsum(n_edges)])
        edge_index = np.concatenate([g.edge_index + offset for g, offset in zip(graphs, node_ptr[:-1])], axis=1)
        return cls(
            atomic_numbers=torch.from_numpy(np.concatenate([g.atomic_numbers for g in graphs])),
            edge_index=torch.from_numpy(edge_index),
            edge_vectors=torch.from_numpy(np.concatenate([g.edge_vectors for g in graphs])),
            batch=torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), n_atoms)),
            node_ptr=torch.from_numpy(node_ptr),
            edge_ptr=torch.from_numpy(edge_ptr),
        )

    def select(self, graph_indices) -> GraphBatch:
        """A batch of the graphs at `graph_indices` (in that order), geometry included, by tensor indexing only.

        Collate a whole dataset once, attach its geometry once, then ``select`` each mini-batch: no per-step
        Python loop over structures and no recomputation of fixed per-edge features.
        """
        try:
            index = torch.as_tensor(graph_indices, dtype=torch.int64, device=self.node_ptr.device).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"graph_indices must be a sequence of integers, got {graph_indices!r}") from None
        if len(index) == 0:
            raise ValueError("graph_indices is empty: a batch needs at least one graph")
        if int(index.min()) < 0 or int(index.max()) >= self.n_graphs:
            raise ValueError(f"graph_indices must lie in [0, {self.n_graphs}), got values from "
                             f"{int(index.min())} to {int(index.max())}")
        node_start, edge_start = self.node_ptr[index], self.edge_ptr[index]
        node_counts = self.node_ptr[index + 1] - node_start
        edge_counts = self.edge_ptr[index + 1] - edge_start
        nodes = _concatenated_ranges(node_start, node_counts)
        edges = _concatenated_ranges(edge_start, edge_counts)
        new_node_ptr = torch.cat([node_counts.new_zeros(1), torch.cumsum(node_counts, 0)])
        new_edge_ptr = torch.cat([edge_counts.new_zeros(1), torch.cumsum(edge_counts, 0)])
        # Each edge's atom indices move by (new start - old start) of its graph.
        edge_offset = torch.repeat_interleave(new_node_ptr[:-1] - node_start, edge_counts, output_size=len(edges))
        geometry = None
        if self.geometry is not None:
            geometry = EdgeGeometry(
                key=self.geometry.key,
                spherical_harmonics=self.geometry.spherical_harmonics[edges],
                radial_basis=self.geometry.radial_basis[edges],
            )
        return GraphBatch(
            atomic_numbers=self.atomic_numbers[nodes],
            edge_index=self.edge_index[:, edges] + edge_offset,
            edge_vectors=self.edge_vectors[edges],
            batch=torch.repeat_interleave(torch.arange(len(index), device=index.device), node_counts,
                                          output_size=len(nodes)),
            node_ptr=new_node_ptr,
            edge_ptr=new_edge_ptr,
            geometry=geometry,
        )

    def with_geometry(self, geometry: EdgeGeometry | None) -> GraphBatch:
        """The same graphs carrying `geometry` (one row per edge), or none."""
        if geometry is not None and (
            geometry.spherical_harmonics.shape[0] != self.n_edges or geometry.radial_basis.shape[0] != self.n_edges
        ):
            raise ValueError(f"geometry must have one row per edge ({self.n_edges}), got "
                             f"{geometry.spherical_harmonics.shape[0]} and {geometry.radial_basis.shape[0]}")
        return replace(self, geometry=geometry)

    def to(self, device) -> GraphBatch:
        """Every tensor, geometry included, moved to `device`."""
        geometry = self.geometry
        if geometry is not None:
            geometry = EdgeGeometry(geometry.key, geometry.spherical_harmonics.to(device),
                                    geometry.radial_basis.to(device))
        return GraphBatch(
            atomic_numbers=self.atomic_numbers.to(device),
            edge_index=self.edge_index.to(device),
            edge_vectors=self.edge_vectors.to(device),
            batch=self.batch.to(device),
            node_ptr=self.node_ptr.to(device),
            edge_ptr=self.edge_ptr.to(device),
            geometry=geometry,
        )


# --------------------------------------------------------------------------------------------------- cache
class GraphCache:
    """Graphs of structures within one r_cut, keyed by ``structure_key``: in memory, optionally backed by a file.

    The file (safetensors, no pickle) holds every graph of a dataset version; ``save`` writes it atomically and a
    new ``GraphCache(r_cut, path)`` reads it back. A file of another layout version or another r_cut is refused.
    """

    def __init__(self, r_cut: float, path: str | os.PathLike | None = None):
        self.r_cut = check_positive(r_cut, "r_cut", "angstroms", convert=True)
        self.path = None if path is None else os.fspath(path)
        self._graphs: dict[str, StructureGraph] = {}
        if self.path is not None and os.path.exists(self.path):
            self._graphs.update(load_graphs(self.path, self.r_cut))

    def __len__(self) -> int:
        return len(self._graphs)

    def graph(self, structure) -> StructureGraph:
        key = structure_key(structure, self.r_cut)
        cached = self._graphs.get(key)
        if cached is None:
            cached = self._graphs[key] = build_graph(structure, self.r_cut)
        return cached

    def graphs(self, structures: Iterable) -> list[StructureGraph]:
        return [self.graph(structure) for structure in structures]

    def save(self, path: str | os.PathLike | None = None) -> None:
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("path is required: this cache was created without a file")
        save_graphs(target, self._graphs, self.r_cut)


def save_graphs(path: str | os.PathLike, graphs: dict[str, StructureGraph], r_cut: float) -> None:
    """Write keyed graphs to one safetensors file atomically; keys are stored sorted, so the bytes are
    deterministic for the same graphs."""
    from safetensors.numpy import save

    r_cut = check_positive(r_cut, "r_cut", "angstroms", convert=True)
    keys = sorted(graphs)
    for key in keys:
        if graphs[key].r_cut != r_cut:
            raise ValueError(f"graphs[{key!r}] was built with r_cut {graphs[key].r_cut}, not {r_cut}")
    ordered = [graphs[key] for key in keys]
    n_atoms = np.array([g.n_atoms for g in ordered], dtype=np.int64)
    n_edges = np.array([g.n_edges for g in ordered], dtype=np.int64)

    def cat(arrays, width, dtype):
        return np.concatenate(arrays) if arrays else np.zeros((0, *width), dtype=dtype)

    tensors = {
        "n_atoms": n_atoms,
        "n_edges": n_edges,
        "atomic_numbers": cat([g.atomic_numbers for g in ordered], (), np.int64),
        "positions": cat([g.positions for g in ordered], (3,), np.float64),
        "lattices": np.stack([g.lattice for g in ordered]) if ordered else np.zeros((0, 3, 3)),
        "edge_index": cat([g.edge_index.T for g in ordered], (2,), np.int64),  # local atom indices
        "edge_shifts": cat([g.edge_shifts for g in ordered], (3,), np.int64),
        "edge_vectors": cat([g.edge_vectors for g in ordered], (3,), np.float64),
    }
    metadata = {"format": CACHE_FORMAT, "r_cut": repr(r_cut), "keys": json.dumps(keys)}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata))


def load_graphs(path: str | os.PathLike, r_cut: float) -> dict[str, StructureGraph]:
    """Read a file written by ``save_graphs``; refuse another layout version or another r_cut."""
    from safetensors import safe_open

    r_cut = check_positive(r_cut, "r_cut", "angstroms", convert=True)
    try:
        with safe_open(os.fspath(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for unreadable files
        raise ValueError(f"path {os.fspath(path)!r} is not a readable graph cache: {exc}") from None
    if metadata.get("format") != CACHE_FORMAT:
        raise ValueError(f"path {os.fspath(path)!r} holds graph cache format {metadata.get('format')!r}; "
                         f"this code reads {CACHE_FORMAT!r}: rebuild the cache")
    if metadata.get("r_cut") != repr(r_cut):
        raise ValueError(f"path {os.fspath(path)!r} was built with r_cut {metadata.get('r_cut')}, not {r_cut!r}")
    keys = json.loads(metadata["keys"])
    node_ptr = np.concatenate([[0], np.cumsum(tensors["n_atoms"])])
    edge_ptr = np.concatenate([[0], np.cumsum(tensors["n_edges"])])
    graphs = {}
    for g, key in enumerate(keys):
        nodes, edges = slice(node_ptr[g], node_ptr[g + 1]), slice(edge_ptr[g], edge_ptr[g + 1])
        graphs[key] = StructureGraph(
            atomic_numbers=tensors["atomic_numbers"][nodes],
            positions=tensors["positions"][nodes],
            lattice=tensors["lattices"][g],
            edge_index=np.ascontiguousarray(tensors["edge_index"][edges].T),
            edge_shifts=tensors["edge_shifts"][edges],
            edge_vectors=tensors["edge_vectors"][edges],
            r_cut=r_cut,
        )
    return graphs

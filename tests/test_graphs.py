"""Neighbour graphs (zoo.nn.graphs): the edges, their order, the structure key, batching and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from tests.test_models import R_CUT, all_structures, batch_of, load, tiny_model
from zoo.nn import graphs


# --------------------------------------------------------------------------------------------------- graphs
def brute_force_edges(structure: Structure, r_cut: float) -> set[tuple[int, int, tuple[int, int, int]]]:
    """(receiver, sender, shift) of every pair closer than r_cut, by trying every lattice translation that can reach."""
    lattice = structure.lattice.matrix
    widths = structure.volume / np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)
    reach = np.ceil(r_cut / widths).astype(int) + 1  # positions lie anywhere in the cell: one more translation
    shifts = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij"), -1).reshape(-1, 3)
    positions = structure.cart_coords
    vectors = positions[None, :, None, :] + (shifts @ lattice)[None, None] - positions[:, None, None, :]
    receivers, senders, which = np.nonzero((np.linalg.norm(vectors, axis=-1) < r_cut)
                                           & (np.linalg.norm(vectors, axis=-1) > 1e-8))
    return set(zip(receivers.tolist(), senders.tolist(), map(tuple, shifts[which].tolist())))


def test_graph_matches_brute_force_search():
    for structure in all_structures():
        graph = graphs.build_graph(structure, R_CUT)
        senders, receivers = graph.edge_index
        found = set(zip(receivers.tolist(), senders.tolist(), map(tuple, graph.edge_shifts.tolist())))
        assert found == brute_force_edges(structure, R_CUT), structure.composition.reduced_formula
        assert len(found) == graph.n_edges  # no duplicate edges


def test_graph_vectors_and_canonical_order():
    structure = load("trigonal-mp-12699")
    graph = graphs.build_graph(structure, R_CUT)
    senders, receivers = graph.edge_index
    positions = structure.cart_coords
    vectors = positions[senders] + graph.edge_shifts @ structure.lattice.matrix - positions[receivers]
    np.testing.assert_allclose(graph.edge_vectors, vectors, atol=1e-12)
    lengths = np.linalg.norm(graph.edge_vectors, axis=1)
    assert lengths.min() > 0 and lengths.max() < R_CUT
    keys = np.column_stack([receivers, senders, graph.edge_shifts])
    assert [tuple(k) for k in keys] == sorted(tuple(k) for k in keys)
    assert graph.edge_vectors.dtype == np.float64


def test_structure_key_changes_with_any_change():
    structure = load("cubic-mp-101")
    moved = Structure(structure.lattice, structure.species, structure.cart_coords + [1e-9, 0, 0],
                      coords_are_cartesian=True)
    key = graphs.structure_key(structure, R_CUT)
    assert key == graphs.structure_key(load("cubic-mp-101").copy(), R_CUT)
    assert key != graphs.structure_key(moved, R_CUT)
    assert key != graphs.structure_key(structure, 4.0)


@pytest.mark.parametrize("bad, message", [
    (lambda s: graphs.build_graph(s, -1.0), "r_cut"),
    (lambda s: graphs.build_graph(s, "far"), "r_cut"),
    (lambda s: graphs.build_graph(s.as_dict(), R_CUT), "structure"),
    (lambda s: graphs.build_graph(Structure(s.lattice, [{"Ga": 0.5, "Sb": 0.5}] * len(s), s.frac_coords), R_CUT),
     "partially occupied"),
    (lambda s: graphs.GraphBatch.collate([]), "graphs"),
    (lambda s: batch_of(s).select([5]), "graph_indices"),
    (lambda s: batch_of(s).select("first"), "graph_indices"),
])
def test_graph_input_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        bad(load("cubic-mp-1156"))


def test_select_equals_collating_the_selected_graphs():
    model = tiny_model("elastic")
    structure_list = all_structures()
    graph_list = [graphs.build_graph(s, R_CUT) for s in structure_list]
    full = model.attach_geometry(graphs.GraphBatch.collate(graph_list))
    picked = [7, 2, 11, 2]
    selected = full.select(picked)
    expected = model.attach_geometry(graphs.GraphBatch.collate([graph_list[i] for i in picked]))
    for name in ("atomic_numbers", "edge_index", "edge_vectors", "batch", "node_ptr", "edge_ptr"):
        assert torch.equal(getattr(selected, name), getattr(expected, name)), name
    assert torch.equal(selected.geometry.spherical_harmonics, expected.geometry.spherical_harmonics)
    assert torch.equal(selected.geometry.radial_basis, expected.geometry.radial_basis)


def test_graph_cache_memory_and_disk(tmp_path):
    path = tmp_path / "graphs-v1.safetensors"
    cache = graphs.GraphCache(R_CUT, path)
    structure_list = all_structures()
    built = cache.graphs(structure_list)
    assert cache.graph(structure_list[0]) is built[0]  # memory hit
    cache.save()
    reloaded = graphs.GraphCache(R_CUT, path)
    assert len(reloaded) == len(structure_list)
    for structure, graph in zip(structure_list, built):
        again = reloaded.graph(structure)
        for name in ("atomic_numbers", "positions", "lattice", "edge_index", "edge_shifts", "edge_vectors"):
            assert np.array_equal(getattr(again, name), getattr(graph, name)), name
    with pytest.raises(ValueError, match="r_cut"):
        graphs.GraphCache(4.0, path)
    other = tmp_path / "other.safetensors"
    from safetensors.numpy import save_file

    save_file({"n_atoms": np.zeros(1, dtype=np.int64)}, str(other), metadata={"format": "zoo-graphs/0"})
    with pytest.raises(ValueError, match="format"):
        graphs.GraphCache(R_CUT, other)



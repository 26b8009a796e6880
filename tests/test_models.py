"""The equivariant models (zoo.nn.models): symmetry, caching, training, config (the graphs:
tests/test_graphs.py; the dielectric parts and the positive definite head: tests/test_model_heads.py).

Models are tiny and float64 where a symmetry is checked, so rounding sits far below the tolerances.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.nn import blocks, graphs, model_config, model_files, models
from zoo.nn.model_config import ModelConfig

STRUCTURES = Path(__file__).parent / "data" / "structures"
TENSOR_PROPERTIES = ("elastic", "dielectric", "piezo")
R_CUT = 5.0
EQUIVARIANCE_RTOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny graphs gain nothing from a second thread, and on a shared 2-core machine waking OpenMP workers for
    every small op made the overfit test ~10x slower; restored afterwards for the other test modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=None)
def load(name: str) -> Structure:
    return Structure.from_file(STRUCTURES / f"{name}.cif")


def all_structures() -> list[Structure]:
    return [load(path.stem) for path in sorted(STRUCTURES.glob("*.cif"))]


def generic_structure() -> Structure:
    """A P1 crystal (the monoclinic P2_1 cell with every atom moved a little): no symmetry zeroes any output."""
    base = load("monoclinic-mp-12177")
    displacement = np.random.default_rng(7).normal(scale=0.05, size=(len(base), 3))
    return Structure(base.lattice, base.species, base.cart_coords + displacement, coords_are_cartesian=True)


def transformed(structure: Structure, matrix: np.ndarray) -> Structure:
    """The crystal with every position and lattice vector mapped by the orthogonal `matrix` (r -> matrix @ r)."""
    return Structure(structure.lattice.matrix @ matrix.T, structure.species, structure.cart_coords @ matrix.T,
                     coords_are_cartesian=True)


def batch_of(*structures: Structure) -> graphs.GraphBatch:
    return graphs.GraphBatch.collate([graphs.build_graph(s, R_CUT) for s in structures])


def tiny_config(property_name: str, **overrides) -> ModelConfig:
    head = overrides.get("head", "equivariant")
    readout = "+".join(f"4x{ir}" for _, ir in model_config.head_irreps(property_name, head))
    settings = dict(hidden_irreps="4x0o+4x0e+2x1o+2x1e+2x2o+2x2e", readout_irreps=readout, n_radial=4,
                    radial_hidden=(8,), species_dim=8, invariant_hidden=8, avg_num_neighbors=20.0, dtype="float64")
    settings.update(overrides)
    return ModelConfig(property_name, **settings)


@functools.lru_cache(maxsize=None)
def tiny_model(property_name: str, head: str = "equivariant", dtype: str = "float64") -> models.MattenNet:
    """Shared, read-only models (building e3nn modules takes a second each); tests that train build their own."""
    return models.MattenNet(tiny_config(property_name, head=head, dtype=dtype))


def rotated_output(property_name: str, output: torch.Tensor, rotation: np.ndarray) -> torch.Tensor:
    """The output of one structure rotated as the property's tensors rotate (each part of a dielectric output)."""
    spec = properties.get(property_name)
    if not spec.is_tensor:
        return output
    return tensors.rotate(output, torch.from_numpy(rotation), rank=spec.rank)


def part_tensors(property_name: str, output) -> list:
    """The Cartesian tensors of one structure's output: each part of a dielectric output, else the one tensor."""
    return list(output) if properties.get(property_name).has_parts else [output]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).norm() / expected.norm())


# --------------------------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("property_name", list(properties.PROPERTIES))
def test_rotating_the_structure_rotates_the_output(property_name):
    model = tiny_model(property_name)
    rotation = Rotation.random(random_state=3).as_matrix()
    structure = generic_structure()
    output = model.predict_cartesian(batch_of(structure))[0]
    rotated = model.predict_cartesian(batch_of(transformed(structure, rotation)))[0]
    assert float(output.norm()) > 1e-3  # a generic structure gives a generic, non-zero output
    assert relative_error(rotated, rotated_output(property_name, output, rotation)) < EQUIVARIANCE_RTOL


def test_inversion_flips_piezo_only():
    structure = generic_structure()
    inverted = transformed(structure, -np.eye(3))
    for property_name in properties.PROPERTIES:
        model = tiny_model(property_name)
        output = model.predict_cartesian(batch_of(structure))[0]
        after = model.predict_cartesian(batch_of(inverted))[0]
        sign = -1.0 if property_name == "piezo" else 1.0  # odd rank: e_ijk -> (-1)^3 e_ijk
        assert relative_error(after, sign * output) < EQUIVARIANCE_RTOL, property_name


def test_permuting_atoms_changes_nothing():
    structure = generic_structure()
    order = np.random.default_rng(1).permutation(len(structure))
    permuted = Structure(structure.lattice, [structure.species[i] for i in order], structure.cart_coords[order],
                         coords_are_cartesian=True)
    for property_name in properties.PROPERTIES:
        model = tiny_model(property_name)
        assert relative_error(model(batch_of(permuted)), model(batch_of(structure))) < 1e-12, property_name


def test_inference_in_edge_chunks_equals_one_pass(monkeypatch):
    model = tiny_model("piezo")
    batch = batch_of(*all_structures())
    whole = model(batch)
    monkeypatch.setattr(blocks, "INFERENCE_EDGE_CHUNK", 7)  # many uneven chunks
    with torch.no_grad():
        assert relative_error(model(batch), whole) < 1e-12


def test_atom_without_neighbours():
    lonely = Structure(np.eye(3) * 12.0, ["Si"], [[0.0, 0.0, 0.0]])
    batch = batch_of(lonely, load("cubic-mp-101"))
    assert int(batch.edge_ptr[1]) == 0
    for property_name in properties.PROPERTIES:
        assert bool(torch.isfinite(tiny_model(property_name)(batch)).all())
        with torch.no_grad():
            assert bool(torch.isfinite(tiny_model(property_name)(batch_of(lonely))).all())


def test_batching_does_not_mix_structures():
    model = tiny_model("elastic")
    structure_list = all_structures()[:5]
    together = model(batch_of(*structure_list))
    alone = torch.cat([model(batch_of(s)) for s in structure_list])
    assert relative_error(together, alone) < 1e-12


@pytest.mark.parametrize("name", ["cubic-mp-1156", "cubic-mp-625", "cubic-mp-101"])
def test_cubic_structure_gives_cubic_tensors(name):
    structure = load(name)
    info = symmetry.analyze(structure)
    assert info.crystal_system == "cubic"
    for property_name in TENSOR_PROPERTIES:
        output = tiny_model(property_name).predict_cartesian(batch_of(structure))[0].numpy()
        if property_name == "piezo" and info.point_group != "-43m":
            # 432 and m-3m allow no piezoelectric tensor: the model must give zero, to rounding.
            assert np.abs(output).max() < 1e-12
            continue
        for part in part_tensors(property_name, output):
            assert np.linalg.norm(part) > 1e-4
            assert symmetry.neumann_residual(part, info) < 1e-5, property_name
    if info.point_group != "-43m":
        return
    # -43m piezo: one independent constant, e_14 = e_25 = e_36 in the cubic axes (the cell's own here).
    piezo = tensors.piezo_cartesian_to_voigt(tiny_model("piezo").predict_cartesian(batch_of(structure))[0]).numpy()
    expected = np.zeros((3, 6))
    expected[0, 3] = expected[1, 4] = expected[2, 5] = piezo[0, 3]
    np.testing.assert_allclose(piezo, expected, atol=1e-8 * np.abs(piezo).max())


def test_invariant_voigt_baseline_is_not_equivariant():
    """The baseline predicts fixed-frame Voigt components from invariants, so a rotated input gives the same
    numbers instead of the rotated tensor: the equivariance check above really can fail."""
    structure = generic_structure()
    rotation = Rotation.random(random_state=3).as_matrix()
    for property_name in TENSOR_PROPERTIES:
        model = tiny_model(property_name, head="invariant_voigt")
        output = model.predict_cartesian(batch_of(structure))[0]
        rotated = model.predict_cartesian(batch_of(transformed(structure, rotation)))[0]
        assert relative_error(rotated, output) < 1e-10  # invariant outputs...
        assert relative_error(rotated, rotated_output(property_name, output, rotation)) > 0.1  # ...not rotated


# ------------------------------------------------------------------------------------------ heads and dtype
def test_phonon_dos_is_non_negative_even_for_extreme_weights():
    model = models.MattenNet(tiny_config("phonon"))
    with torch.no_grad():
        model.head.bias.fill_(-60.0)  # pushes every pre-activation far below zero
    dos = model.predict_cartesian(batch_of(*all_structures()))
    assert dos.shape == (len(all_structures()), len(properties.PHONON_GRID_CM))
    assert bool((dos >= 0).all()) and bool(torch.isfinite(dos).all())
    assert float(tiny_model("phonon").predict_cartesian(batch_of(generic_structure())).min()) >= 0


def test_cached_geometry_gives_the_same_output_and_is_checked():
    model = tiny_model("piezo")
    batch = batch_of(*all_structures())
    assert relative_error(model(model.attach_geometry(batch)), model(batch)) < 1e-14
    other = models.MattenNet(tiny_config("piezo", l_max=2, n_radial=5))
    with pytest.raises(ValueError, match="geometry"):
        model(other.attach_geometry(batch))


def test_float32_model_agrees_with_float64():
    batch = batch_of(generic_structure(), load("cubic-mp-1156"))
    single = tiny_model("elastic", dtype="float32")
    assert single(batch).dtype == torch.float32
    assert relative_error(single(batch).double(), tiny_model("elastic")(batch)) < 1e-5


def test_output_normalisation_is_invariant_and_applied():
    spec = properties.get("elastic")
    rng = np.random.default_rng(5)
    targets = rng.normal(size=(20, 21)) * np.array([50.0] * 2 + [20.0] * 10 + [5.0] * 9) + np.r_[100, 40, [0] * 19]
    scale, shift = model_config.fit_output_normalisation("elastic", targets)
    rotated = tensors.cartesian_to_irreps(
        tensors.rotate(tensors.irreps_to_cartesian(targets, spec.formula), Rotation.random(random_state=2).as_matrix(),
                       rank=4), spec.formula)
    rotated_scale, rotated_shift = model_config.fit_output_normalisation("elastic", rotated)
    np.testing.assert_allclose(rotated_scale, scale, rtol=1e-10)
    np.testing.assert_allclose(rotated_shift, shift, rtol=1e-10)
    plain = tiny_model("elastic")
    scaled = models.MattenNet(tiny_config("elastic", output_scale=scale, output_shift=shift))
    batch = batch_of(load("hexagonal-mp-103"))
    expanded_scale = np.repeat(scale, [1, 1] + [5] * 2 + [9])
    expected = plain(batch).detach().numpy() * expanded_scale
    expected[:, :2] += shift
    np.testing.assert_allclose(scaled(batch).detach().numpy(), expected, rtol=1e-12)


def test_bad_batch_is_refused():
    batch = batch_of(load("cubic-mp-101"))
    broken = graphs.GraphBatch(torch.zeros_like(batch.atomic_numbers), batch.edge_index, batch.edge_vectors,
                               batch.batch, batch.node_ptr, batch.edge_ptr)
    with pytest.raises(ValueError, match="atomic_numbers"):
        tiny_model("elastic")(broken)
    with pytest.raises(ValueError, match="GraphBatch"):
        tiny_model("elastic")([batch])


# ---------------------------------------------------------------------------------------------- training
def test_overfits_eight_structures():
    """Random targets with each structure's own point-group symmetry (anything else an equivariant model cannot
    reach) are learned to a small fraction of their variance within a few hundred CPU steps."""
    structure_list = sorted(all_structures(), key=len)[:8]
    spec = properties.get("elastic")
    rng = np.random.default_rng(0)
    targets = []
    for structure in structure_list:
        random_tensor = tensors.irreps_to_cartesian(rng.normal(size=21), spec.formula)
        targets.append(tensors.cartesian_to_irreps(symmetry.symmetrize(random_tensor, structure), spec.formula))
    targets = np.array(targets)
    scale, shift = model_config.fit_output_normalisation("elastic", targets)
    graph_list = [graphs.build_graph(s, R_CUT) for s in structure_list]
    config = ModelConfig(
        "elastic", hidden_irreps="8x0o+8x0e+4x1o+4x1e+4x2o+4x2e", readout_irreps="8x0e+8x2e+8x4e", n_radial=6,
        radial_hidden=(16,), species_dim=8, avg_num_neighbors=graphs.average_neighbors(graph_list),
        output_scale=scale, output_shift=shift,
    )
    model = models.MattenNet(config)
    batch = model.attach_geometry(graphs.GraphBatch.collate(graph_list))
    target = torch.tensor(targets, dtype=torch.float32)
    weight = 1 / model.output_scale**2  # per-block normalised squared error
    steps = 300
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-2, total_steps=steps)
    for _ in range(steps):
        loss = (((model(batch) - target) ** 2) * weight).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        final = float((((model(batch) - target) ** 2) * weight).mean())
    assert final < 1e-3  # from ~1 at the start (unit-normalised targets)


def test_initialisation_is_seeded():
    first = models.MattenNet(tiny_config("dielectric", seed=4))
    again = models.MattenNet(tiny_config("dielectric", seed=4))
    other = models.MattenNet(tiny_config("dielectric", seed=5))
    batch = batch_of(load("hexagonal-mp-103"))
    assert torch.equal(first(batch), again(batch))
    assert not torch.equal(first(batch), other(batch))


# ------------------------------------------------------------------------------------------------ config
def test_config_json_round_trip():
    for config in (tiny_config("piezo", output_scale=(1.0, 2.0, 3.0, 4.0), seed=3),
                   ModelConfig.matten_reference("elastic"), ModelConfig("phonon")):
        text = config.to_json()
        assert ModelConfig.from_json(text) == config
        assert ModelConfig.from_json(text).to_json() == text
        assert json.loads(text)["format"] == model_files.CONFIG_FORMAT


def test_defaults_are_resolved_into_the_saved_config():
    assert ModelConfig("elastic", n_layers=np.int64(3), r_cut=5).to_json() == \
        ModelConfig("elastic", n_layers=3, r_cut=5.0).to_json()  # numpy and int inputs: plain JSON numbers
    config = json.loads(ModelConfig("elastic").to_json())
    assert config["l_max"] == 4 and config["readout_irreps"] == "16x0e+16x2e+16x4e"
    assert json.loads(ModelConfig("dielectric").to_json())["l_max"] == 2


@pytest.mark.parametrize("text, message", [
    ("not json", "JSON"),
    ("[1, 2]", "object"),
    (json.dumps({"format": "zoo.models.ModelConfig/0", "property": "elastic"}), "format"),
    (json.dumps({**json.loads(ModelConfig("elastic").to_json()), "dropout": 0.1}), "unknown fields"),
])
def test_config_json_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_json(text)


@pytest.mark.parametrize("property_name, overrides, message", [
    ("elasticity", {}, "unknown property"),
    ("elastic", {"head": "voigt"}, "head"),
    ("phonon", {"head": "invariant_voigt"}, "invariant"),
    ("elastic", {"r_cut": -5.0}, "r_cut"),
    ("elastic", {"n_layers": 0}, "n_layers"),
    ("elastic", {"radial_hidden": (8, 0)}, "radial_hidden"),
    ("elastic", {"hidden_irreps": "sixteen scalars"}, "hidden_irreps"),
    ("elastic", {"hidden_irreps": "4x1o"}, "0e"),
    ("elastic", {"readout_irreps": "8x0e+8x2e"}, "readout_irreps"),
    ("dielectric", {"readout_irreps": "8x0e+8x2e+8x1o"}, "unread"),
    ("piezo", {"n_layers": 1}, "cannot come out"),
    ("elastic", {"l_max": -1}, "l_max"),
    ("elastic", {"dtype": "float16"}, "dtype"),
    ("elastic", {"seed": -1}, "seed"),
    ("elastic", {"output_scale": (1.0, 2.0)}, "output_scale"),
    ("elastic", {"output_shift": 3.0}, "output_shift"),
    ("elastic", {"output_shift": ("a", "b")}, "output_shift"),
    ("elastic", {"output_scale": (1.0, 1.0, 1.0, 1.0, 0.0)}, "positive"),
    ("phonon", {"output_scale": (1.0,) * 51}, "tensor properties"),
])
def test_config_errors(property_name, overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(property_name, **overrides)


def test_lean_e3nn_import_defers_sympy_and_e3nn_legendre_still_works():
    """zoo.nn.e3nn_import: importing the models pulls in neither sympy nor torch._dynamo (0.5 s and 1.5-2.5 s of a
    cold zoo.load), and e3nn's sympy-built Legendre code, which the deferral touches, still gives e3nn's spherical
    harmonics (its sympy-free ones, compared in the same directions). A fresh process: here sympy is imported."""
    script = """
import sys
import torch
from zoo.nn import models
from e3nn import o3
print(sorted(m for m in ("sympy", "torch._dynamo") if m in sys.modules))
alpha, beta = torch.linspace(0.1, 6.0, 7, dtype=torch.float64), torch.linspace(0.05, 3.0, 7, dtype=torch.float64)
from_legendre = o3.spherical_harmonics_alpha_beta([0, 1, 2, 3, 4], alpha, beta)
direct = o3.spherical_harmonics([0, 1, 2, 3, 4], o3.angles_to_xyz(alpha, beta), normalize=True)
import sympy
print(float((from_legendre - direct).abs().max()), type(sympy.pi).__module__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, check = done.stdout.strip().splitlines()[-2:]
    difference, pi_module = check.split()
    assert imported == "[]"
    assert float(difference) < 1e-12 and pi_module.startswith("sympy.")

"""Species embeddings (zoo.nn.species): the descriptor table, and models built with each embedding kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pymatgen.core.periodic_table import Element
from scipy.spatial.transform import Rotation

from zoo.core import tensors
from zoo.nn import models, species
from zoo.nn.model_config import ModelConfig
from tests.test_models import batch_of, generic_structure, relative_error, tiny_config, transformed

LANTHANIDES = [Element.from_Z(z).symbol for z in range(58, 72)]  # Ce..Lu
ALKALI = ["Li", "Na", "K", "Rb", "Cs"]


def nearest(symbol: str, among: range = range(1, 104)) -> str:
    table = species.descriptor_table()
    z = Element(symbol).Z
    others = [other for other in among if other != z]
    distances = [np.linalg.norm(table[other] - table[z]) for other in others]
    return Element.from_Z(others[int(np.argmin(distances))]).symbol


def test_descriptor_table_is_complete_and_standardised():
    table = species.descriptor_table()
    assert table.shape == (species.MAX_ATOMIC_NUMBER + 1, len(species.DESCRIPTORS))
    assert np.isfinite(table).all() and not table.flags.writeable
    assert np.all(table[0] == 0)  # no element 0
    binary = [i for i, name in enumerate(species.DESCRIPTORS) if name.startswith("block_")]
    continuous = [i for i in range(table.shape[1]) if i not in binary]
    np.testing.assert_allclose(table[1:, continuous].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(table[1:, continuous].std(axis=0), 1.0, atol=1e-12)


@pytest.mark.parametrize("symbol, family", [*((s, LANTHANIDES) for s in LANTHANIDES[1:-1]),
                                            *((s, ALKALI + ["Fr"]) for s in ALKALI)])
def test_a_rare_element_lands_next_to_its_chemical_neighbours(symbol, family):
    """The reason for the descriptors: a lanthanide seen in few training records starts beside the other
    lanthanides, an alkali metal beside the alkali metals."""
    assert nearest(symbol) in family


def test_valence_electrons_follow_the_periodic_table():
    table = species.descriptor_table()
    std = {b: np.std([species._valence_electrons(Element.from_Z(z))[b] for z in range(1, 104)]) for b in "spdf"}
    assert {b: species._valence_electrons(Element("Fe"))[b] for b in "spdf"} == {"s": 2, "p": 0, "d": 6, "f": 0}
    assert {b: species._valence_electrons(Element("Ga"))[b] for b in "spdf"} == {"s": 2, "p": 1, "d": 10, "f": 0}
    assert std["d"] > 0 and table.shape[1] == len(set(species.DESCRIPTORS))


@pytest.mark.parametrize("kind", species.SPECIES_EMBEDDINGS)
def test_every_embedding_kind_keeps_the_model_equivariant(kind):
    model = models.MattenNet(tiny_config("elastic", species_embedding=kind))
    rotation = Rotation.random(random_state=5).as_matrix()
    structure = generic_structure()
    output = model.predict_cartesian(batch_of(structure))[0]
    rotated = model.predict_cartesian(batch_of(transformed(structure, rotation)))[0]
    assert float(output.norm()) > 1e-3
    assert relative_error(rotated, tensors.rotate(output, torch.from_numpy(rotation))) < 1e-5


def test_descriptors_are_saved_with_the_weights_and_the_correction_starts_at_zero():
    model = models.MattenNet(tiny_config("elastic", species_embedding="descriptors+learned"))
    state = model.state_dict()
    np.testing.assert_array_equal(state["embedding.descriptors"].numpy(), species.descriptor_table())
    assert float(state["embedding.correction.weight"].abs().max()) == 0.0
    # A model saved with other descriptor numbers (another pymatgen) keeps its own on loading.
    changed = {**state, "embedding.descriptors": state["embedding.descriptors"] + 1.0}
    fresh = models.MattenNet(tiny_config("elastic", species_embedding="descriptors+learned"))
    fresh.load_state_dict(changed, strict=True)
    assert torch.equal(fresh.embedding.descriptors, changed["embedding.descriptors"])


def test_learned_embedding_keeps_the_weight_names_of_older_models():
    assert "embedding.table.weight" in models.MattenNet(tiny_config("elastic")).state_dict()


def test_config_round_trip_and_older_configs_read_as_learned():
    config = tiny_config("dielectric", species_embedding="descriptors")
    assert ModelConfig.from_json(config.to_json()) == config
    older = json.loads(tiny_config("elastic").to_json())
    del older["species_embedding"]  # written before the field existed
    assert ModelConfig.from_json(json.dumps(older)).species_embedding == "learned"
    with pytest.raises(ValueError, match="species_embedding"):
        tiny_config("elastic", species_embedding="one-hot")

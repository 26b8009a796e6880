"""A raw record's structure field (cif, poscar, ase-dict, pymatgen-dict) -> a pymatgen Structure, or a CleanIssue."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar

from zoo.data.records import is_unreadable
from zoo.data.cleaning.params import CleanIssue


# --------------------------------------------------------------------------------------------- structures
def parse_structure(field_value: Any) -> tuple[Structure, list[str]]:
    """A raw record's ``structure`` field -> (pymatgen Structure, parser warnings). Raises CleanIssue.

    Formats: 'cif' (one structure; pymatgen's CifParser, cell as written, not reduced), 'poscar', 'ase-dict'
    ({numbers, positions (Cartesian, A), cell (rows, A), pbc}, periodic in all three directions) and
    'pymatgen-dict' (``Structure.as_dict()``).
    """
    if not isinstance(field_value, Mapping) or "format" not in field_value or field_value.get("data") is None:
        raise CleanIssue("missing_field", "structure must be an object with 'format' and 'data'")
    fmt, data = field_value["format"], field_value["data"]
    if is_unreadable(data):
        raise CleanIssue("unparsable_structure", f"fetch could not read it: {data.get('error')}")
    parsers: dict[str, Callable[[Any], Structure]] = {
        "cif": _from_cif, "poscar": _from_poscar, "ase-dict": _from_ase_dict, "pymatgen-dict": _from_pymatgen_dict,
    }
    if fmt not in parsers:
        raise CleanIssue("unparsable_structure", f"unknown structure format {fmt!r}; known: {sorted(parsers)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = parsers[fmt](data)
        except CleanIssue:
            raise
        except Exception as exc:  # parsers fail with many exception types on malformed text
            raise CleanIssue("unparsable_structure", f"{fmt}: {type(exc).__name__}: {exc}") from None
    not_elements = sorted({str(sp) for sp in structure.species if isinstance(sp, DummySpecies)})
    if not_elements:
        raise CleanIssue("unknown_element", f"species that are not chemical elements: {not_elements}")
    if not structure.is_ordered:
        raise CleanIssue("unparsable_structure", "partially occupied sites; tensors need an ordered crystal")
    if not (np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.frac_coords).all()):
        raise CleanIssue("unparsable_structure", "lattice or coordinates contain NaN or infinite values")
    if structure.volume <= 1e-6:
        raise CleanIssue("unparsable_structure", f"degenerate lattice (volume {structure.volume:.3g} A^3)")
    return structure, sorted({str(w.message) for w in caught})


def _require_text(data: Any, fmt: str) -> str:
    if not isinstance(data, str) or not data.strip():
        raise CleanIssue("unparsable_structure", f"{fmt} data must be non-empty text, got {type(data).__name__}")
    return data


def _from_cif(data: Any) -> Structure:
    structures = CifParser.from_str(_require_text(data, "cif")).parse_structures(primitive=False)
    if len(structures) != 1:
        raise CleanIssue("unparsable_structure", f"cif holds {len(structures)} structures, expected one")
    return structures[0]


def _from_poscar(data: Any) -> Structure:
    return Poscar.from_str(_require_text(data, "poscar")).structure


def _from_ase_dict(data: Any) -> Structure:
    if not isinstance(data, Mapping) or not {"numbers", "positions", "cell", "pbc"} <= set(data):
        raise CleanIssue("unparsable_structure", "ase-dict must have numbers, positions, cell and pbc")
    if list(data["pbc"]) != [True, True, True]:
        raise CleanIssue("unparsable_structure", f"ase-dict pbc is {data['pbc']!r}: a crystal is periodic in 3D")
    numbers = list(data["numbers"])
    if any(isinstance(z, bool) or not isinstance(z, int) for z in numbers):
        raise CleanIssue("unparsable_structure", "ase-dict numbers must be integers")
    unknown = sorted({z for z in numbers if not 1 <= z <= len(Element)})
    if unknown:
        raise CleanIssue("unknown_element", f"atomic numbers that are no element: {unknown}")
    positions = np.asarray(data["positions"], dtype=np.float64)
    if positions.shape != (len(numbers), 3):
        raise CleanIssue("unparsable_structure", f"ase-dict has {len(numbers)} numbers but positions {positions.shape}")
    return Structure(Lattice(np.asarray(data["cell"], dtype=np.float64)), numbers, positions, coords_are_cartesian=True)


def _from_pymatgen_dict(data: Any) -> Structure:
    if not isinstance(data, Mapping):
        raise CleanIssue("unparsable_structure", "pymatgen-dict data must be an object")
    return Structure.from_dict(dict(data))

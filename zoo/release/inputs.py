"""What `ZooModel.predict` accepts, checked before any model runs: one exception type, `InputError`.

Inputs: a pymatgen Structure, an ASE Atoms, a path to a structure file (CIF, POSCAR/CONTCAR, or any format
pymatgen's ``Structure.from_file`` reads), or CIF/POSCAR text (a string with line breaks). Each is read and
checked; the first problem raises `InputError` naming the input (its index in the list, or its file) and the
problem, so a nonsense structure never reaches the network and never comes back as a number:

    file_*              a missing file, a directory or device, a file above `InputLimits.max_file_bytes` (checked
                        from its size before a byte is parsed), unreadable or undecodable bytes, or text pymatgen
                        cannot parse
    empty, too_many_atoms   no sites, or more than `InputLimits.max_atoms`
    dummy_species       a site holding a pymatgen DummySpecies (such as 'X'), not an element
    disordered          partially occupied or mixed sites: the networks need one element per site
    non_finite          NaN or infinite lattice or coordinates
    volume              a degenerate cell, or less volume per atom than `InputLimits.min_volume_per_atom_a3`
    overlapping_atoms   two sites (periodic images included) closer than `InputLimits.min_interatomic_distance_a`,
                        by default the validate stage's ``min_interatomic_distance_a`` (params.yaml), so the models
                        refuse what the datasets would have quarantined
    isolated_atom       an atom with no neighbour within the model's cutoff (`check_neighbours`, once the graph
                        is built): the network would see it as alone in vacuum

Everything here is cheap next to a prediction: a neighbour search within a fraction of an angstrom per structure.
Importing this module imports nothing beyond the standard library (``zoo.InputError`` stays cheap).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# A structure file of 10,000 atoms is about 1 MB of CIF text; ten times that is no structure a model here serves.
MAX_FILE_BYTES = 10 * 2**20
MAX_ATOMS = 10_000
# The densest solids hold one atom per 5.6 A^3 (diamond; the smallest volume per atom in all four datasets is 5.63).
# Less than half that is no solid at any pressure a Materials Project calculation uses.
MIN_VOLUME_PER_ATOM_A3 = 2.5
_CIF_TEXT = re.compile(r"^\s*(data_|_cell_length_a)", re.MULTILINE)
_POSCAR_NAMES = re.compile(r"(POSCAR|CONTCAR)|\.(vasp|poscar)$", re.IGNORECASE)
_COMPRESSED = (".gz", ".bz2", ".xz", ".lzma", ".z")  # read by pymatgen (the size limit applies to the compressed file)


class InputError(ValueError):
    """An input that cannot be predicted; `structure` names it (index or file), `problem` is a short code (module
    docstring) and the message says what is wrong."""

    def __init__(self, structure: str, problem: str, message: str):
        super().__init__(f"{structure}: {message}")
        self.structure, self.problem, self.message = structure, problem, message

    def __reduce__(self):  # picklable (e.g. across a process pool), though __init__ takes three arguments
        return type(self), (self.structure, self.problem, self.message)


@functools.cache
def validated_min_distance() -> float:
    """The validate stage's ``min_interatomic_distance_a`` (params.yaml, through zoo.core.config)."""
    from zoo.core import config

    return float(config.load_section("validate").min_interatomic_distance_a)


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """The bounds `check_structure` applies (module docstring); min_interatomic_distance_a None means the
    validate stage's value (`validated_min_distance`)."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_atoms: int = MAX_ATOMS
    min_volume_per_atom_a3: float = MIN_VOLUME_PER_ATOM_A3
    min_interatomic_distance_a: float | None = None

    @property
    def min_distance(self) -> float:
        return validated_min_distance() if self.min_interatomic_distance_a is None else \
            self.min_interatomic_distance_a


# ------------------------------------------------------------------------------------------------ reading
def read_structures(items: Sequence[Any], limits: InputLimits = InputLimits()) -> list[tuple[str, Any]]:
    """(label, pymatgen Structure) for each input, each checked with `check_structure`; InputError for the first
    that cannot be predicted."""
    from pymatgen.core import IStructure

    out = []
    for position, item in enumerate(items):
        if isinstance(item, IStructure):
            label, structure = f"structures[{position}] ({item.composition.reduced_formula})", item
        elif isinstance(item, str) and "\n" in item:
            label = f"structures[{position}] (text)"
            structure = _parse_text(item, label, limits)
        elif isinstance(item, (str, os.PathLike)):
            label = str(item) if len(str(item)) < 256 else f"structures[{position}] ({str(item)[:40]}...)"
            structure = _read_file(Path(item), label, limits)
        elif _is_ase_atoms(item):
            from pymatgen.io.ase import AseAtomsAdaptor

            label = f"structures[{position}] ({item.get_chemical_formula()})"
            structure = _parsed(lambda: AseAtomsAdaptor.get_structure(item), label, "ASE Atoms")
        else:
            raise InputError(f"structures[{position}]", "type", "must be a pymatgen Structure, an ASE Atoms, a path "
                             f"to a CIF/POSCAR file or CIF/POSCAR text, got {type(item).__name__}")
        check_structure(label, structure, limits)
        out.append((label, structure))
    return out


def _read_file(path: Path, label: str, limits: InputLimits):
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(label, "file_missing", "no such file") from None
    except OSError as err:  # a name too long, a component that is not a folder, no permission
        raise InputError(label, "file_unreadable", f"not a readable file ({err.strerror or err}); CIF or POSCAR "
                         "text must contain line breaks") from None
    if path.is_dir():
        raise InputError(label, "file_is_directory", "is a directory, not a structure file")
    if not path.is_file():
        raise InputError(label, "file_not_regular", "is not a regular file (a device, socket or pipe)")
    if status.st_size > limits.max_file_bytes:
        raise InputError(label, "file_too_large", f"is {status.st_size / 2**20:.1f} MiB, above the "
                         f"{limits.max_file_bytes / 2**20:g} MiB limit for a structure file (InputLimits.max_file_bytes)")
    fmt = "cif" if path.suffix.lower() in (".cif", ".mcif") else "poscar" if _POSCAR_NAMES.search(path.name) else None
    if fmt is None or path.suffix.lower() in _COMPRESSED:  # pymatgen recognises the format (and compression) by name
        return _parsed(lambda: _from_file(path), label, "structure file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)  # bounded even if the file grew since the stat
    except OSError as err:
        raise InputError(label, "file_unreadable", f"cannot be read ({err.strerror or err})") from None
    if len(data) > limits.max_file_bytes:
        raise InputError(label, "file_too_large", f"is above the {limits.max_file_bytes / 2**20:g} MiB limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(label, "file_unparsable", f"is not a text {fmt.upper()} file (not UTF-8)") from None
    return _parsed(lambda: _from_str(text, fmt), label, f"{fmt.upper()} structure")


def _parse_text(text: str, label: str, limits: InputLimits):
    if len(text) > limits.max_file_bytes:
        raise InputError(label, "file_too_large", f"is {len(text) / 2**20:.1f} MiB of text, above the "
                         f"{limits.max_file_bytes / 2**20:g} MiB limit")
    fmt = "cif" if _CIF_TEXT.search(text) else "poscar"
    return _parsed(lambda: _from_str(text, fmt), label, f"{fmt.upper()} text")


def _from_str(text: str, fmt: str):
    from pymatgen.core import Structure

    return Structure.from_str(text, fmt=fmt)


def _from_file(path: Path):
    from pymatgen.core import Structure

    return Structure.from_file(path)


def _parsed(parse, label: str, what: str):
    try:
        with warnings.catch_warnings():  # pymatgen warns about every oddity; failures are reported below
            warnings.simplefilter("ignore")
            structure = parse()
    # pymatgen's parsers raise many types (ValueError, IndexError, KeyError, ...) on malformed input; any of them
    # means "not a readable structure", said in one line naming the input.
    except Exception as err:  # noqa: BLE001
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(label, "file_unparsable", f"not a readable {what} ({reason})") from None
    if structure is None or len(structure) == 0:
        raise InputError(label, "empty", f"the {what} holds no atoms")
    return structure


def _is_ase_atoms(item) -> bool:
    try:
        from ase import Atoms
    except ImportError:  # ase is optional: without it no input can be an Atoms
        return False
    return isinstance(item, Atoms)


# ------------------------------------------------------------------------------------------------- checks
def check_structure(label: str, structure, limits: InputLimits = InputLimits()) -> None:
    """InputError (module docstring) unless `structure` is an ordered crystal of real elements with finite
    coordinates, a physical volume per atom and no two sites closer than the minimum distance."""
    import numpy as np
    from pymatgen.core.periodic_table import DummySpecies

    n_atoms = len(structure)
    if n_atoms == 0:
        raise InputError(label, "empty", "has no sites")
    if n_atoms > limits.max_atoms:
        raise InputError(label, "too_many_atoms", f"has {n_atoms} sites, above the limit of {limits.max_atoms} "
                         "(InputLimits.max_atoms)")
    for index, site in enumerate(structure):
        dummy = [str(species) for species in site.species if isinstance(species, DummySpecies)]
        if dummy:
            raise InputError(label, "dummy_species", f"site {index} holds the dummy species {dummy[0]}, not an "
                             "element")
        if not site.is_ordered:
            raise InputError(label, "disordered", f"site {index} is partially occupied or mixed "
                             f"({site.species.formula}); give an ordered structure (e.g. an ordered supercell)")
    lattice = np.asarray(structure.lattice.matrix, dtype=np.float64)
    if not np.isfinite(lattice).all():
        raise InputError(label, "non_finite", "the lattice holds NaN or infinite values")
    if not np.isfinite(np.asarray(structure.frac_coords, dtype=np.float64)).all():
        raise InputError(label, "non_finite", "the atomic coordinates hold NaN or infinite values")
    volume = abs(float(np.linalg.det(lattice)))
    if not volume > 0:
        raise InputError(label, "volume", "the lattice vectors are linearly dependent (cell volume 0)")
    if volume / n_atoms < limits.min_volume_per_atom_a3:
        raise InputError(label, "volume", f"has {volume / n_atoms:.3g} A^3 per atom, below the physical bound of "
                         f"{limits.min_volume_per_atom_a3:g} A^3 (the densest solid, diamond, has 5.7)")
    _check_distances(label, structure, limits.min_distance)


def _check_distances(label: str, structure, min_distance: float) -> None:
    # pymatgen's neighbour list reports every pair closer than the radius, coincident sites (distance 0) and a
    # site's own periodic images included; only the site with itself at distance 0 is left out.
    centres, neighbours, _, distances = structure.get_neighbor_list(min_distance)
    if len(distances):
        closest = int(distances.argmin())
        i, j = int(centres[closest]), int(neighbours[closest])
        what = f"site {i} ({structure[i].species_string}) and its own periodic image" if i == j else \
            f"sites {i} ({structure[i].species_string}) and {j} ({structure[j].species_string})"
        raise InputError(label, "overlapping_atoms", f"{what} are {float(distances[closest]):.3g} A apart, closer "
                         f"than {min_distance:g} A (validate's min_interatomic_distance_a): overlapping atoms")


def check_neighbours(label: str, structure, receivers, r_cut: float) -> None:
    """InputError if an atom has no neighbour within `r_cut` (receivers: the receiving atom of every edge of its
    graph, zoo.nn.graphs conventions)."""
    import numpy as np

    counts = np.bincount(np.asarray(receivers, dtype=np.int64), minlength=len(structure))
    lonely = np.flatnonzero(counts == 0)
    if len(lonely):
        atom = int(lonely[0])
        raise InputError(label, "isolated_atom", f"atom {atom} ({structure[atom].species_string}) has no neighbour "
                         f"within the model's cutoff of {r_cut:g} A ({len(lonely)} such atom(s)): an isolated atom in "
                         "vacuum is outside what the model describes")

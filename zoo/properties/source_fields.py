"""Where a property's values come from: the snapshot files' fields and the Materials Project API's documents that
a PropertySpec (zoo.properties.spec, which re-exports these names) maps onto raw records, and the citations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


# ------------------------------------------------------------------------------------------ source mappings
@dataclass(frozen=True)
class RawValue:
    """A value of the property's raw records (``values.<key>``, schemas/raw-record.schema.json): numbers of `shape`
    (or the unreadable marker; null too where `nullable`)."""

    key: str
    shape: tuple[int, ...]
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class SnapshotField:
    """One field of a raw record read from a snapshot CSV column.

    key     the raw record's key (under ``values`` or ``reported``)
    column  the CSV column (the key of a JSON-lines object)
    kind    'tensor' (JSON nested list of `shape`), 'number', 'integer', 'boolean', 'text' (stripped, None when
            empty) or 'meta_point_group' (the point group inside a Python-literal 'meta' column); in a JSON-lines
            file 'json_tensor' (nested list of `shape`) or 'json_text'
    """

    key: str
    column: str
    kind: str = "number"
    shape: tuple[int, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class SnapshotSource:
    """Where a property's records are in the pinned offline snapshot (``zoo.data.sources.snapshot`` reads them).

    layout  'matminer': one CSV row per record, material_id and formula columns, the structure as a POSCAR;
            'ase-table': the structure as a Python-literal ASE dict, material ids recovered in `ids_file` (by row),
            trailing rows excluded as the manifest says; 'cif-jsonl' / 'sites-jsonl': one JSON object per line
            with material_id (and formula) keys, the structure as a CIF ('cif') or as lattice rows, symbols and
            Cartesian sites ('lattice_angstrom', 'species', 'cart_coords_angstrom')
    frames  the frame the source claims for each value key (checked by clean, not trusted)
    record_tag  prefix of the record_id key of a file's rows ('elatbot-row-00042'); the first file of a property
            keeps the bare 'row-NNNNN' of release 1.0.0
    """

    file: str
    layout: str
    values: tuple[SnapshotField, ...]
    frames: Mapping[str, str] = field(default_factory=dict)
    reported: tuple[SnapshotField, ...] = ()
    ids_file: str | None = None
    record_tag: str = ""


@dataclass(frozen=True)
class MPValue:
    """A value of a raw record from a served Materials Project document: the nested list at `field` (dotted), of
    `shape`, times `scale` (unit conversion); an optional value is null when the document has none."""

    key: str
    field: str
    shape: tuple[int, ...]
    scale: float | None = None
    optional: bool = False


@dataclass(frozen=True)
class MPSpectrum:
    """A spectrum served as (frequencies, densities) lists, averaged onto `grid` (``mp_api.resample_dos``) after
    multiplying the frequencies by `to_grid_units`, then max-normalised: values `grid_key` (the grid) and
    `values_key`."""

    frequencies: str
    densities: str
    grid_key: str
    values_key: str
    grid: np.ndarray
    to_grid_units: float


@dataclass(frozen=True)
class MPSource:
    """How ``zoo.data.sources.mp_api`` reads a property from the Materials Project API.

    route, fields          the REST route paged (or looked up per task) and the fields asked for
    values                 record values read from each document (MPValue), or `spectrum`
    frames                 the frame emmet serves each value in
    reported               record name -> dotted document field, kept for cross-checks
    structure_from_summary the route's documents carry no structure: each page's structures are looked up in
                           materials/summary by material id
    task_ids_field         documents are tasks listed per material in this materials/summary field (by method);
                           the listing pages summary with has_props=`has_props`, each page's tasks of the selected
                           method are looked up in `route` by identifier, filtered on `method_criterion`
    """

    route: str
    fields: tuple[str, ...]
    values: tuple[MPValue, ...] = ()
    frames: Mapping[str, str] = field(default_factory=dict)
    reported: Mapping[str, str] = field(default_factory=dict)
    structure_from_summary: bool = False
    spectrum: MPSpectrum | None = None
    task_ids_field: str | None = None
    has_props: str | None = None
    method_criterion: str | None = None


@dataclass(frozen=True)
class Citation:
    """A source of a property's data: bibliography key, a line on what it contributes, BibTeX."""

    key: str
    note: str
    bibtex: str


MATERIALS_PROJECT = Citation(
    "materialsproject2013",
    "Jain et al., APL Mater. 1, 011002 (2013): the Materials Project",
    """@article{materialsproject2013,
  author  = {Jain, Anubhav and Ong, Shyue Ping and Hautier, Geoffroy and Chen, Wei and Richards, William Davidson
             and Dacek, Stephen and Cholia, Shreyas and Gunter, Dan and Skinner, David and Ceder, Gerbrand and
             Persson, Kristin A.},
  title   = {Commentary: The Materials Project: A materials genome approach to accelerating materials innovation},
  journal = {APL Materials},
  volume  = {1},
  number  = {1},
  pages   = {011002},
  year    = {2013},
  doi     = {10.1063/1.4812323}
}""",
)

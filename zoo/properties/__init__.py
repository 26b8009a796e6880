"""One module per property, each holding everything property-specific: the single place that says what it is.

Every stage loops over ``PROPERTIES`` and reads the spec (``zoo.properties.spec.PropertySpec``: fields and hook
methods); no other module branches on a property's name. Tensor conventions (Voigt order and factors, irreps basis)
live in ``zoo.core.tensors``; a spec only names which of them a property uses.
"""

from __future__ import annotations

import difflib

from zoo.properties.dielectric import DIELECTRIC
from zoo.properties.elastic import ELASTIC
from zoo.properties.phonon import CM_PER_THZ, PHONON, PHONON_GRID_CM
from zoo.properties.piezo import PIEZO
from zoo.properties.spec import PropertySpec

PROPERTIES: dict[str, PropertySpec] = {spec.name: spec for spec in (ELASTIC, DIELECTRIC, PIEZO, PHONON)}


def get(name: str) -> PropertySpec:
    """The spec called `name`; a ValueError with the known names (and a close match) otherwise."""
    try:
        return PROPERTIES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), PROPERTIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}.{hint}") from None


__all__ = ["CM_PER_THZ", "DIELECTRIC", "ELASTIC", "PHONON", "PHONON_GRID_CM", "PIEZO", "PROPERTIES", "PropertySpec",
           "get"]

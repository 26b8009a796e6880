"""The datasets' user API: ``zoo.datasets.load(name)`` and the row helpers (implemented in ``zoo.data.datasets``)."""

from zoo.data.datasets import load, row_structure, row_tensor

__all__ = ["load", "row_structure", "row_tensor"]

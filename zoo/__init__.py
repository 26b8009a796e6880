"""mp-tensor-zoo: validated, irreps-decomposed Materials Project tensor datasets and the models that predict them.

``zoo.load("matten-elastic").predict(structure)`` (zoo.release.loading) is the entry point for users; importing the
package stays cheap: the loader and its torch/pymatgen imports come in on first use. `InputError` (a ValueError) is
what `predict` raises for an input it refuses (zoo.release.inputs).
"""

from zoo.release.inputs import InputError


def load(name: str, version: str | None = None, **options):
    """A released model by name (see ``zoo.release.loading.load`` for the options and errors)."""
    from zoo.release.loading import load as _load

    return _load(name, version, **options)


__all__ = ["InputError", "load"]

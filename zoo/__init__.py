"""mp-tensor-zoo: validated, irreps-decomposed Materials Project tensor datasets and the models that predict them.

``zoo.load("matten-elastic").predict(structure)`` (zoo.release.loading) is the entry point for users; importing the
package stays cheap: the loader and its torch/pymatgen imports come in on first use. `InputError` (a ValueError) is
what `predict` raises for an input it refuses (zoo.release.inputs).
"""


def load(name: str, version: str | None = None, **options):
    """A released model by name (see ``zoo.release.loading.load`` for the options and errors)."""
    from zoo.release.loading import load as _load

    return _load(name, version, **options)


def __getattr__(name: str):
    # `zoo.InputError` without importing the release layer with every `import zoo.<anything>` (the stages import
    # zoo.core, zoo.data, ...: their DVC deps must not grow by zoo/release).
    if name == "InputError":
        from zoo.release.inputs import InputError

        return InputError
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = ["InputError", "load"]

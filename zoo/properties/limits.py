"""Where a model's prediction leaves what it was trained to do: small functions that return a warning string for a
structure (and its prediction), or None. ``zoo.release.loading`` puts every warning on ``Prediction.warnings``; the
evaluate stage measures on the test split how often the phonon grid warning is right (zoo.nn.evaluation).

likely_metal        dielectric: the training data are DFPT dielectric tensors of insulators and semiconductors (a
                    gap is needed for a finite dielectric constant); a metal's static permittivity is not defined,
                    and the model, which sees only the structure, has no notion of a band gap. Heuristic, documented:
                    every element of the composition is a metal (pymatgen ``Element.is_metal``). On the dielectric
                    snapshot (all records have a gap) it flags 15 of 1,049 accepted records, all Zintl phases,
                    half-Heuslers or aurides (e.g. Li3Bi, ScNiBi, CsAu): the false-alarm rate of the rule on
                    semiconductors of that kind.
beyond_phonon_grid  phonon: the model predicts the DOS on 0..1000 cm^-1 only (PHONON_GRID_CM, Chen et al.'s grid),
                    but many spectra extend higher (diamond's optical phonons reach 1332 cm^-1, X-H stretches
                    2000-3700 cm^-1): the DOS above 1000 cm^-1 is missing from the prediction, so its mean frequency
                    and C_V are those of the truncated spectrum. Flagged when the structure contains hydrogen, or when
                    the predicted max-normalised DOS at the last grid point is at least GRID_EDGE_THRESHOLD.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.properties import PHONON_GRID_CM

# Predicted max-normalised DOS at 1000 cm^-1 from which a spectrum is taken to continue past the grid. How well the
# warning finds the test records whose true DOS is non-zero at 1000 cm^-1 is in the phonon metrics
# (grid_warning_recall, grid_warning_precision).
GRID_EDGE_THRESHOLD = 0.05


def likely_metal(structure: Any) -> str | None:
    """A warning when every element of `structure` is a metal (module docstring), else None."""
    elements = structure.composition.elements
    if not all(element.is_metal for element in elements):
        return None
    formula = structure.composition.reduced_formula
    return (f"{formula} may be a metal (every element is a metal): the dielectric model was trained on insulators and "
            "semiconductors and cannot see a band gap; a metal has no finite dielectric constant, so these numbers "
            "are meaningless for it (Zintl phases and half-Heusler semiconductors also trigger this warning)")


def has_hydrogen(structure: Any) -> bool:
    return any(element.symbol == "H" for element in structure.composition.elements)


def beyond_phonon_grid(structure: Any, dos: np.ndarray) -> str | None:
    """A warning when the phonon DOS of `structure` (predicted, max-normalised on PHONON_GRID_CM) likely extends
    past the grid's end (module docstring), else None."""
    top = f"{PHONON_GRID_CM[-1]:g} cm^-1"
    if has_hydrogen(structure):
        reason = "it contains hydrogen (X-H stretching modes lie far above)"
    elif float(np.asarray(dos)[-1]) >= GRID_EDGE_THRESHOLD:
        reason = f"the predicted DOS is still {float(np.asarray(dos)[-1]):.2f} of its maximum at {top}"
    else:
        return None
    return (f"the phonon spectrum of {structure.composition.reduced_formula} likely extends beyond the model's grid "
            f"(0-{top}): {reason}; modes above {top} are missing from the predicted DOS and from its mean frequency "
            "and heat capacity")


# The checks each property's predictions get: property name -> (code, function (structure, raw prediction) ->
# message or None). The code is the module docstring's name of the check.
CHECKS = {
    "dielectric": (("likely_metal", lambda structure, raw: likely_metal(structure)),),
    "phonon": (("beyond_phonon_grid", beyond_phonon_grid),),
}


def prediction_warnings(property_name: str, structure: Any, raw: np.ndarray) -> list[str]:
    """The warnings of one prediction (`raw`: the Voigt form, or the max-normalised DOS) as 'code: message', in a
    fixed order."""
    return [f"{code}: {message}" for code, check in CHECKS.get(property_name, ())
            if (message := check(structure, raw)) is not None]

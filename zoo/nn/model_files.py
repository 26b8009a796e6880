"""The files of a trained model and the schema of its config.json: what training writes and what a load accepts.

A model folder holds ``model.safetensors`` (the weights) and ``config.json``, written by
``zoo.nn.training.save_model`` in format ``MODEL_FORMAT``::

    format_version   "mp-tensor-zoo/model/1"
    model_name       e.g. "matten-elastic"
    property         a zoo.properties name; irreps, formula, units and target_part repeat that spec's facts
    target_column    the dataset column the model predicts
    model_config     the zoo.nn.models.ModelConfig fields (its JSON, with "format": CONFIG_FORMAT)
    ensemble_seeds   (optional) the member seeds of an Ensemble, two or more distinct
    ensemble_parts   (optional) the parts each member predicts, when members predict different parts
    target_columns   (optional) the dataset columns of every predicted part; parts: the parts a prediction holds
    training         the training settings (profile and zoo.nn.training.TrainSettings; a record, not read back)
    dataset          {name, version, fingerprint} of the training data
    weights          {file: "model.safetensors", sha256}
    training_data    (optional; written since this module exists, absent from the 1.0.0 releases) the training
                     split's applicability domain, ``training_domain``: n_structures, element_counts (structures
                     containing each element), volume_per_atom_a3 and density_g_cm3 as [min, max]

``check_config`` checks every field's type and range before anything is built from it, so a corrupted or edited
config is refused with one line naming the field, never turned into a network that hangs, exhausts memory or
predicts nonsense. The ranges are those of a model this project can train and serve on a CPU (each has its
reason below); a config outside them was not written by our training code. This module imports no torch: the CLI
reads configs without loading a network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zoo import properties

MODEL_FORMAT = "mp-tensor-zoo/model/1"
CONFIG_FORMAT = "zoo.models.ModelConfig/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "training_log.json"

REQUIRED_KEYS = ("format_version", "model_name", "property", "irreps", "formula", "units", "target_column",
                 "target_part", "model_config", "training", "dataset", "weights")
OPTIONAL_KEYS = ("ensemble_seeds", "training_data", "target_columns", "parts", "ensemble_parts")
MODEL_CONFIG_KEYS = ("format", "property", "head", "r_cut", "n_radial", "cutoff_power", "hidden_irreps",
                     "readout_irreps", "l_max", "n_layers", "species_dim", "radial_hidden", "avg_num_neighbors",
                     "invariant_hidden", "output_scale", "output_shift", "dtype", "seed")
# ModelConfig fields added after the 1.0.0 releases (absent there: their defaults apply, see ModelConfig.from_json:
# an older config reads as species embedding 'learned', the target part alone, output map 'linear')
MODEL_CONFIG_OPTIONAL_KEYS = ("species_embedding", "parts", "output_map")
# The heads, species embeddings (zoo.nn.species) and output maps zoo.nn.models builds (here, without torch, so that
# the CLI can check a config).
HEADS = ("equivariant", "invariant_voigt", "equivariant_spd")
SPECIES_EMBEDDINGS = ("learned", "descriptors", "descriptors+learned")
OUTPUT_MAPS = ("linear", "spd_log")

# Ranges of the ModelConfig fields a served model may have. MatTen (REFERENCE.md) uses r_cut 5 A, l_max 4,
# 3 layers, 8 radial functions, multiplicities up to 32; the bounds leave room above that while keeping one
# prediction within seconds and megabytes on a CPU.
R_CUT_MAX_A = 10.0  # graph size grows as r_cut^3: 8x MatTen's edges at 10 A; 1e6 A would never finish
L_MAX_MAX = 8  # e3nn's spherical harmonics stop at 12; the tensor products grow as l^3 beyond our 4
INT_RANGES = {"n_radial": (1, 64), "cutoff_power": (1, 16), "n_layers": (1, 8), "species_dim": (1, 1024),
              "invariant_hidden": (1, 1024), "l_max": (0, L_MAX_MAX), "seed": (0, 2**63 - 1)}
RADIAL_HIDDEN_MAX = (4, 1024)  # at most 4 hidden layers of at most 1024 units
IRREPS_MAX_MULTIPLICITY = 1024  # total multiplicity of hidden or readout irreps (MatTen's hidden: 118)
# Mean neighbours per atom within r_cut: at least one (a message-passing model of isolated atoms is no model),
# at most what the densest solid packs within the largest r_cut: diamond's 5.7 A^3/atom gives 4/3 pi 10^3 / 5.7
# = 735 at 10 A. The copied folder with 1e-9 here predicted a bulk modulus of 7e21 GPa.
AVG_NEIGHBOURS_RANGE = (1.0, 1000.0)
OUTPUT_NORMALISATION_MAX = 1e6  # |scale|, |shift| in the property's units: far above any tensor in the data
MAX_ENSEMBLE_SIZE = 16
_IRREPS_TERM = re.compile(r"(?:(\d+)x)?(\d+)([eo])")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_ELEMENT = re.compile(r"[A-Z][a-z]?")
AMU_A3_TO_G_CM3 = 1.66053906660  # 1 amu per A^3 in g/cm^3 (CODATA 2018)


class ConfigError(ValueError):
    """A config.json that this code does not accept (the message names the file and the field)."""


def _fail(where: str, field: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {field} {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_mapping(value, where: str, field: str, keys: Sequence[str], optional: Sequence[str] = ()) -> None:
    if not isinstance(value, Mapping):
        raise _fail(where, field, f"must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(keys) - set(optional))
    missing = sorted(set(keys) - set(value))
    if unknown or missing:
        raise _fail(where, field, f"has unknown keys {unknown} and lacks {missing}" if unknown and missing else
                    f"has unknown keys {unknown} (known: {sorted({*keys, *optional})})" if unknown else
                    f"lacks the keys {missing}")


def irreps_multiplicity(text: Any, where: str, field: str, l_max: int = L_MAX_MAX) -> int:
    """The total multiplicity of an e3nn irreps string such as '16x0e+8x1o' (ConfigError if malformed or out of
    range). Parsed here, without e3nn, so that a config is checked before anything is built from it."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(where, field, f"must be an irreps string such as '16x0e+8x1o', got {text!r}")
    total = 0
    for term in text.replace(" ", "").split("+"):
        match = _IRREPS_TERM.fullmatch(term)
        if match is None:
            raise _fail(where, field, f"must be an irreps string such as '16x0e+8x1o', got {text!r}")
        multiplicity, degree = int(match.group(1) or 1), int(match.group(2))
        if degree > l_max:
            raise _fail(where, field, f"has degree l = {degree} above the limit {l_max}")
        total += multiplicity
    if not 1 <= total <= IRREPS_MAX_MULTIPLICITY:
        raise _fail(where, field, f"has total multiplicity {total}, outside 1..{IRREPS_MAX_MULTIPLICITY}")
    return total


def _check_numbers(value, where: str, field: str, length: int | None, positive: bool) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise _fail(where, field, f"must be a list of finite numbers or null, got {value!r}")
    if length is not None and len(value) != length:
        raise _fail(where, field, f"must have {length} entries, got {len(value)}")
    if any(abs(v) > OUTPUT_NORMALISATION_MAX or (positive and v <= 0) for v in value):
        raise _fail(where, field, f"must lie in {'(0' if positive else f'[-{OUTPUT_NORMALISATION_MAX:g}'}, "
                    f"{OUTPUT_NORMALISATION_MAX:g}], got {value!r}")


def check_model_config(config: Any, where: str, prop: str) -> None:
    """Types and ranges of the model_config object (ModelConfig then checks how the fields fit together)."""
    field = "model_config"
    _check_mapping(config, where, field, MODEL_CONFIG_KEYS, MODEL_CONFIG_OPTIONAL_KEYS)
    spec = properties.get(prop)
    if config.get("output_map", "linear") not in OUTPUT_MAPS:
        raise _fail(where, f"{field}.output_map", f"must be one of {OUTPUT_MAPS}, got {config['output_map']!r}")
    parts = config.get("parts") or [spec.target_part]
    if not isinstance(parts, list) or not parts or not all(part in spec.tensor_parts for part in parts):
        raise _fail(where, f"{field}.parts", f"must be a list of parts of {prop} {list(spec.tensor_parts)}, got "
                    f"{config.get('parts')!r}")
    if config["format"] != CONFIG_FORMAT:
        raise _fail(where, f"{field}.format", f"must be {CONFIG_FORMAT!r}, got {config['format']!r}")
    if config["property"] != prop:
        raise _fail(where, f"{field}.property", f"is {config['property']!r} but the model's property is {prop!r}")
    if config["head"] not in HEADS:
        raise _fail(where, f"{field}.head", f"must be one of {', '.join(HEADS)}, got {config['head']!r}")
    if config.get("species_embedding", SPECIES_EMBEDDINGS[0]) not in SPECIES_EMBEDDINGS:
        raise _fail(where, f"{field}.species_embedding", f"must be one of {', '.join(SPECIES_EMBEDDINGS)}, got "
                    f"{config['species_embedding']!r}")
    if config["dtype"] not in ("float32", "float64"):
        raise _fail(where, f"{field}.dtype", f"must be 'float32' or 'float64', got {config['dtype']!r}")
    for name, (low, high) in INT_RANGES.items():
        if not _is_int(config[name]) or not low <= config[name] <= high:
            raise _fail(where, f"{field}.{name}", f"must be an integer in {low}..{high}, got {config[name]!r}")
    if not _is_number(config["r_cut"]) or not 0 < config["r_cut"] <= R_CUT_MAX_A:
        raise _fail(where, f"{field}.r_cut", f"must be a number of angstroms in (0, {R_CUT_MAX_A:g}], got "
                    f"{config['r_cut']!r}")
    low, high = AVG_NEIGHBOURS_RANGE
    if not _is_number(config["avg_num_neighbors"]) or not low <= config["avg_num_neighbors"] <= high:
        raise _fail(where, f"{field}.avg_num_neighbors", f"must be a number in [{low:g}, {high:g}], got "
                    f"{config['avg_num_neighbors']!r}")
    widths = config["radial_hidden"]
    depth, width = RADIAL_HIDDEN_MAX
    if not isinstance(widths, list) or len(widths) > depth or not all(_is_int(w) and 1 <= w <= width for w in widths):
        raise _fail(where, f"{field}.radial_hidden", f"must be a list of at most {depth} integers in 1..{width}, "
                    f"got {widths!r}")
    irreps_multiplicity(config["hidden_irreps"], where, f"{field}.hidden_irreps", config["l_max"])
    irreps_multiplicity(config["readout_irreps"], where, f"{field}.readout_irreps", config["l_max"])
    n_instances = sum(int(m.group(1) or 1) for m in _IRREPS_TERM.finditer(spec.irreps))
    n_scalars = sum(int(m.group(1) or 1) for m in _IRREPS_TERM.finditer(spec.irreps) if m.group(2, 3) == ("0", "e"))
    tensor = spec.is_tensor
    _check_numbers(config["output_scale"], where, f"{field}.output_scale", n_instances * len(parts) if tensor else 0,
                   True)
    _check_numbers(config["output_shift"], where, f"{field}.output_shift", n_scalars * len(parts) if tensor else 0,
                   False)


def check_config(info: Any, where: str, expected_property: str | None = None) -> dict[str, Any]:
    """config.json's content, every field checked (ConfigError naming `where` and the field otherwise).

    expected_property: the property the registry lists for the model, which the config must state.
    """
    _check_mapping(info, where, "the config", REQUIRED_KEYS, OPTIONAL_KEYS)
    prop = info["property"]
    if prop not in properties.PROPERTIES:
        raise _fail(where, "property", f"must be one of {sorted(properties.PROPERTIES)}, got {prop!r}")
    if expected_property is not None and prop != expected_property:
        raise _fail(where, "property", f"is {prop!r}, but the registry lists this model as {expected_property!r}")
    spec = properties.get(prop)
    for field, expected in (("irreps", spec.irreps), ("formula", spec.formula), ("units", spec.units),
                            ("target_part", spec.target_part)):
        if info[field] != expected:
            raise _fail(where, field, f"is {info[field]!r}; a {prop} model has {expected!r}")
    for field in ("model_name", "target_column"):
        if not isinstance(info[field], str) or not info[field]:
            raise _fail(where, field, f"must be a non-empty string, got {info[field]!r}")
    check_model_config(info["model_config"], where, prop)
    if "ensemble_seeds" in info:
        seeds = info["ensemble_seeds"]
        # members predicting different parts (ensemble_parts) may share a seed: distinct per part group
        groups = info.get("ensemble_parts")
        keys = [(s, str(g)) for s, g in zip(seeds, groups)] if isinstance(seeds, list) and isinstance(groups, list) \
            else seeds
        if (not isinstance(seeds, list) or not 2 <= len(seeds) <= MAX_ENSEMBLE_SIZE
                or not all(_is_int(s) and s >= 0 for s in seeds) or len(set(keys)) != len(keys)):
            raise _fail(where, "ensemble_seeds", f"must be 2..{MAX_ENSEMBLE_SIZE} non-negative integers, distinct "
                        f"(per part group with ensemble_parts), got {seeds!r}")
    if "ensemble_parts" in info:
        groups = info["ensemble_parts"]
        if (not isinstance(groups, list) or len(groups) != len(info.get("ensemble_seeds") or [])
                or not all(isinstance(g, list) and g and all(part in spec.tensor_parts for part in g) for g in groups)):
            raise _fail(where, "ensemble_parts", f"must list the parts of {prop} {list(spec.tensor_parts)} each "
                        f"member predicts, one list per ensemble seed, got {groups!r}")
    if not isinstance(info["training"], Mapping):
        raise _fail(where, "training", f"must be a JSON object, got {type(info['training']).__name__}")
    _check_mapping(info["dataset"], where, "dataset", ("name", "version", "fingerprint"))
    dataset = info["dataset"]
    if dataset["name"] != spec.dataset_name or not isinstance(dataset["version"], str) \
            or not _VERSION.fullmatch(dataset["version"]) or not isinstance(dataset["fingerprint"], str) \
            or not _SHA256.fullmatch(dataset["fingerprint"].removeprefix("sha256:")):
        raise _fail(where, "dataset", f"must name {spec.dataset_name!r}, a version MAJOR.MINOR.PATCH and a "
                    f"'sha256:<64 hex>' fingerprint, got {dataset!r}")
    _check_mapping(info["weights"], where, "weights", ("file", "sha256"))
    if info["weights"]["file"] != WEIGHTS_FILE or not isinstance(info["weights"]["sha256"], str) \
            or not _SHA256.fullmatch(info["weights"]["sha256"]):
        raise _fail(where, "weights", f"must be {{file: {WEIGHTS_FILE!r}, sha256: <64 hex>}}, got {info['weights']!r}")
    if "training_data" in info:
        check_training_domain(info["training_data"], where)
    return dict(info)


# ------------------------------------------------------------------------------------ applicability domain
DOMAIN_KEYS = ("n_structures", "element_counts", "volume_per_atom_a3", "density_g_cm3")


def cell_volume_and_density(lattice: Any, symbols: Sequence[str]) -> tuple[float, float]:
    """(volume per atom in A^3, density in g/cm^3) of a cell: |det lattice| and the summed atomic masses
    (pymatgen's). The one formula the training domain and the inputs checked against it share."""
    import numpy as np
    from pymatgen.core.periodic_table import Element

    volume = abs(float(np.linalg.det(np.asarray(lattice, dtype=np.float64))))
    mass = sum(float(Element(symbol).atomic_mass) for symbol in symbols)
    return volume / len(symbols), mass * AMU_A3_TO_G_CM3 / volume


def training_domain(cells: Iterable[tuple[Any, Sequence[str]]]) -> dict[str, Any]:
    """The applicability domain of a training split from its cells (lattice matrix, element symbol per site):
    how many structures contain each element, and the range of volume per atom and of density."""
    counts: dict[str, int] = {}
    volumes, densities = [], []
    for lattice, symbols in cells:
        for symbol in set(symbols):
            counts[symbol] = counts.get(symbol, 0) + 1
        volume, density = cell_volume_and_density(lattice, symbols)
        volumes.append(volume)
        densities.append(density)
    if not volumes:
        raise ValueError("cells is empty: a training domain needs at least one structure")
    return {"n_structures": len(volumes), "element_counts": dict(sorted(counts.items())),
            "volume_per_atom_a3": [min(volumes), max(volumes)], "density_g_cm3": [min(densities), max(densities)]}


def check_training_domain(domain: Any, where: str) -> None:
    field = "training_data"
    _check_mapping(domain, where, field, DOMAIN_KEYS)
    if not _is_int(domain["n_structures"]) or domain["n_structures"] < 1:
        raise _fail(where, f"{field}.n_structures", f"must be a positive integer, got {domain['n_structures']!r}")
    counts = domain["element_counts"]
    if not isinstance(counts, Mapping) or not counts or not all(
            isinstance(k, str) and _ELEMENT.fullmatch(k) and _is_int(v) and 1 <= v <= domain["n_structures"]
            for k, v in counts.items()):
        raise _fail(where, f"{field}.element_counts", "must map element symbols to counts in 1..n_structures")
    for name in ("volume_per_atom_a3", "density_g_cm3"):
        value = domain[name]
        if not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) and v > 0 for v in value) \
                or value[0] > value[1]:
            raise _fail(where, f"{field}.{name}", f"must be [min, max] with 0 < min <= max, got {value!r}")

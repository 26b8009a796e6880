"""Train/validation/test splits: deterministic, stratified by crystal system, ordered by a hash of the key.

The rule (stated in every dataset card)
    Each record has a key: its ``material_id`` (its ``record_id`` where the material id is unknown). Within one
    stratum (crystal system), records are taken in the order of ``sha256(salt + ":" + key)``. Each record in
    turn goes to the split that is furthest behind its target share, i.e. the split s maximising
    ``f_s * (n + 1) - count_s`` where n records of the stratum are already assigned (ties: train, validation,
    test). This is sequential largest-deficit apportionment: after every record, each split's count in a stratum
    is within one record of f_s times the stratum's size, so every crystal system is spread 80/10/10 up to
    rounding, and the split of a record does not depend on the order records arrive in.

Why pinning exists
    A split that depends only on a record's own hash (u = hash in [0, 1), thresholds 0.8 / 0.9) never moves a
    record when others are added, but its counts are binomial: on the snapshot data a crystal system's share of
    the test split is off by up to 7 percentage points. No rule can have both properties from the keys alone:
    if adding records never moves one, then a record's split in any set equals its split in the set holding
    only itself, so it is a function of its own hash and the counts are binomial again. The balanced rule
    above therefore takes the assignments of a previous release as *pinned*: pinned records keep their split
    (and count towards the stratum's totals); only new records are assigned, in hash order, by the same
    largest-deficit step. With the previous release pinned, adding records never moves one, and the deficits
    the new records fill keep every stratum balanced.

The external split
    Records from a holdout source (``validate.holdout_sources``, ``zoo.data.merging``) are not assigned by the rule:
    they form the ``external`` split, a set of materials that no training source holds, for measuring how a model
    generalises to materials it never saw. Nothing of it is used for training, model selection or early stopping.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Mapping, Sequence

SPLITS: tuple[str, ...] = ("train", "validation", "test")  # assigned by the rule below
EXTERNAL = "external"
ALL_SPLITS: tuple[str, ...] = (*SPLITS, EXTERNAL)  # file and fingerprint order; external only where a holdout is
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
# Balance is only checked (and only meaningful) for strata with at least this many records: the test split of a
# 20-record crystal system holds 2 of them.
MIN_STRATUM_FOR_BALANCE = 20


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """The fractions in SPLITS order, each in (0, 1) and summing to 1; ValueError otherwise."""
    if not isinstance(fractions, Mapping) or set(fractions) != set(SPLITS):
        raise ValueError(f"split fractions must be a mapping with exactly the keys {list(SPLITS)}, got {fractions!r}")
    checked = {}
    for name in SPLITS:
        value = fractions[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"split fraction {name!r} must be a number strictly between 0 and 1, got {value!r}")
        checked[name] = float(value)
    if not math.isclose(sum(checked.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split fractions must sum to 1, got {sum(checked.values()):.12g} from {checked}")
    return checked


def split_hash(key: str, salt: str) -> str:
    """Hex sha256 of ``salt:key``: the order in which a stratum's records are assigned."""
    return hashlib.sha256(f"{salt}:{key}".encode("utf-8")).hexdigest()


def assign_splits(
    keys: Sequence[str],
    strata: Sequence[str],
    salt: str,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    pinned: Mapping[str, str] | None = None,
) -> list[str]:
    """The split of each key (same order as `keys`), by the rule in the module docstring.

    keys     unique non-empty strings (material ids)
    strata   the stratum (crystal system) of each key
    salt     non-empty string mixed into the hash; changing it reshuffles every split
    pinned   key -> split of a previous release; those keys keep their split. Pinned keys absent from `keys`
             (records since removed) are ignored.
    """
    fractions = check_fractions(fractions)
    if not isinstance(salt, str) or not salt:
        raise ValueError(f"salt must be a non-empty string, got {salt!r}")
    keys = list(keys)
    strata = list(strata)
    if len(keys) != len(strata):
        raise ValueError(f"keys and strata must have the same length, got {len(keys)} and {len(strata)}")
    for name, values in (("keys", keys), ("strata", strata)):
        bad = [value for value in values if not isinstance(value, str) or not value]
        if bad:
            raise ValueError(f"{name} must all be non-empty strings, got {bad[0]!r}")
    repeated = [key for key, count in collections.Counter(keys).items() if count > 1]
    if repeated:
        raise ValueError(f"keys must be unique (one split per material), repeated: {sorted(repeated)[:5]}")
    pinned = dict(pinned or {})
    unknown = {split for split in pinned.values() if split not in SPLITS}
    if unknown:
        raise ValueError(f"pinned splits must be one of {list(SPLITS)}, got {sorted(map(str, unknown))}")

    target = [fractions[name] for name in SPLITS]
    assigned: dict[str, str] = {}
    by_stratum: dict[str, list[str]] = collections.defaultdict(list)
    for key, stratum in zip(keys, strata):
        by_stratum[stratum].append(key)
    for stratum_keys in by_stratum.values():
        counts = [0] * len(SPLITS)
        free = []
        for key in stratum_keys:
            if key in pinned:
                assigned[key] = pinned[key]
                counts[SPLITS.index(pinned[key])] += 1
            else:
                free.append(key)
        n = len(stratum_keys) - len(free)
        for key in sorted(free, key=lambda k: (split_hash(k, salt), k)):
            deficits = [share * (n + 1) - count for share, count in zip(target, counts)]
            best = max(range(len(SPLITS)), key=lambda i: (deficits[i], -i))  # ties go to the earlier split
            counts[best] += 1
            n += 1
            assigned[key] = SPLITS[best]
    return [assigned[key] for key in keys]


def composition(strata: Sequence[str], splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts per stratum and split: {stratum: {split: n}}, strata sorted, every split present."""
    counts = collections.Counter(zip(strata, splits))
    return {stratum: {split: counts[stratum, split] for split in SPLITS} for stratum in sorted(set(strata))}


def share_deviations(
    table: Mapping[str, Mapping[str, int]], min_records: int = MIN_STRATUM_FOR_BALANCE
) -> dict[str, dict[str, float]]:
    """For each stratum with at least `min_records` records and each split: its share of the split minus its
    share of the whole dataset, in percentage points (what stratification keeps near 0)."""
    total = sum(sum(row.values()) for row in table.values())
    split_sizes = {split: sum(row.get(split, 0) for row in table.values()) for split in SPLITS}
    out: dict[str, dict[str, float]] = {}
    for stratum, row in table.items():
        size = sum(row.values())
        if size < min_records:
            continue
        overall = size / total
        out[stratum] = {
            split: 100.0 * (row.get(split, 0) / split_sizes[split] - overall) if split_sizes[split] else 0.0
            for split in SPLITS
        }
    return out

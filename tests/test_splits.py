"""The build stage's splits: zoo.data.splits (stratified, salted, pinned to a previous release)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dataset_builds import SALT
from zoo.data import splits

# --------------------------------------------------------------------------------------------------- splits
SNAPSHOT_ELASTIC_SYSTEMS = {"cubic": 452, "hexagonal": 239, "tetragonal": 193, "orthorhombic": 193, "trigonal": 59,
                            "monoclinic": 45}  # crystal systems of the 1,181 snapshot elastic tensors


def _keys_and_strata(sizes: dict[str, int], offset: int = 0) -> tuple[list[str], list[str]]:
    keys, strata = [], []
    for stratum, size in sizes.items():
        for _ in range(size):
            keys.append(f"mp-{offset + len(keys)}")
            strata.append(stratum)
    return keys, strata


def assert_balanced(strata, labels, fractions=splits.DEFAULT_FRACTIONS):
    """Every stratum's count per split within one record of its target; shares within 2 points."""
    table = splits.composition(strata, labels)
    for stratum, row in table.items():
        size = sum(row.values())
        for name in splits.SPLITS:
            assert abs(row[name] - fractions[name] * size) < 1.0 + 1e-9, (stratum, name, row)
    for stratum, deviations in splits.share_deviations(table).items():
        assert max(map(abs, deviations.values())) <= 2.0, (stratum, deviations)


def test_splits_are_stratified_80_10_10_on_the_snapshot_distribution():
    keys, strata = _keys_and_strata(SNAPSHOT_ELASTIC_SYSTEMS)
    labels = splits.assign_splits(keys, strata, SALT)
    assert_balanced(strata, labels)
    sizes = collections.Counter(labels)
    for name in splits.SPLITS:
        assert abs(sizes[name] - splits.DEFAULT_FRACTIONS[name] * 1181) <= len(SNAPSHOT_ELASTIC_SYSTEMS)


def test_a_split_from_each_record_s_own_hash_alone_would_not_be_balanced():
    """Why the rule is sequential: thresholds on a per-record uniform hash give binomial counts, several points
    off on the snapshot distribution (so the 2-point criterion needs the rule zoo.data.splits uses)."""
    keys, strata = _keys_and_strata(SNAPSHOT_ELASTIC_SYSTEMS)
    uniform = [int(splits.split_hash(key, SALT)[:16], 16) / 2**64 for key in keys]
    labels = ["train" if u < 0.8 else "validation" if u < 0.9 else "test" for u in uniform]
    deviations = splits.share_deviations(splits.composition(strata, labels))
    assert max(abs(v) for row in deviations.values() for v in row.values()) > 2.0


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=7), salt=st.text(min_size=1, max_size=8))
def test_every_stratum_is_within_one_record_of_its_target(sizes, salt):
    keys, strata = _keys_and_strata({f"system-{i}": size for i, size in enumerate(sizes)})
    labels = splits.assign_splits(keys, strata, salt)
    table = splits.composition(strata, labels)
    for row in table.values():
        size = sum(row.values())
        for name in splits.SPLITS:
            assert abs(row[name] - splits.DEFAULT_FRACTIONS[name] * size) < 1.0 + 1e-9


def test_split_is_a_function_of_the_set_not_of_the_input_order():
    keys, strata = _keys_and_strata(SNAPSHOT_ELASTIC_SYSTEMS)
    labels = dict(zip(keys, splits.assign_splits(keys, strata, SALT)))
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled = splits.assign_splits([keys[i] for i in order], [strata[i] for i in order], SALT)
    assert dict(zip([keys[i] for i in order], shuffled)) == labels
    other_salt = splits.assign_splits(keys, strata, "another-salt")
    assert other_salt != list(labels.values())


def test_adding_records_moves_none_when_the_previous_release_is_pinned():
    keys, strata = _keys_and_strata(SNAPSHOT_ELASTIC_SYSTEMS)
    first = dict(zip(keys, splits.assign_splits(keys, strata, SALT)))
    rng = np.random.default_rng(2)
    new_keys, new_strata = _keys_and_strata({s: int(rng.integers(1, 40)) for s in SNAPSHOT_ELASTIC_SYSTEMS},
                                            offset=len(keys))
    grown_keys, grown_strata = keys + new_keys, strata + new_strata
    grown = splits.assign_splits(grown_keys, grown_strata, SALT, pinned=first)
    assert dict(zip(keys, grown[: len(keys)])) == first
    assert_balanced(grown_strata, grown)
    # One record at a time, each build pinned to the one before: nothing ever moves.
    stratum_of = dict(zip(grown_keys, grown_strata))
    current = dict(first)
    for key in new_keys[:25]:
        keys_now = [*current, key]
        labels = splits.assign_splits(keys_now, [stratum_of[k] for k in keys_now], SALT, pinned=current)
        assert labels[:-1] == list(current.values())
        current[key] = labels[-1]


def test_pinned_records_absent_now_are_ignored():
    keys, strata = _keys_and_strata({"cubic": 30})
    pinned = dict(zip(keys, splits.assign_splits(keys, strata, SALT)))
    labels = splits.assign_splits(keys[5:], strata[5:], SALT, pinned=pinned)
    assert labels == [pinned[k] for k in keys[5:]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keys": ["a", "a"], "strata": ["x", "x"]}, "unique"),
        ({"keys": ["a"], "strata": ["x", "y"]}, "same length"),
        ({"keys": ["a", None], "strata": ["x", "x"]}, "keys must all be non-empty strings"),
        ({"keys": ["a"], "strata": [""]}, "strata must all be non-empty strings"),
        ({"keys": ["a"], "strata": ["x"], "salt": ""}, "salt"),
        ({"keys": ["a"], "strata": ["x"], "fractions": {"train": 0.8, "test": 0.2}}, "exactly the keys"),
        ({"keys": ["a"], "strata": ["x"], "fractions": {"train": 0.8, "validation": 0.1, "test": 0.2}}, "sum to 1"),
        ({"keys": ["a"], "strata": ["x"], "fractions": {"train": 1.0, "validation": 0.0, "test": 0.0}}, "strictly"),
        ({"keys": ["a"], "strata": ["x"], "pinned": {"a": "holdout"}}, "pinned splits must be one of"),
    ],
)
def test_assign_splits_refuses_bad_input(kwargs, message):
    arguments = {"salt": SALT, **kwargs}
    with pytest.raises(ValueError, match=message):
        splits.assign_splits(**arguments)



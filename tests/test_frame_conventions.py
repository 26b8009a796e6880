"""zoo.data.cleaning.evidence, per-source conventions: the claimed frame breaks a disagreement of holding
conventions, and a documented pool of source files measures a derived-frame convention for a member too small to
measure it alone. Hand-made measurements (RecordFrames) exercise the rules; CleanParams checks the options."""

import dataclasses

import pytest

from zoo.data import cleaning
from zoo.data.cleaning import evidence as frames

CLEAN = dataclasses.replace(cleaning.CleanParams.from_params(), workers=1)
RULES = dataclasses.replace(CLEAN.frame_rules(), convention_min_records=3, claimed_frame_settles=True,
                            convention_pools={})


def measured(classes, residuals=None, claim="ieee", source="s", informative=True, reversed_pairs=()):
    names = [name for members in classes for name in members]
    residuals = residuals or dict.fromkeys(names, 1e-9)
    return frames.RecordFrames(source=source, residuals=residuals, classes=classes, informative=informative,
                               claim=claim, reversed_pairs=reversed_pairs)


def settled_by_both(source="s", claim="ieee"):
    """Settled by Neumann alone ('none' does not fit): it confirms both derived frames and refutes 'none'."""
    return measured([["ieee", "standard"]], {"ieee": 1e-9, "standard": 1e-9, "none": 0.5}, claim, source)


def settled_by(frame, source, claim="ieee"):
    """Settled by Neumann alone, only `frame` among the derived frames gives its tensor."""
    other = "standard" if frame == "ieee" else "ieee"
    return measured([[frame]], {frame: 1e-9, other: 0.5, "none": 0.5}, claim, source)


# ------------------------------------------------------------------------------- claimed frame breaks a tie
def test_the_claimed_frame_settles_where_holding_conventions_disagree():
    confirming = [settled_by_both() for _ in range(3)]
    disagreeing = measured([["ieee"], ["standard"]], claim="ieee")
    decisions, report = frames.decide([*confirming, disagreeing], RULES)
    assert report["conventions"]["s"]["ieee"]["holds"] and report["conventions"]["s"]["standard"]["holds"]
    assert decisions[3] == frames.FrameDecision("settled", "source_convention", "ieee")
    assert report["settled_by_claimed_frame"] == {"s": 1}
    assert report["settled_by_convention"] == {"s": {"ieee": 1}}

    off, report = frames.decide([*confirming, disagreeing], dataclasses.replace(RULES, claimed_frame_settles=False))
    assert off[3].status == "frame_ambiguous" and report["settled_by_claimed_frame"] == {"s": 0}


def test_the_claim_breaks_no_tie_unless_it_holds_and_is_stable_in_the_record():
    confirming = [settled_by_both() for _ in range(3)]
    claims_nothing = measured([["ieee"], ["standard"]], claim="structure")
    claims_unstable = measured([["ieee", "standard"], ["standard@1"], ["ieee@4"]], claim="ieee")
    decisions, _ = frames.decide([*confirming, claims_nothing, claims_unstable], RULES)
    assert decisions[3].status == "frame_ambiguous"
    assert decisions[4].status == "frame_ambiguous"  # both unstable here: no usable convention at all

    # the claimed frame measured and refuted on its source: the disagreement stays open
    refuted = [settled_by("standard", "t") for _ in range(3)] + [settled_by_both("t") for _ in range(3)]
    disagreeing = measured([["ieee"], ["standard"]], claim="ieee", source="t")
    decisions, report = frames.decide([*refuted, disagreeing], RULES)
    assert not report["conventions"]["t"]["ieee"]["holds"] and report["conventions"]["t"]["standard"]["holds"]
    assert decisions[6] == frames.FrameDecision("settled", "source_convention", "standard")  # one holding: as before


def test_a_convention_still_does_not_reverse_the_claimed_polarity_when_the_claim_does_not_hold():
    """The polarity exception is untouched: 'standard' holds alone (the claim 'ieee' is refuted) and gives the
    reverse sense of the claimed frame, so nothing settles, with or without the tie rule."""
    confirming = [settled_by("standard", "s") for _ in range(3)]
    opposite = measured([["ieee"], ["standard"]], claim="ieee", reversed_pairs=[(0, 1)])
    for claimed_frame_settles in (True, False):
        decisions, _ = frames.decide([*confirming, opposite],
                                     dataclasses.replace(RULES, claimed_frame_settles=claimed_frame_settles))
        assert decisions[3].status == "frame_ambiguous"


# ------------------------------------------------------------------------------------------- pooled measurement
POOLED = dataclasses.replace(RULES, claimed_frame_settles=False, convention_pools={"p": ("big", "small")})


def test_a_small_member_of_a_pool_takes_the_pools_measurement():
    big = [settled_by("standard", "big") for _ in range(4)]
    small_settled = settled_by("standard", "small")  # one tested record: too few alone
    small_open = measured([["none"], ["standard"]], claim="ieee", source="small")
    records = [*big, small_settled, small_open]

    alone, report = frames.decide(records, dataclasses.replace(POOLED, convention_pools={}))
    assert alone[5].status == "frame_ambiguous" and not report["conventions"]["small"]["standard"]["holds"]

    decisions, report = frames.decide(records, POOLED)
    assert decisions[5] == frames.FrameDecision("settled", "source_convention", "standard")
    pool = report["convention_pools"]["p"]
    assert pool["members"] == ["big", "small"]
    assert (pool["standard"]["confirmed"], pool["standard"]["refuted"], pool["standard"]["holds"]) == (5, 0, True)
    small = report["conventions"]["small"]["standard"]
    assert (small["confirmed"], small["refuted"], small["holds"], small["pool"]) == (1, 0, True, "p")
    assert "pool" not in report["conventions"]["big"]["standard"]  # enough records: its own measurement stands
    assert report["settled_by_pooled_convention"] == {"big": 0, "small": 1}


def test_a_pool_lends_nothing_its_numbers_or_the_members_own_records_do_not_support():
    # the member's own tested record refutes the pool's convention
    big = [settled_by("standard", "big") for _ in range(4)]
    contrary = settled_by("ieee", "small")
    small_open = measured([["none"], ["standard"]], claim="ieee", source="small")
    decisions, report = frames.decide([*big, contrary, small_open], POOLED)
    assert report["convention_pools"]["p"]["standard"]["agreement"] == pytest.approx(0.8)
    assert decisions[5].status == "frame_ambiguous"
    assert report["conventions"]["small"]["standard"]["holds"] is False

    # 'none' never pools: a file's Cartesian setting is its own
    big_none = [measured([["none"]], {"none": 1e-9, "ieee": 0.5, "standard": 0.5}, "ieee", "big") for _ in range(4)]
    small_open = measured([["none"], ["standard"]], claim="ieee", source="small", informative=False)
    decisions, report = frames.decide([*big_none, small_open], POOLED)
    assert report["conventions"]["big"]["none"]["holds"]
    assert "pool" not in report["conventions"]["small"]["none"] and "none" not in report["convention_pools"]["p"]
    assert decisions[4].status == "frame_ambiguous"


def test_pools_and_the_tie_rule_together_settle_a_small_files_disagreements():
    """The mp-elastic-extra case: the big file measures both derived frames, the small one too few; a record of the
    small file where they disagree is settled by its claimed frame, measured on the pool."""
    big = [settled_by_both("big") for _ in range(4)]
    small_open = measured([["ieee"], ["standard"]], claim="ieee", source="small")
    decisions, report = frames.decide([*big, small_open], dataclasses.replace(POOLED, claimed_frame_settles=True))
    assert decisions[4] == frames.FrameDecision("settled", "source_convention", "ieee")
    assert report["settled_by_claimed_frame"]["small"] == 1 and report["settled_by_pooled_convention"]["small"] == 1


# ------------------------------------------------------------------------------------------------- the options
def test_params_are_read_from_params_yaml_and_checked():
    assert CLEAN.claimed_frame_settles is True
    assert CLEAN.convention_pools["mp-elastic-extra"] == ("mp-elastic-extra/elatbot_val.jsonl",
                                                          "mp-elastic-extra/straintensornet_val.jsonl")
    assert CLEAN.frame_rules().convention_pools == CLEAN.convention_pools
    with pytest.raises(ValueError, match="at least two source files"):
        dataclasses.replace(CLEAN, convention_pools={"p": ["a.csv"]})
    with pytest.raises(ValueError, match="in two pools"):
        dataclasses.replace(CLEAN, convention_pools={"p": ["a.csv", "b.csv"], "q": ["b.csv", "c.csv"]})
    with pytest.raises(ValueError, match="true or false"):
        dataclasses.replace(CLEAN, claimed_frame_settles="yes")

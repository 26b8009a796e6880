"""Frame evidence: in which frame a source's tensor is, relative to its structure, and on what evidence.

A tensor record is useful only if its orientation relative to its structure is known. The clean stage measures
candidate frames (``zoo.data.cleaning``): each candidate is a rotation M that would bring the tensor as given into
the structure's Cartesian frame, T_c = rotate(T, M), and its Neumann residual r_c
(``zoo.core.symmetry.neumann_residual``, the worst of a record's parts) says how well T_c obeys the structure's
point group. This module decides which candidate, if any, the data settle. It never breaks a tie by an order.

Candidates
    none        the tensor as given (M = I);
    ieee        the tensor read in the IEEE 176 frame (``zoo.core.symmetry.ieee_rotation``);
    standard    the tensor read in the frame of spglib's standardised conventional cell;
    original    a second source column of the same tensor, claimed in the structure frame (elastic:
                ``stiffness_voigt_original``): a source field, stored only when the primary column fits nowhere.
    ieee@k, standard@k   stability variants (below).

Stability of the derived frames. 'ieee' and 'standard' are built by spglib from the structure. When a crystal's
    point group is a proper subgroup of its lattice's symmetry (zinc blende -43m in a cubic lattice, R3m in a
    rhombohedral one), several conventional cells are equally standard, and spglib's pick among them can turn on
    digits the data do not have: the matminer snapshot prints lattices to 1e-6 A. So each derived frame is also
    built for the structure under ``stability_strain`` (a relative strain of each Voigt component, both signs: 12
    pure strains, no rotation); a build whose rotation differs from the unstrained one by more than rounding is a
    candidate of its own, named ``<frame>@<k>``. A derived frame is *stable* in a record when every variant gives
    the same tensor (same class, below); an unstable one names no tensor, so it settles nothing.

Classes: materially different tensors. A candidate is *consistent* when r_c <= ``symmetrize_max_residual`` (the
    noise bound the clean stage projects away). Consistent candidates are grouped into classes: two candidates are
    the same tensor when their projections onto the point-group-invariant tensors (``symmetry.symmetrize``) differ
    by at most ``distinct_rtol`` of the record's norm. The projection removes what the point group absorbs (a
    rotation in the group, noise); what remains distinguishes a sign flip, an axis permutation or any rotation in
    the group's normaliser but not in the group. The zero tensor (e.g. piezo in a centrosymmetric crystal) is one
    class whatever the candidates.

Evidence, in this order; the first that applies settles the record ('frame_evidence'):
    unique            one class: every consistent candidate gives the same tensor (Neumann's principle alone).
    source_field      the class holding 'original', the source's own structure-frame column; the primary column
                      is stored in that frame when one of its candidates is in the class.
    margin            one class fits far better than every other: the runner-up class's best residual is above
                      ``neumann_rtol`` and at least ``margin_factor`` times the best.
    source_convention a candidate frame the record's source (``source_key``: its provenance file, else its source)
                      was measured to use: on that source's records settled above where not every candidate gave
                      the settled tensor, it was consistent, stable and in the settled class in at least
                      ``convention_min_agreement`` of them, and there were at least ``convention_min_records`` of
                      them. It settles a record where it is consistent and stable, unless another holding convention
                      gives another tensor, or the frame the source claims (``tensor_frames``, e.g. 'ieee') is
                      consistent and stable and of opposite sense (``classify``: one reverses the other's polar axis
                      or negates its tensor). Why that exception: the records Neumann's principle settles test a
                      convention's axes (the alternatives it beat do not fit), never the sense of a polar axis (the
                      reversed frame fits as well), so a measured convention does not overrule the source's own
                      claim on a polarity. Measured on the matminer piezo file: the spglib standard frame gives the
                      settled tensor in 139 of the 140 records that test it (the IEEE frame as pymatgen builds it
                      today: 50), but in the Li2SiO3-type wurtzite superstructures the two fit with opposite
                      polarity, and those records stay frame_ambiguous.
    as_given          'none' is consistent, the test was informative (the point group has an operation that acts on
                      the tensor: not the identity, nor the inversion for an even rank; point group 1, or -1 for
                      elastic and dielectric, constrains nothing) and the source claims no other frame ('structure',
                      'unknown' or none): a source that says its tensor is IEEE-framed fits as given only where its
                      frame and the structure's differ by an operation Neumann's principle cannot see (measured on the
                      matminer elastic file, whose IEEE column the structure-frame column settles: as given was right
                      in 45 of the 256 records where several frames fit). It is also off for a source where the
                      source field or a margin settled records against it (more than 1 - ``convention_min_agreement``
                      of those where it applied).
    Otherwise, with two or more classes: 'frame_ambiguous' (validate quarantines it with the candidates and
    residuals); with no consistent candidate: 'unresolved' (no frame explains the tensor; validate's Neumann check
    quarantines it).

Within the settled class the stored candidate is the evidence's own (the convention's, 'none' for as_given), else
    'none' when it fits within ``neumann_rtol``, else the smallest residual: any member gives the same tensor up to
    ``distinct_rtol``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

from zoo.core import symmetry

BASE_CANDIDATES = ("none", "ieee", "standard", "original")
DERIVED_FRAMES = ("ieee", "standard")
# Candidates a per-source convention may name ('original' is a source field, not a frame convention).
CONVENTION_CANDIDATES = ("none", "ieee", "standard")
EVIDENCE = ("unique", "source_field", "margin", "source_convention", "as_given")
SETTLED, FRAME_AMBIGUOUS, UNRESOLVED = "settled", "frame_ambiguous", "unresolved"
VARIANT_SEPARATOR = "@"

# Voigt order of the strain components the stability check applies, each with both signs.
_VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# Two builds of a derived frame are the same choice when their rotations agree to this (a strain of 1e-7 moves a
# rotation by ~1e-7; another conventional cell moves it by O(1)).
_SAME_ROTATION_ATOL = 1e-4
_IDENTITY_ATOL = 1e-6


@dataclass(frozen=True)
class FrameRules:
    """The thresholds of the frame decision (CleanParams.frame_rules: params.yaml's symmetry and clean sections)."""

    neumann_rtol: float
    symmetrize_max_residual: float
    distinct_rtol: float
    margin_factor: float
    convention_min_agreement: float
    convention_min_records: int
    stability_strain: float


def base_name(candidate: str) -> str:
    """'standard@3' -> 'standard'."""
    return candidate.split(VARIANT_SEPARATOR, 1)[0]


def _candidate_order(candidate: str) -> tuple[int, int]:
    name, _, index = candidate.partition(VARIANT_SEPARATOR)
    return BASE_CANDIDATES.index(name), int(index) if index else -1


def source_key(provenance: Mapping[str, Any] | None) -> str:
    """The source a record comes from, for per-source conventions: its provenance file, else its source."""
    provenance = provenance or {}
    return str(provenance.get("file") or provenance.get("source") or "unknown")


# ------------------------------------------------------------------------------------------ candidates
def stability_strains(amplitude: float) -> list[np.ndarray]:
    """The 12 pure strains (symmetric 3x3) of the stability check: each Voigt component, +amplitude then -."""
    strains = []
    for sign in (1.0, -1.0):
        for i, j in _VOIGT_PAIRS:
            strain = np.zeros((3, 3))
            strain[i, j] = strain[j, i] = sign * amplitude
            strains.append(strain)
    return strains


def _strained(structure: Structure, strain: np.ndarray) -> Structure:
    """The structure under a pure strain (lattice rows a -> (I + strain) a; fractional coordinates kept)."""
    return Structure(Lattice(structure.lattice.matrix @ (np.eye(3) + strain)), structure.species,
                     structure.frac_coords)


def candidate_rotations(structure: Structure, builders: Mapping[str, Callable[[Structure], np.ndarray]],
                        strain: float) -> dict[str, np.ndarray]:
    """Candidate name -> rotation M applied to the tensor as given (T_c = rotate(T, M)).

    builders: derived frame name -> function giving S (structure frame -> that frame; ValueError when it cannot be
    built). M = S^T. With strain > 0, every build under ``stability_strains(strain)`` whose rotation differs from
    the unstrained one (and from every earlier variant) is a candidate '<name>@<k>'.
    """
    rotations = {"none": np.eye(3)}
    strained = [_strained(structure, s) for s in stability_strains(strain)] if strain > 0 else []
    for name, build in builders.items():
        try:
            rotations[name] = build(structure).T
        except ValueError:
            continue  # a frame that cannot be built for this structure is no candidate
        seen = [rotations[name]]
        for k, other in enumerate(strained):
            try:
                rotation = build(other).T
            except ValueError:
                continue
            if all(np.abs(rotation - known).max() > _SAME_ROTATION_ATOL for known in seen):
                rotations[f"{name}{VARIANT_SEPARATOR}{k}"] = rotation
                seen.append(rotation)
    return rotations


def is_informative(info: symmetry.SymmetryInfo, rank: int) -> bool:
    """Whether Neumann's principle constrains a rank-`rank` tensor under this point group at all: some operation
    other than the identity (and, for an even rank, other than the inversion, which acts on it as the identity)."""
    trivial = [np.eye(3)] if rank % 2 else [np.eye(3), -np.eye(3)]
    return any(min(np.abs(op - t).max() for t in trivial) > _IDENTITY_ATOL for op in info.cartesian_rotations)


def classify(rotations: Mapping[str, np.ndarray], rotated: Mapping[str, Mapping[str, np.ndarray]],
             residuals: Mapping[str, float], info: symmetry.SymmetryInfo,
             rules: FrameRules) -> tuple[list[list[str]], list[tuple[int, int]]]:
    """The consistent candidates grouped by the tensor they give (module docstring), best-fitting first, and the
    pairs of groups (i < j) of opposite sense: one group's frame reverses the other's polar axis
    (``symmetry.polar_axis``), or its tensor is the other's negative.

    rotations / rotated / residuals: candidate -> rotation M applied to the tensor as given / {part: Cartesian
    tensor in the structure frame} / residual.
    """
    consistent = sorted((name for name in rotated if residuals[name] <= rules.symmetrize_max_residual),
                        key=lambda name: (residuals[name], _candidate_order(name)))
    if not consistent:
        return [], []
    norm = max(float(np.linalg.norm(part)) for part in rotated[consistent[0]].values())
    projected = {name: {key: symmetry.symmetrize(part, info) for key, part in rotated[name].items()}
                 for name in consistent}

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], sign: float = 1.0) -> float:
        return max(float(np.linalg.norm(a[key] - sign * b[key])) for key in a)

    classes: list[list[str]] = []
    for name in consistent:
        for members in classes:
            if distance(projected[name], projected[members[0]]) <= rules.distinct_rtol * norm:
                members.append(name)
                break
        else:
            classes.append([name])
    axis = symmetry.polar_axis(info)

    def opposite(first: str, second: str) -> bool:
        if distance(projected[first], projected[second], -1.0) <= rules.distinct_rtol * norm:
            return True
        relative = rotations[second] @ rotations[first].T  # T_second = rotate(T_first, relative)
        return axis is not None and float(axis @ relative @ axis) < 0.0

    heads = [members[0] for members in classes]
    reversed_pairs = [(i, j) for i in range(len(heads)) for j in range(i + 1, len(heads))
                      if opposite(heads[i], heads[j])]
    return classes, reversed_pairs


# --------------------------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class RecordFrames:
    """What the decision needs from one measured tensor record."""

    source: str
    residuals: Mapping[str, float]
    classes: Sequence[Sequence[str]]
    informative: bool
    claim: str | None = None  # the frame the source claims for the tensor ('ieee', 'structure', 'unknown', None)
    reversed_pairs: Sequence[tuple[int, int]] = ()  # pairs of classes of opposite sense (classify)

    def class_of(self, candidate: str) -> int | None:
        return next((i for i, members in enumerate(self.classes) if candidate in members), None)

    def stable(self, candidate: str) -> bool:
        """Consistent, and every stability variant gives the same tensor."""
        return self.class_of(candidate) is not None and not self.unstable(candidate)

    def unstable(self, candidate: str) -> bool:
        """The derived frame `candidate` names no one tensor: its consistent builds (the unstrained one and the
        stability variants) fall in two or more classes, or only a strained build fits. A build that fits nowhere
        competes with nothing."""
        homes = {self.class_of(name) for name in self.residuals if base_name(name) == candidate} - {None}
        return len(homes) > 1 or (bool(homes) and self.class_of(candidate) is None)

    def candidates_json(self) -> str:
        """The candidates, their residuals and classes (null: inconsistent), for the clean row."""
        return json.dumps([{"candidate": name, "residual": float(self.residuals[name]), "class": self.class_of(name)}
                           for name in sorted(self.residuals, key=_candidate_order)], separators=(",", ":"))


@dataclass(frozen=True)
class FrameDecision:
    status: str  # SETTLED, FRAME_AMBIGUOUS or UNRESOLVED
    evidence: str | None = None  # one of EVIDENCE when settled
    candidate: str | None = None  # the stored candidate when settled


def _pick(members: Sequence[str], residuals: Mapping[str, float], rules: FrameRules,
          named: str | None = None) -> str:
    if named in members:
        return named
    if "none" in members and residuals["none"] <= rules.neumann_rtol:
        return "none"
    return min(members, key=lambda name: (residuals[name], _candidate_order(name)))


def _measured_evidence(record: RecordFrames, rules: FrameRules) -> FrameDecision | None:
    """unique, source_field or margin (the record's own measurements), an unresolved record, or None."""
    classes, residuals = record.classes, record.residuals
    if not classes:
        return FrameDecision(UNRESOLVED)
    if len(classes) == 1:
        return FrameDecision(SETTLED, "unique", _pick(classes[0], residuals, rules))
    home = record.class_of("original")
    if home is not None:
        primary = [name for name in classes[home] if base_name(name) != "original"]
        return FrameDecision(SETTLED, "source_field", _pick(primary, residuals, rules) if primary else "original")
    best = sorted(min(residuals[name] for name in members) for members in classes)
    if best[1] > rules.neumann_rtol and best[1] >= rules.margin_factor * best[0]:
        return FrameDecision(SETTLED, "margin", _pick(classes[0], residuals, rules))
    return None


def _as_given_applies(record: RecordFrames) -> bool:
    """'none' is consistent, the point group constrains the tensor, and the source does not claim another frame."""
    return record.informative and record.class_of("none") is not None and record.claim not in DERIVED_FRAMES


def _tally(records: Sequence[RecordFrames], decisions: Sequence[FrameDecision | None], candidate: str) -> Counter:
    """How `candidate` fared as a convention on the records already settled: 'confirmed' where it was stable and
    gave the settled tensor, 'refuted' where not; records in which every candidate gives the settled tensor test
    nothing and are skipped."""
    counts: Counter = Counter()
    for record, decision in zip(records, decisions):
        if decision is None or decision.status != SETTLED or candidate not in record.residuals:
            continue
        decided = record.class_of(decision.candidate)
        if all(record.class_of(name) == decided for name in record.residuals if base_name(name) != "original"):
            continue
        counts["confirmed" if record.stable(candidate) and record.class_of(candidate) == decided else "refuted"] += 1
    return counts


def _agreement(counts: Counter) -> float | None:
    total = counts["confirmed"] + counts["refuted"]
    return counts["confirmed"] / total if total else None


def _conventions(records: Sequence[RecordFrames], decisions: Sequence[FrameDecision | None],
                 rules: FrameRules) -> dict[str, dict[str, Any]]:
    table = {}
    for candidate in CONVENTION_CANDIDATES:
        counts = _tally(records, decisions, candidate)
        agreement = _agreement(counts)
        table[candidate] = {
            "confirmed": counts["confirmed"], "refuted": counts["refuted"], "agreement": agreement,
            "holds": agreement is not None and agreement >= rules.convention_min_agreement
            and counts["confirmed"] + counts["refuted"] >= rules.convention_min_records}
    return table


def _by_convention(record: RecordFrames, holding: Sequence[str]) -> str | None:
    """The convention that settles the record: consistent and stable here, agreeing with every other holding
    convention that is, and not giving the negative of the tensor of the frame the source claims (module
    docstring: a convention is measured on axes, never on the sense of a polar direction)."""
    usable = [c for c in holding if record.stable(c)]
    if not usable or len({record.class_of(c) for c in usable}) != 1:
        return None
    home, claimed = record.class_of(usable[0]), record.class_of(record.claim) if record.claim else None
    if claimed is not None and record.stable(record.claim) and tuple(sorted((home, claimed))) in record.reversed_pairs:
        return None
    return usable[0]


def _as_given_check(records: Sequence[RecordFrames], decisions: Sequence[FrameDecision | None],
                    rules: FrameRules) -> dict[str, Any]:
    """How the as_given rule fared on the records the source field or a margin settled (module docstring)."""
    counts: Counter = Counter()
    for record, decision in zip(records, decisions):
        if decision is not None and decision.evidence in ("source_field", "margin") and _as_given_applies(record):
            counts["agree" if record.class_of("none") == record.class_of(decision.candidate) else "disagree"] += 1
    fraction = _agreement(Counter(confirmed=counts["agree"], refuted=counts["disagree"]))
    return {"agree": counts["agree"], "disagree": counts["disagree"],
            "allowed": fraction is None or fraction >= rules.convention_min_agreement}


def decide(records: Sequence[RecordFrames], rules: FrameRules) -> tuple[list[FrameDecision], dict[str, Any]]:
    """The frame decision of every record, and the report of the evidence (module docstring)."""
    decisions: list[FrameDecision | None] = [_measured_evidence(record, rules) for record in records]
    by_source: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_source[record.source].append(index)

    conventions, as_given, settled_by_convention = {}, {}, {}
    for source, indices in sorted(by_source.items()):
        subset, known = [records[i] for i in indices], [decisions[i] for i in indices]
        conventions[source] = _conventions(subset, known, rules)
        as_given[source] = _as_given_check(subset, known, rules)
        holding = [c for c in CONVENTION_CANDIDATES if conventions[source][c]["holds"]]
        used: Counter = Counter()
        for i in indices:
            if decisions[i] is not None:
                continue
            convention = _by_convention(records[i], holding)
            if convention is not None:
                decisions[i] = FrameDecision(SETTLED, "source_convention", convention)
                used[convention] += 1
            elif as_given[source]["allowed"] and _as_given_applies(records[i]):
                decisions[i] = FrameDecision(SETTLED, "as_given", "none")
            else:
                decisions[i] = FrameDecision(FRAME_AMBIGUOUS)
        settled_by_convention[source] = dict(sorted(used.items()))

    final = [decision for decision in decisions if decision is not None]
    outcome = Counter(d.evidence if d.status == SETTLED else d.status for d in final)
    report = {
        "rules": {key: getattr(rules, key) for key in rules.__dataclass_fields__},
        "outcome": {key: int(outcome[key]) for key in (*EVIDENCE, FRAME_AMBIGUOUS, UNRESOLVED)},
        "stored_candidate": dict(sorted(Counter(base_name(d.candidate) for d in final if d.candidate).items())),
        "unstable_derived_frame": int(sum(any(record.unstable(name) for name in DERIVED_FRAMES)
                                          for record in records)),
        "as_given_check": as_given,
        "conventions": conventions,
        "settled_by_convention": settled_by_convention,
    }
    return final, report

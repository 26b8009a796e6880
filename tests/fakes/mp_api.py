"""A loopback Materials Project API for tests: the routes mp-api's MPRester calls, with injectable faults.

The server (stdlib ``http.server``, one thread per request, bound to 127.0.0.1 on an ephemeral port) answers

    GET /heartbeat                      {"db_version", "version", "access_controlled_batch_ids"}, no key needed
    GET /materials/<route>/?criteria    {"data": [...], "meta": {"total_doc", "max_limit", ...}} with the
                                        documents of the corpus that match the criteria, paged by _skip/_limit
                                        and projected by _fields (dotted paths allowed), like maggma resources

for the routes materials/elasticity, dielectric, piezoelectric, phonon and summary. Data routes check the
``x-api-key`` header and answer 401 (or `reject_status`) for a wrong one; unknown query parameters get 400.

Faults are scheduled per route: ``double.schedule("materials/dielectric", None, Fault.http(429, "1"))`` makes
the next request to that route succeed and the one after answer 429 with Retry-After: 1. Kinds: an HTTP
status (with optional Retry-After), a reset connection (RST, no response), a truncated body (Content-Length
promises more than is sent, then the connection closes), an invalid JSON body (complete response, cut JSON),
a slow answer (sent after `delay_s`, beyond the client's timeout), and a hang (no answer until released).
Every request is logged (`double.log`) so tests can count what was fetched.

The corpus (``tests/data/mp_api/corpus.json``) holds emmet-core documents made from snapshot rows by
`build_corpus`; regenerate it with ``python -m tests.fakes.mp_api`` from the repository root.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emmet.core.types.typing import format_identifier

from tests.fakes import faults
from tests.fakes.loopback import LoopbackHTTPDouble
from tests.fakes.loopback import guarded_connect as loopback_only  # noqa: F401 (the tests' name for it)
from zoo.data.sources.snapshot import locate_root

CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "mp_api" / "corpus.json"

# Query parameters each route understands (criterion -> document field), as the real resources do.
ROUTE_KEYS: dict[str, dict[str, str]] = {
    "materials/elasticity": {"material_ids": "material_id"},
    "materials/dielectric": {"material_ids": "material_id"},
    "materials/piezoelectric": {"material_ids": "material_id"},
    "materials/phonon": {"identifiers": "identifier", "phonon_method": "phonon_method"},
    "materials/summary": {"material_ids": "material_id", "has_props": "has_props"},
}
PAGING_PARAMS = {"_skip", "_limit", "_fields", "_all_fields"}
DEFAULT_FIELDS = {"materials/phonon": ("identifier", "last_updated")}


@dataclass(frozen=True)
class Fault(faults.Fault):
    """One scheduled misbehaviour of the double (see the module docstring)."""

    retry_after: str | None = None
    delay_s: float = 0.0

    @classmethod
    def http(cls, status: int, retry_after: str | None = None) -> Fault:
        return cls("http", status=status, retry_after=retry_after)

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def truncated_body(cls) -> Fault:
        return cls("truncated_body")

    @classmethod
    def invalid_json(cls) -> Fault:
        return cls("invalid_json")

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        return cls("slow", delay_s=delay_s)

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")


@dataclass(frozen=True)
class Served(faults.Served):
    """One request the double received (its query parameters, whether the API key was right) and what it did."""

    params: dict[str, str]
    key_ok: bool


def _same_id(value: Any) -> str:
    """Materials Project ids compare in their legacy form, whichever form (mp-149, mp-aaaaaaft) is sent."""
    return str(format_identifier(str(value), legacy=True))


def _project(doc: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted in fields:
        source, target = doc, out
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(source, dict) or part not in source:
                break
            source = source[part]
            target = target.setdefault(part, {})
        else:
            if isinstance(source, dict) and parts[-1] in source:
                target[parts[-1]] = source[parts[-1]]
    return out


class MPAPIDouble(LoopbackHTTPDouble):
    """The server; use as a context manager or call `start`/`stop`."""

    methods = ("GET",)
    thread_name = "mp-api-double"

    def __init__(self, corpus: dict[str, Any], api_key: str, *, reject_status: int = 401,
                 max_limit: int = 1000) -> None:
        super().__init__()
        self.corpus = corpus
        self.api_key = api_key
        self.reject_status = reject_status
        self.max_limit = max_limit
        self.log: list[Served] = []
        self._lock = threading.Lock()
        self._schedules: dict[str, deque[Fault | None]] = {}
        self._released = threading.Event()

    # -- lifecycle

    def _before_stop(self) -> None:
        self._released.set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # -- test controls

    def schedule(self, path: str, *faults: Fault | None) -> None:
        """The next requests to `path` get these faults in order (None: answer normally), then normal ones."""
        with self._lock:
            self._schedules.setdefault(path.strip("/"), deque()).extend(faults)

    def release(self) -> None:
        """Let hanging and slow requests finish (they close without an answer)."""
        self._released.set()

    def requests_to(self, path: str) -> list[Served]:
        with self._lock:
            return [served for served in self.log if served.path == path.strip("/")]

    # -- serving

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        path = url.path.strip("/")
        params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        key_ok = handler.headers.get("x-api-key") == self.api_key
        with self._lock:
            queue = self._schedules.get(path)
            fault = queue.popleft() if queue else None
        status, body = self._answer(path, params, key_ok)
        outcome = str(status) if fault is None or fault.kind == "slow" else (
            str(fault.status) if fault.kind == "http" else fault.kind)
        with self._lock:
            self.log.append(Served(path=path, outcome=outcome, params=params, key_ok=key_ok))
        try:
            self._send(handler, status, body, fault)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) before the answer
            handler.close_connection = True

    def _answer(self, path: str, params: dict[str, str], key_ok: bool) -> tuple[int, dict[str, Any]]:
        if path == "heartbeat":
            return 200, {"status": "OK", "db_version": self.corpus["db_version"],
                         "version": self.corpus["emmet_version"], "access_controlled_batch_ids": []}
        if path not in ROUTE_KEYS:
            return 404, {"detail": "Not Found"}
        if not key_ok:
            return self.reject_status, {"detail": "Invalid API key"}
        unknown = sorted(set(params) - PAGING_PARAMS - set(ROUTE_KEYS[path]))
        if unknown:
            return 400, {"detail": f"unrecognized query parameters: {', '.join(unknown)}"}
        docs = self.corpus["routes"][path]
        for param, field in ROUTE_KEYS[path].items():
            if param not in params:
                continue
            wanted = params[param].split(",")
            if param == "has_props":
                docs = [d for d in docs if all((d.get("has_props") or {}).get(p) for p in wanted)]
            elif param == "material_ids":
                wanted_ids = {_same_id(w) for w in wanted}
                docs = [d for d in docs if _same_id(d.get(field)) in wanted_ids]
            else:
                docs = [d for d in docs if str(d.get(field)) in set(wanted)]
        skip = int(params.get("_skip", 0))
        limit = min(int(params.get("_limit", 100)), self.max_limit)
        if params.get("_all_fields", "").lower() == "true":
            fields = None
        elif "_fields" in params:
            fields = params["_fields"].split(",")
        else:
            fields = list(DEFAULT_FIELDS.get(path, ("material_id", "last_updated")))
        page = docs[skip:skip + limit]
        data = page if fields is None else [_project(doc, fields) for doc in page]
        return 200, {"data": data, "meta": {"api_version": "mp-api-double", "total_doc": len(docs),
                                            "max_limit": self.max_limit, "facet": {}}}

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], fault: Fault | None) -> None:
        payload = json.dumps(body).encode("utf-8")
        kind = None if fault is None else fault.kind
        if kind == "reset":
            # SO_LINGER 0: close() sends RST instead of FIN; the client gets no response at all.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        if kind == "hang":
            self._released.wait(60)
            handler.close_connection = True
            return
        if kind == "slow":
            if self._released.wait(fault.delay_s):
                handler.close_connection = True
                return
        if kind == "http":
            status, payload = fault.status, json.dumps({"detail": f"double: HTTP {fault.status}"}).encode()
        promised = len(payload)
        if kind == "invalid_json":
            payload = payload[: len(payload) // 2]
            promised = len(payload)
        elif kind == "truncated_body":
            payload = payload[: len(payload) // 2]
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(promised))
        if fault is not None and fault.retry_after is not None:
            handler.send_header("Retry-After", fault.retry_after)
        if kind == "truncated_body":
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()
        if kind == "truncated_body":
            handler.close_connection = True


def load_corpus(path: Path = CORPUS_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@contextmanager
def serve(api_key: str, corpus: dict[str, Any] | None = None, **options: Any) -> Iterator[MPAPIDouble]:
    with MPAPIDouble(corpus if corpus is not None else load_corpus(), api_key, **options) as double:
        yield double


# ------------------------------------------------------------------------------------- the corpus builder

# Rows of the snapshot turned into documents (small cells keep the file small).
N_PER_PROPERTY = 25
MAX_SITES = 6
_LAST_UPDATED = "2025-09-25T00:00:00"
# Emmet's PhononDOS is in THz; this many THz per cm^-1 (1 THz = 33.35641 cm^-1).
_THZ_PER_CM = 1.0 / 33.35641


def build_corpus(snapshot_root: Path) -> dict[str, Any]:
    """Emmet-core documents for each route, made from the first small-cell rows of each snapshot file.

    elasticity: ElasticityDoc with ieee_format = the snapshot's elastic_tensor, raw = elastic_tensor_original,
    compliance in TPa^-1 (snapshot 1/GPa x 1000) for both; dielectric: DielectricDoc (ionic = total -
    electronic); piezoelectric: PiezoelectricDoc (the snapshot's tensor as total and ionic, zero electronic);
    phonon: PhononBSDOSDoc with the snapshot DOS re-sampled onto 0.25 THz steps and scaled to integrate
    to 3N, method dfpt; two materials also carry a pheasy task and one lists a dfpt id with no document.
    summary: SummaryDoc (structure, has_props, phonon_IDs) for every dielectric, piezo and phonon
    material except one dielectric material, left out so that its structure lookup comes back empty.
    """
    # Longer than ~60 lines: one block per route, each a few lines of the documents it serves; split, the corpus would
    # no longer read as the one table the docstring describes.
    import ast
    import datetime

    import numpy as np
    import pandas as pd
    from emmet.core import __version__ as emmet_version
    from emmet.core.elasticity import (
        BulkModulus,
        ComplianceTensorDoc,
        ElasticityDoc,
        ElasticTensorDoc,
        ShearModulus,
    )
    from emmet.core.mpid import AlphaID
    from emmet.core.phonon import PhononBSDOSDoc, PhononDOS
    from emmet.core.polar import DielectricDoc, PiezoelectricDoc
    from emmet.core.summary import SummaryDoc
    from pymatgen.core import Lattice, Structure

    when = datetime.datetime.fromisoformat(_LAST_UPDATED)

    def dump(doc: Any) -> dict[str, Any]:
        data = doc.model_dump(mode="json", exclude_none=True)
        data.pop("builder_meta", None)  # carries the build time; keeps the file reproducible
        return data

    def matminer(name: str) -> pd.DataFrame:
        frame = pd.read_csv(snapshot_root / "matminer-0.4.1" / name, comment="#")
        return frame[frame["nsites"] <= MAX_SITES].head(N_PER_PROPERTY)

    routes: dict[str, list[dict[str, Any]]] = {route: [] for route in ROUTE_KEYS}
    summary_inputs: dict[str, dict[str, Any]] = {}  # legacy id -> structure, has_props, phonon_IDs

    def note_summary(mid: str, structure: Structure, prop: str, phonon_ids: dict | None = None) -> None:
        entry = summary_inputs.setdefault(mid, {"structure": structure, "has_props": {}, "phonon_IDs": None})
        entry["has_props"][prop] = True
        if phonon_ids is not None:
            entry["phonon_IDs"] = phonon_ids

    for _, row in matminer("elastic_tensor.csv").iterrows():
        structure = Structure.from_str(row["structure"], fmt="cif")
        ieee, raw = json.loads(row["elastic_tensor"]), json.loads(row["elastic_tensor_original"])
        compliance_tpa = (np.asarray(json.loads(row["compliance_tensor"])) * 1000).tolist()
        routes["materials/elasticity"].append(dump(ElasticityDoc.from_structure(
            meta_structure=structure, material_id=row["material_id"], order=2, deprecated=False,
            last_updated=when, elastic_tensor=ElasticTensorDoc(raw=raw, ieee_format=ieee),
            compliance_tensor=ComplianceTensorDoc(raw=(np.linalg.inv(raw) * 1000).tolist(), ieee_format=compliance_tpa),
            bulk_modulus=BulkModulus(voigt=row["K_Voigt"], reuss=row["K_Reuss"], vrh=row["K_VRH"]),
            shear_modulus=ShearModulus(voigt=row["G_Voigt"], reuss=row["G_Reuss"], vrh=row["G_VRH"]),
            universal_anisotropy=row["elastic_anisotropy"], homogeneous_poisson=row["poisson_ratio"],
        )))

    dielectric_ids = []
    for _, row in matminer("dielectric_constant.csv").iterrows():
        structure = Structure.from_str(row["structure"], fmt="cif")
        electronic, total = np.asarray(json.loads(row["e_electronic"])), np.asarray(json.loads(row["e_total"]))
        ionic = total - electronic
        routes["materials/dielectric"].append(dump(DielectricDoc.from_structure(
            meta_structure=structure, material_id=row["material_id"], deprecated=False, last_updated=when,
            total=total.tolist(), ionic=ionic.tolist(), electronic=electronic.tolist(),
            e_total=float(np.mean(np.diag(total))), e_ionic=float(np.mean(np.diag(ionic))),
            e_electronic=float(np.mean(np.diag(electronic))), n=float(row["n"]),
        )))
        note_summary(row["material_id"], structure, "dielectric")
        dielectric_ids.append(row["material_id"])

    for _, row in matminer("piezoelectric_tensor.csv").iterrows():
        structure = Structure.from_str(row["structure"], fmt="cif")
        total = json.loads(row["piezoelectric_tensor"])
        _, charges, strains = np.linalg.svd(np.asarray(total), full_matrices=False)
        routes["materials/piezoelectric"].append(dump(PiezoelectricDoc.from_structure(
            meta_structure=structure, material_id=row["material_id"], deprecated=False, last_updated=when,
            total=total, ionic=total, electronic=np.zeros((3, 6)).tolist(), e_ij_max=float(row["eij_max"]),
            max_direction=[int(round(v)) for v in json.loads(row["v_max"])],
            strain_for_max=strains[int(np.argmax(charges))].tolist(),
        )))
        note_summary(row["material_id"], structure, "piezoelectric")

    piezo_ids = {doc["material_id"] for doc in routes["materials/piezoelectric"]}
    left_out = next(mid for mid in reversed(dielectric_ids) if _same_id(mid) not in {_same_id(p) for p in piezo_ids})

    phonon = pd.read_csv(snapshot_root / "phonon-petretto" / "data_union.csv").iloc[:1522]
    ids = pd.read_csv(snapshot_root / "phonon-petretto" / "mp_ids.csv")
    phonon = phonon.join(ids.set_index("row"))
    chosen = []
    for index, row in phonon[phonon["match"] == "structure"].iterrows():
        atoms = ast.literal_eval(row["structure"])
        if len(atoms["numbers"]) <= MAX_SITES:
            chosen.append((index, row, atoms))
        if len(chosen) == N_PER_PROPERTY:
            break
    grid_cm = np.asarray(json.loads(chosen[0][1]["phfreq"]), dtype=float)
    freq_thz = np.arange(0.0, 1000.0 * _THZ_PER_CM + 0.25, 0.25)
    for n, (index, row, atoms) in enumerate(chosen):
        structure = Structure(Lattice(atoms["cell"]), atoms["numbers"], atoms["positions"], coords_are_cartesian=True)
        dos = np.interp(freq_thz / _THZ_PER_CM, grid_cm, np.asarray(json.loads(row["phdos"]), dtype=float))
        dos *= 3 * len(structure) / np.trapezoid(dos, freq_thz)
        phonon_ids: dict[str, list[str]] = {"dfpt": [str(AlphaID(1000 + index, padlen=8))]}
        methods = ["dfpt"]
        if n in (3, 11):
            phonon_ids["pheasy"] = [str(AlphaID(5000 + index, padlen=8))]
            methods.append("pheasy")
        for method, identifier in zip(methods, (phonon_ids[m][0] for m in methods)):
            routes["materials/phonon"].append(dump(PhononBSDOSDoc.from_structure(
                meta_structure=structure, identifier=identifier, phonon_method=method, structure=structure,
                last_updated=when, phonon_dos=PhononDOS(frequencies=freq_thz.round(6).tolist(),
                                                        densities=dos.round(6).tolist()),
            )))
        if n == 7:
            phonon_ids["dfpt"].append(str(AlphaID(9000 + index, padlen=8)))  # listed, never served
        note_summary(row["material_id"], structure, "phonon", phonon_ids)

    for mid, entry in summary_inputs.items():
        if mid == left_out:
            continue
        doc = dump(SummaryDoc.from_structure(
            meta_structure=entry["structure"], material_id=mid, deprecated=False, last_updated=when,
            phonon_IDs=entry["phonon_IDs"],
        ))
        doc["has_props"] = dict(entry["has_props"])
        routes["materials/summary"].append(doc)

    return {
        "_about": build_corpus.__doc__.split("\n\n")[0] + " Made by tests/fakes/mp_api.py:build_corpus; "
                  f"summary document left out for {left_out}.",
        "db_version": "2025_09_25",
        "emmet_version": emmet_version,
        "left_out_of_summary": left_out,
        "routes": routes,
    }


def main() -> None:
    corpus = build_corpus(locate_root().resolve())
    CORPUS_PATH.parent.mkdir(parents=True, exist_ok=True)
    CORPUS_PATH.write_text(json.dumps(corpus, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {CORPUS_PATH} ({CORPUS_PATH.stat().st_size} bytes): "
          + ", ".join(f"{route} {len(docs)}" for route, docs in corpus["routes"].items()))


if __name__ == "__main__":
    main()

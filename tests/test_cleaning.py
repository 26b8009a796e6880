"""clean: frames measured on real snapshot rows, the duplicate rule, structure parsing, units, determinism.

The fixtures are raw records copied verbatim from the fetch output of the pinned snapshot (data/raw/*.jsonl), so
these tests need no files outside the repository; the last test cleans the whole snapshot when ../shared is there.
"""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from scipy.spatial.transform import Rotation

from tests.params_file import write_params
from zoo import properties
from zoo.core import symmetry, tensors
from zoo.data import cleaning
from zoo.data.cleaning import evidence
from zoo.data.records import read_raw, write_raw
from zoo.data.sources.snapshot import locate_root

# The checkout's params, measured in this process (workers 1).
CLEAN = dataclasses.replace(cleaning.CleanParams.from_params(), workers=1)

SNAPSHOT_ROWS = {
    json.loads(line)["record_id"]: json.loads(line)
    for line in r"""
{"formula": "AgI", "material_id": "mp-22925", "property": "piezo", "provenance": {"file": "matminer-0.4.1/piezoelectric_tensor.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 0, "sha256": "4be45c8df76a9600f789255ddcb05a92fc3807e0b96fd01e85713a58c34a2ae1", "source": "snapshot"}, "record_id": "snapshot:piezo:row-00000", "reported": {"eij_max": 0.091464, "nsites": 2, "point_group": "-43m", "space_group": 216, "v_max": [1.0, 1.0, 1.0], "volume": 73.2195833241}, "structure": {"data": "Ag1 I1\n1.0\n4.066724 0.000000 2.347924\n1.355575 3.834144 2.347924\n0.000000 0.000000 4.695849\nAg I\n1 1\ndirect\n0.000000 0.000000 0.000000 Ag\n0.250000 0.250000 0.250000 I\n", "format": "poscar"}, "tensor_frames": {"piezo_voigt": "ieee"}, "values": {"piezo_voigt": [[0.0, 0.0, 0.0, -0.15842, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, -0.15842, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, -0.15842]]}}
{"formula": "HCl", "material_id": "mp-684609", "property": "piezo", "provenance": {"file": "matminer-0.4.1/piezoelectric_tensor.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 604, "sha256": "4be45c8df76a9600f789255ddcb05a92fc3807e0b96fd01e85713a58c34a2ae1", "source": "snapshot"}, "record_id": "snapshot:piezo:row-00604", "reported": {"eij_max": 0.17073, "nsites": 2, "point_group": "mm2", "space_group": 44, "v_max": [0.0, 0.0, 1.0], "volume": 53.0699940311}, "structure": {"data": "H1 Cl1\n1.0\n3.600708 -0.113943 2.125370\n1.092810 3.432761 2.125370\n0.000000 0.000000 4.250738\nH Cl\n1 1\ndirect\n0.686524 0.313476 0.000000 H\n0.981476 0.018524 1.000000 Cl\n", "format": "poscar"}, "tensor_frames": {"piezo_voigt": "ieee"}, "values": {"piezo_voigt": [[0.0, 0.0, 0.0, 0.0, 0.01144, 0.0], [0.0, 0.0, 0.0, 0.01412, 0.0, 0.0], [-0.013640000000000001, -0.0018700000000000001, 0.17073000000000002, 0.0, 0.0, 0.0]]}}
{"formula": "Ga", "material_id": "mp-10021", "property": "elastic", "provenance": {"file": "matminer-0.4.1/elastic_tensor.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 3, "sha256": "f7a18c91fe5dcd51012e5b7e3a37f73aaee9087a036d61bdf9d6464b6fca51a6", "source": "snapshot"}, "record_id": "snapshot:elastic:row-00003", "reported": {"G_Reuss": 12.2059888389, "G_VRH": 15.1019006156, "G_Voigt": 17.9978123924, "K_Reuss": 49.0259626531, "K_VRH": 49.1306700392, "K_Voigt": 49.2353774252, "elastic_anisotropy": 2.376805036, "kpoint_density": 7000, "nsites": 4, "poisson_ratio": 0.36059261654, "space_group": 63, "volume": 76.7214332896}, "structure": {"data": "Ga4\n1.0\n2.803229 0.000000 0.000000\n0.000000 8.137928 0.000000\n0.000000 0.000000 3.363135\nGa\n4\ndirect\n0.000000 0.133997 0.250000 Ga\n0.000000 0.866003 0.750000 Ga\n0.500000 0.633997 0.250000 Ga\n0.500000 0.366003 0.750000 Ga", "format": "poscar"}, "tensor_frames": {"compliance_voigt": "ieee", "stiffness_voigt": "ieee", "stiffness_voigt_original": "structure"}, "values": {"compliance_voigt": [[0.021647143908635, -0.005207263618160001, -0.008525244350771, 0.0, 0.0, 0.0], [-0.005207263618160001, 0.019557940401706, -0.008547489971455, 0.0, 0.0, 0.0], [-0.008525244350771, -0.008547489971455, 0.023752267295508, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0502629146508, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.21017111465913102, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.032884485129106]], "stiffness_voigt": [[69.28798774976904, 34.7875015216915, 37.38770852821463, 0.0, 0.0, 0.0], [34.7875015216915, 78.13789940936597, 40.60474945058445, 0.0, 0.0, 0.0], [37.38770852821463, 40.60474945058445, 70.13259066665267, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 19.895384240000002, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 4.75802777, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 30.409477176666663]], "stiffness_voigt_original": [[70.13259066665267, 40.60474945058445, 37.38770852821463, 0.0, 0.0, 0.0], [40.60474945058445, 78.13789940936597, 34.7875015216915, 0.0, 0.0, 0.0], [37.38770852821463, 34.7875015216915, 69.28798774976904, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 30.409477176666663, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 4.75802777, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 19.895384240000002]]}}
{"formula": "TaSb2", "material_id": "mp-11697", "property": "elastic", "provenance": {"file": "matminer-0.4.1/elastic_tensor.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 163, "sha256": "f7a18c91fe5dcd51012e5b7e3a37f73aaee9087a036d61bdf9d6464b6fca51a6", "source": "snapshot"}, "record_id": "snapshot:elastic:row-00163", "reported": {"G_Reuss": 69.8857666824, "G_VRH": 72.6149836925, "G_Voigt": 75.3442007026, "K_Reuss": 100.873883833, "K_VRH": 101.896942956, "K_Voigt": 102.920002079, "elastic_anisotropy": 0.410809369069, "kpoint_density": 7000, "nsites": 12, "poisson_ratio": 0.212078239557, "space_group": 12, "volume": 276.601106261}, "structure": {"data": "Ta4 Sb8\n1.0\n7.914381 0.000000 -6.670922\n0.000000 3.693589 0.000000\n-0.001418 0.000000 9.463315\nTa Sb\n4 8\ndirect\n0.037866 0.500000 0.688464 Ta\n0.962134 0.500000 0.311536 Ta\n0.537866 0.000000 0.688464 Ta\n0.462134 0.000000 0.311536 Ta\n0.113578 0.000000 0.965225 Sb\n0.886422 0.000000 0.034775 Sb\n0.292717 0.500000 0.387498 Sb\n0.707283 0.500000 0.612502 Sb\n0.613578 0.500000 0.965225 Sb\n0.386422 0.500000 0.034775 Sb\n0.792717 0.000000 0.387498 Sb\n0.207283 0.000000 0.612502 Sb", "format": "poscar"}, "tensor_frames": {"compliance_voigt": "ieee", "stiffness_voigt": "ieee", "stiffness_voigt_original": "structure"}, "values": {"compliance_voigt": [[0.0053630083571380004, -0.0008105063366820001, -0.001458128770904, 0.0, 0.00012646630584200002, 0.0], [-0.0008105063366820001, 0.007998283639351001, -0.0028731818066480004, 0.0, -0.0008144944584120001, 0.0], [-0.001458128770904, -0.0028731818066480004, 0.006835710505803, 0.0, 0.00107709025696, 0.0], [0.0, 0.0, 0.0, 0.011290758801508, 0.0, -0.0026084694214380004], [0.00012646630584200002, -0.0008144944584120001, 0.00107709025696, 0.0, 0.011409687036605, 0.0], [0.0, 0.0, 0.0, -0.0026084694214380004, 0.0, 0.015059788178163001]], "stiffness_voigt": [[210.67661974426284, 43.879529149061014, 64.21247135869785, 0.0, -5.264516684804711, 0.0], [43.879529149061014, 156.65388635356464, 74.62927986901357, 0.0, 3.651455995734721, 0.0], [64.21247135869785, 74.62927986901357, 193.50695186284946, 0.0, -13.65156039417005, 0.0], [0.0, 0.0, 0.0, 92.25984096186643, 0.0, 15.980103513323707], [-5.264516684804712, 3.651455995734721, -13.65156039417005, 0.0, 89.25256530495594, 0.0], [0.0, 0.0, 0.0, 15.980103513323707, 0.0, 69.16987138480027]], "stiffness_voigt_original": [[210.67977649470777, 43.87843558121248, 64.21498294040862, 0.0, -5.269317989496701, 0.0], [43.87843558121248, 156.65388635356464, 74.6303734368621, 0.0, 3.646848331663745, 0.0], [64.21498294040862, 74.6303734368621, 193.49877194898326, 0.0, -13.644185560802311, 0.0], [0.0, 0.0, 0.0, 92.2646293166667, 0.0, 15.97664302666667], [-5.269317989496701, 3.646848331663745, -13.644185560802311, 0.0, 89.25507688666669, 0.0], [0.0, 0.0, 0.0, 15.97664302666667, 0.0, 69.16508303]]}}
{"formula": "Ca3Al7Cu2", "material_id": "mp-10876", "property": "elastic", "provenance": {"file": "matminer-0.4.1/elastic_tensor.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 57, "sha256": "f7a18c91fe5dcd51012e5b7e3a37f73aaee9087a036d61bdf9d6464b6fca51a6", "source": "snapshot"}, "record_id": "snapshot:elastic:row-00057", "reported": {"G_Reuss": 45.8731157052, "G_VRH": 46.1528147081, "G_Voigt": 46.432513711, "K_Reuss": 65.0678772137, "K_VRH": 65.2176133541, "K_Voigt": 65.3673494945, "elastic_anisotropy": 0.0655747739767, "kpoint_density": 7000, "nsites": 12, "poisson_ratio": 0.21369891193, "space_group": 166, "volume": 232.908094983}, "structure": {"data": "Ca3 Al7 Cu2\n1.0\n2.794599 -1.613462 8.609048\n0.000000 3.226924 8.609048\n-2.794599 -1.613462 8.609048\nCa Al Cu\n3 7 2\ndirect\n0.000000 0.000000 0.000000 Ca\n0.142852 0.142852 0.142852 Ca\n0.857148 0.857148 0.857148 Ca\n0.500000 0.500000 0.500000 Al\n0.579063 0.073134 0.579063 Al\n0.579063 0.579063 0.073134 Al\n0.073134 0.579063 0.579063 Al\n0.926866 0.420937 0.420937 Al\n0.420937 0.926866 0.420937 Al\n0.420937 0.420937 0.926866 Al\n0.334983 0.334983 0.334983 Cu\n0.665017 0.665017 0.665017 Cu", "format": "poscar"}, "tensor_frames": {"compliance_voigt": "ieee", "stiffness_voigt": "ieee", "stiffness_voigt_original": "structure"}, "values": {"compliance_voigt": [[0.009592103755164, -0.002455377349253, -0.001677546757571, 0.0009403254944290001, 4.4017370717465534e-07, 6.400477895096762e-06], [-0.002455377349253, 0.009596610017028, -0.0016761537945320002, -0.000902854047191, -1.1267523558132499e-07, -1.638388079315554e-06], [-0.001677546757571, -0.0016761537945320002, 0.007798008561675, -8.989100698857398e-06, -7.698123311493024e-08, -1.119368723888585e-06], [0.0009403254944290001, -0.000902854047191, -8.989100698857325e-06, 0.02083756204611, 4.3150759145117615e-08, 6.274465638525359e-07], [4.4017370717465523e-07, -1.1267523558132499e-07, -7.69812331149302e-08, 4.315075914511761e-08, 0.020793147452615002, 0.0016256238230370002], [6.400477895096761e-06, -1.638388079315554e-06, -1.1193687238885841e-06, 6.274465638525356e-07, 0.0016256238230370002, 0.023637859441064002]], "stiffness_voigt": [[119.73842599770413, 36.1311587862032, 33.52058214405425, -3.823412446814284, 1.0929846899290942e-09, -0.028228673333333003], [36.1311587862032, 119.6332391418729, 33.49156163196952, 3.5674693250316363, 0.0, 0.0], [33.52058214405425, 33.49156163196951, 142.64787518612735, 4.8482235282043e-07, 0.0, 0.0], [-3.823412446814284, 3.5674693250316363, 4.848223528204291e-07, 48.31736813040935, 0.0, 0.0], [1.0929846899290942e-09, 0.0, 0.0, 0.0, 48.352742964172236, -3.325316789693202], [-0.028228673333333003, 0.0, 0.0, 0.0, -3.325316789693203, 42.533711539161104]], "stiffness_voigt_original": [[119.73842599770413, 36.131159082280256, 33.5205818479772, 3.823412345735477, 0.0, -0.028228673333333003], [36.131159082280256, 119.6332385893582, 33.49156190822684, -3.567468918751356, 0.0, 0.0], [33.5205818479772, 33.49156190822684, 142.6478751861274, 0.0, 0.0, 0.0], [3.823412345735477, -3.567468918751356, 0.0, 48.317368406666674, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 48.35274270666666, 3.325317015], [-0.028228673333333003, 0.0, 0.0, 0.0, 3.325317015, 42.53371179666668]]}}
{"formula": "CdCl2", "material_id": "mp-22881", "property": "dielectric", "provenance": {"file": "matminer-0.4.1/dielectric_constant.csv", "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 1, "sha256": "ecbd410d33c95d5b05822cff6c7c0ba809a024b4ede3855ec5efc48d5e29ea77", "source": "snapshot"}, "record_id": "snapshot:dielectric:row-00001", "reported": {"band_gap": 3.52, "n": 1.78, "nsites": 3, "point_group": "-3m", "poly_electronic": 3.16, "poly_total": 6.73, "pot_ferroelectric": false, "space_group": 166, "volume": 84.2980965532}, "structure": {"data": "Cd1 Cl2\n1.0\n3.850977 0.072671 5.494462\n1.786849 3.412107 5.494462\n0.117570 0.072671 6.708599\nCd Cl\n1 2\ndirect\n0.000000 0.000000 0.000000 Cd\n0.742279 0.742279 0.742279 Cl\n0.257721 0.257721 0.257721 Cl\n", "format": "poscar"}, "tensor_frames": {"electronic": "unknown", "total": "unknown"}, "values": {"electronic": [[3.34688382, -0.04498543, -0.22379197], [-0.04498625, 3.39185804, -0.13832825], [-0.22379126, -0.13832396, 2.73154536]], "total": [[7.97018673, -0.29423886, -1.463590159999999], [-0.29423968, 8.2643336, -0.90466431], [-1.46358945, -0.90466002, 3.94536626]]}}
{"formula": null, "material_id": null, "property": "phonon", "provenance": {"file": "phonon-petretto/data_union.csv", "material_id_recovery": {"file": "phonon-petretto/mp_ids.csv", "match": "none", "sha256": "10820d65d259e24c90eff148f90cdd5e2997f25ae1673ed24c0288f8e6c46549"}, "retrieved_with": "mp-tensor-zoo 0.1.0", "row": 1521, "sha256": "c2a97d69c0dff2016216867e3eda2f3cba5f6fa9033565e6a12c1702e3c720e7", "source": "snapshot"}, "record_id": "snapshot:phonon:row-01521", "reported": {}, "structure": {"data": {"cell": [[-2.361050190000001, -4.089458888300151, -5.7829051156195e-16], [-2.3610501899999985, 4.089458888300151, 2.89145255780975e-16], [0.0, 0.0, -7.448957]], "numbers": [12, 12, 12, 83, 83], "pbc": [true, true, true], "positions": [[0.0, 0.0, 0.0], [-2.3610501900000003, -1.3631529627667174, -2.7625499888480003], [-2.3610501899999994, 1.363152962766717, -4.686407011152], [-2.3610501900000003, -1.3631529627667174, -5.8052180056810005], [-2.3610501899999994, 1.363152962766717, -1.6437389943189995]]}, "format": "ase-dict"}, "tensor_frames": {}, "values": {"dos": [0.0, 0.6454190271244707, 1.0, 0.8766802381361758, 0.4581035581987065, 0.3232744380896899, 0.3963035224874957, 0.5351237365682325, 0.6864085788153571, 0.6177222045832871, 0.7709509113916411, 0.5816875288697353, 0.46333324420049166, 0.12400730952488911, 0.0, 0.0, 0.0006903844543480458, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844, 0.0006914584175170844], "frequencies_cm": [0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0, 220.0, 240.0, 260.0, 280.0, 300.0, 320.0, 340.0, 360.0, 380.0, 400.0, 420.0, 440.0, 460.0, 480.0, 500.0, 520.0, 540.0, 560.0, 580.0, 600.0, 620.0, 640.0, 660.0, 680.0, 700.0, 720.0, 740.0, 760.0, 780.0, 800.0, 820.0, 840.0, 860.0, 880.0, 900.0, 920.0, 940.0, 960.0, 980.0, 1000.0]}}
""".strip().splitlines()
}
AGI_PIEZO = "snapshot:piezo:row-00000"  # AgI, F-43m, primitive cell in a tilted orientation
HCL_PIEZO = "snapshot:piezo:row-00604"  # HCl, Imm2 (mm2): polar axis is not the IEEE x3 of pymatgen's length rule
GA_ELASTIC = "snapshot:elastic:row-00003"  # Ga, orthorhombic, axes stored in another order than IEEE's c < a < b
TASB2_ELASTIC = "snapshot:elastic:row-00163"  # TaSb2, monoclinic C2/m
CA3AL7CU2_ELASTIC = "snapshot:elastic:row-00057"  # trigonal R-3m: the two columns differ in the sign of c14
CDCL2_DIELECTRIC = "snapshot:dielectric:row-00001"
MG3BI2_PHONON = "snapshot:phonon:row-01521"  # ASE-dict structure, no recovered material_id
SHARED_DATASETS = locate_root()


def raw(snapshot_id: str, /, **changes) -> dict:
    """A copy of a fixture row with some fields replaced."""
    record = copy.deepcopy(SNAPSHOT_ROWS[snapshot_id])
    record.update(changes)
    return record


def clean(records, prop: str, **params) -> dict:
    """Clean `records` and return the rows by record_id."""
    result = cleaning.clean_records(records, properties.get(prop), dataclasses.replace(CLEAN, **params))
    assert [row["record_id"] for row in result.rows] == sorted(record["record_id"] for record in records)
    return {row["record_id"]: row for row in result.rows}


def stored_parts(row: dict, spec: properties.PropertySpec) -> list[np.ndarray]:
    """The row's stored tensors as Cartesian arrays."""
    if spec.voigt_kind == "symmetric2":
        return [np.array(row[part]) for part in spec.tensor_parts]  # electronic, ionic (derived) and total
    column = "stiffness_voigt" if spec.name == "elastic" else "piezo_voigt"
    return [tensors.voigt_to_cartesian(np.array(row[column]), spec.voigt_kind)]


def stored_residual(row: dict, spec: properties.PropertySpec) -> float:
    """Neumann residual of the stored tensors against the stored structure, recomputed from the row alone."""
    structure = Structure.from_dict(json.loads(row["structure_json"]))
    info = symmetry.analyze(structure)
    return max(symmetry.neumann_residual(part, info) for part in stored_parts(row, spec))


def given_cartesian(record: dict, key: str, kind: str) -> np.ndarray:
    return tensors.voigt_to_cartesian(np.array(record["values"][key]), kind)


# ----------------------------------------------------------------------------------------------- frames
def test_zinc_blende_in_a_primitive_cell_has_no_determined_frame():
    """spglib's conventional cell of a primitive zinc blende flips the tetrahedra under a 1e-7 strain: the IEEE and
    standard frames then give e14 of either sign, and nothing else in the record decides."""
    record = raw(AGI_PIEZO)
    row = clean([record], "piezo")[AGI_PIEZO]
    assert row["clean_issue"] == "frame_ambiguous" and row["frame_action"] == "frame_ambiguous"
    assert row["frame_evidence"] is None
    assert row["piezo_voigt"] == record["values"]["piezo_voigt"]  # stored as given
    candidates = json.loads(row["frame_candidates_json"])
    classes = {item["class"] for item in candidates if item["candidate"].startswith("standard")}
    assert classes == {0, 1}  # the unstrained and the strained builds give opposite tensors
    assert next(item for item in candidates if item["candidate"] == "none")["class"] is None  # as given: no fit


def test_piezo_row_failing_as_given_passes_after_the_ieee_rotation():
    """Without the stability check the same row is settled: every derived frame gives one tensor."""
    record = raw(AGI_PIEZO)
    row = clean([record], "piezo", frame_stability_strain=0.0)[AGI_PIEZO]
    spec = properties.get("piezo")
    assert row["frame_residual_before"] > 1.0  # the IEEE tensor e14 = e25 = e36 does not fit the tilted cell
    # The IEEE and standard frames give the same tensor; the better fit of the two (by rounding) is stored.
    assert row["frame_evidence"] == "unique"
    assert row["frame_action"] in ("rotated_ieee_to_structure", "rotated_standard_to_structure")
    assert row["frame_residual_after"] < 1e-6
    assert stored_residual(row, spec) < 1e-6
    rotation = np.array(row["frame_rotation"])
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    given = given_cartesian(record, "piezo_voigt", "piezo_stress")
    np.testing.assert_allclose(stored_parts(row, spec)[0], tensors.rotate(given, rotation), atol=1e-12)
    # The tensor is the one zoo.core.symmetry's IEEE rotation of the stored structure brings back.
    structure = Structure.from_dict(json.loads(row["structure_json"]))
    np.testing.assert_allclose(stored_parts(row, spec)[0], tensors.rotate(given, symmetry.ieee_rotation(structure).T),
                               atol=1e-5)


def test_piezo_mm2_row_is_in_the_spglib_standard_frame():
    result = cleaning.clean_records([raw(HCL_PIEZO)], properties.get("piezo"), CLEAN)
    row = result.rows[0]
    assert row["frame_residual_before"] > 1.0
    assert row["frame_action"] == "rotated_standard_to_structure"
    assert stored_residual(row, properties.get("piezo")) < 1e-6
    consistent = result.report["frames"]["consistent_by_candidate"]
    assert consistent["ieee"]["consistent"] == 0 and consistent["standard"]["consistent"] == 1


def test_elastic_rows_take_the_frame_the_structure_frame_column_confirms():
    records = [raw(GA_ELASTIC), raw(TASB2_ELASTIC), raw(CA3AL7CU2_ELASTIC)]
    rows = clean(records, "elastic")
    spec = properties.get("elastic")

    # Orthorhombic Ga: every candidate fits equally (axis relabellings keep mmm); the IEEE column rotated to the
    # structure frame is exactly the structure-frame column: c11 and c33 trade places.
    assert {row["frame_evidence"] for row in rows.values()} == {"source_field"}
    ga = rows[GA_ELASTIC]
    assert ga["frame_action"] == "rotated_ieee_to_structure"
    original = np.array(SNAPSHOT_ROWS[GA_ELASTIC]["values"]["stiffness_voigt_original"])
    np.testing.assert_allclose(ga["stiffness_voigt"], original, rtol=0, atol=1e-9 * np.abs(original).max())
    assert ga["stiffness_voigt"][0][0] == pytest.approx(SNAPSHOT_ROWS[GA_ELASTIC]["values"]["stiffness_voigt"][2][2])

    # Monoclinic TaSb2: today's IEEE rules turn the cell about b (invisible to Neumann's principle); the
    # structure-frame column shows the published tensor is already in the stored frame.
    tasb2 = rows[TASB2_ELASTIC]
    assert tasb2["frame_action"] == "none"
    # As given, up to the rounding of the symmetric part (the source's c15 and c51 differ in the last bit).
    np.testing.assert_allclose(tasb2["stiffness_voigt"], SNAPSHOT_ROWS[TASB2_ELASTIC]["values"]["stiffness_voigt"],
                               rtol=1e-15, atol=0)

    # Trigonal Ca3Al7Cu2: the columns differ by a half turn about the three-fold axis (sign of c14), again
    # invisible to Neumann's principle; the column claimed in the structure frame settles it (the IEEE candidate
    # gives its tensor), then the DFT noise is projected out.
    trigonal = rows[CA3AL7CU2_ELASTIC]
    assert trigonal["frame_action"] == "rotated_ieee_to_structure+symmetrized"
    c14_original = SNAPSHOT_ROWS[CA3AL7CU2_ELASTIC]["values"]["stiffness_voigt_original"][0][3]
    assert np.sign(trigonal["stiffness_voigt"][0][3]) == np.sign(c14_original) == 1.0
    assert 1e-3 < trigonal["frame_residual_after"] < 0.05  # DFT noise, removed by the projection
    for row in rows.values():
        assert stored_residual(row, spec) < 1e-9 or row["frame_action"] in ("none", "rotated_ieee_to_structure")
        assert stored_residual(row, spec) < 1e-3


def test_zero_piezo_tensor_is_not_rotated():
    record = raw(AGI_PIEZO)
    record["values"]["piezo_voigt"] = [[0.0] * 6 for _ in range(3)]
    row = clean([record], "piezo")[AGI_PIEZO]
    assert row["frame_action"] == "none"
    assert row["frame_rotation"] == np.eye(3).tolist()
    assert row["frame_residual_before"] == row["frame_residual_after"] == 0.0


def test_unresolved_frame_is_stored_as_given():
    record = raw(AGI_PIEZO)
    record["values"]["piezo_voigt"] = [[0.0, 0.0, 0.0, 0.2, 0.0, 0.0], [0.0] * 6, [0.0] * 6]  # only e14: no cubic frame
    row = clean([record], "piezo")[AGI_PIEZO]
    assert row["frame_action"] == "unresolved"
    assert row["piezo_voigt"] == record["values"]["piezo_voigt"]
    assert row["frame_residual_after"] == row["frame_residual_before"] > 0.05
    assert row["clean_issue"] is None  # a physics failure: validate's Neumann check quarantines it


def _rotated_structure(structure: Structure, rotation: np.ndarray) -> Structure:
    """The same crystal turned rigidly: lattice rows rotated, fractional coordinates unchanged."""
    return Structure(Lattice(structure.lattice.matrix @ rotation.T), structure.species, structure.frac_coords)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), prop=st.sampled_from(["piezo", "elastic"]))
def test_tensor_rotated_to_ieee_by_zoo_symmetry_is_recovered(seed, prop):
    """A tensor valid in the structure frame, sent to the IEEE frame by zoo.core.symmetry, comes back unchanged when
    the evidence settles its frame (elastic: the structure-frame column does), and is otherwise frame_ambiguous with
    the IEEE candidate among the consistent ones (an orthorhombic tensor also fits the spglib standard frame with
    its axes relabelled, and a lone record has no per-source convention)."""
    rng = np.random.default_rng(seed)
    spec = properties.get(prop)
    base = Structure.from_dict(json.loads(clean([raw(HCL_PIEZO)], "piezo")[HCL_PIEZO]["structure_json"]))
    structure = _rotated_structure(base, Rotation.random(random_state=rng).as_matrix())
    info = symmetry.analyze(structure)
    dim = tensors.change_of_basis(spec.formula).shape[0]
    in_frame = symmetry.symmetrize(tensors.irreps_to_cartesian(rng.normal(size=dim), spec.formula), info)
    column = "stiffness_voigt" if prop == "elastic" else "piezo_voigt"
    values = {column: tensors.cartesian_to_voigt(symmetry.to_ieee_frame(in_frame, structure), spec.voigt_kind).tolist()}
    if prop == "elastic":
        values.update(stiffness_voigt_original=tensors.cartesian_to_voigt(in_frame, spec.voigt_kind).tolist(),
                      compliance_voigt=None)
    record = {
        "record_id": f"test:{prop}:rotated", "property": prop, "material_id": None, "formula": "HCl",
        "structure": {"format": "pymatgen-dict", "data": structure.as_dict()}, "values": values,
        "tensor_frames": {column: "ieee"}, "reported": {}, "provenance": {},
    }
    row = clean([record], prop)[record["record_id"]]
    candidates = {item["candidate"]: item for item in json.loads(row["frame_candidates_json"])}
    assert candidates["ieee"]["class"] is not None
    if prop == "elastic":
        assert row["frame_evidence"] == "source_field"
    if row["clean_issue"] == "frame_ambiguous":
        assert len({item["class"] for item in candidates.values()} - {None}) >= 2
        return
    recovered = stored_parts(row, spec)[0]
    np.testing.assert_allclose(recovered, in_frame, rtol=0, atol=1e-6 * np.abs(in_frame).max())


# ------------------------------------------------------------------------------------------- duplicates
def test_duplicate_rule_keeps_the_first_parsed_record():
    def copy_of(suffix: str) -> dict:
        return raw(AGI_PIEZO, record_id=f"snapshot:piezo:row-9{suffix}")

    unreadable = copy_of("0001")
    unreadable["values"]["piezo_voigt"] = {"unparsed": "[[0.1, oops]]", "error": "not JSON"}
    kept, identical, conflicting = copy_of("0002"), copy_of("0003"), copy_of("0004")
    identical["values"]["piezo_voigt"][0][3] *= 1 + 1e-12
    conflicting["values"]["piezo_voigt"][0][3] *= 1.001
    other = raw(AGI_PIEZO, record_id="snapshot:piezo:row-90005", material_id="mp-0")
    no_id = [raw(AGI_PIEZO, record_id=f"snapshot:piezo:row-9000{n}", material_id=None) for n in (6, 7)]
    # (the stability check leaves zinc blende's frame undetermined; the duplicate rule does not care)
    rows = clean([conflicting, identical, kept, unreadable, other, *no_id], "piezo", frame_stability_strain=0.0)
    assert rows[unreadable["record_id"]]["clean_issue"] == "unparsable_tensor"
    assert rows[kept["record_id"]]["clean_issue"] is None
    assert rows[identical["record_id"]]["clean_issue"] == "duplicate_identical"
    assert rows[conflicting["record_id"]]["clean_issue"] == "duplicate_conflict"
    assert rows[other["record_id"]]["clean_issue"] is None
    assert [rows[record["record_id"]]["clean_issue"] for record in no_id] == [None, None]
    # Duplicates keep their cleaned values; validate quarantines them with the code.
    assert rows[identical["record_id"]]["piezo_voigt"] is not None


# ------------------------------------------------------------------------------------------- structures
def _agi_cif() -> str:
    structure = Structure.from_dict(json.loads(clean([raw(AGI_PIEZO)], "piezo")[AGI_PIEZO]["structure_json"]))
    return str(CifWriter(structure))


def test_cif_structures_parse_and_bad_ones_get_issue_codes():
    cif = _agi_cif()
    good = raw(AGI_PIEZO, structure={"format": "cif", "data": cif})
    garbage = raw(AGI_PIEZO, record_id="snapshot:piezo:row-90001", material_id="mp-1",
                  structure={"format": "cif", "data": "data_broken\n_cell_length_a 4.0\nloop_\n"})
    unknown = raw(AGI_PIEZO, record_id="snapshot:piezo:row-90002", material_id="mp-2",
                  structure={"format": "cif", "data": cif.replace(" Ag", " Qq").replace("Ag1", "Qq1")})
    unreadable = raw(AGI_PIEZO, record_id="snapshot:piezo:row-90003", material_id="mp-3",
                     structure={"format": "poscar", "data": {"unparsed": "", "error": "poscar: empty"}})
    rows = clean([good, garbage, unknown, unreadable], "piezo", frame_stability_strain=0.0)  # as in the test above
    parsed = rows[AGI_PIEZO]
    assert parsed["clean_issue"] is None
    assert parsed["space_group_symbol"] == "F-43m" and parsed["n_sites"] == 2
    cif_lattice = Structure.from_dict(json.loads(parsed["structure_json"])).lattice
    np.testing.assert_allclose(cif_lattice.abc, [4.6958] * 3, atol=1e-3)
    assert stored_residual(parsed, properties.get("piezo")) < 1e-6
    assert rows[garbage["record_id"]]["clean_issue"] == "unparsable_structure"
    assert rows[unknown["record_id"]]["clean_issue"] == "unknown_element"
    assert rows[unreadable["record_id"]]["clean_issue"] == "unparsable_structure"
    for record in (garbage, unknown, unreadable):
        row = rows[record["record_id"]]
        # The row is kept: values as given, no structure, no frame.
        assert row["piezo_voigt"] == record["values"]["piezo_voigt"]
        assert row["structure_json"] is None and row["space_group_number"] is None and row["frame_action"] is None


def test_ase_dict_structure_of_the_phonon_row_without_material_id():
    record = raw(MG3BI2_PHONON)
    row = clean([record], "phonon")[MG3BI2_PHONON]
    atoms = record["structure"]["data"]
    structure = Structure.from_dict(json.loads(row["structure_json"]))
    np.testing.assert_allclose(structure.lattice.matrix, atoms["cell"], atol=1e-12)
    np.testing.assert_allclose(structure.cart_coords, atoms["positions"], atol=1e-9)
    assert [site.specie.Z for site in structure] == atoms["numbers"]
    assert row["material_id"] is None and row["clean_issue"] is None  # kept, keyed by record_id
    assert row["formula"] == "Mg3Bi2" and row["n_sites"] == 5
    assert row["space_group_symbol"] == "P-3m1" and row["laue_class"] == "-3m" and row["is_centrosymmetric"]
    assert row["frequencies_cm"] == properties.PHONON_GRID_CM.tolist()
    assert row["dos"] == record["values"]["dos"]
    assert row["frame_residual_before"] is None  # an invariant has no frame


@pytest.mark.parametrize(("change", "code"), [
    ({"numbers": [12, 12, 12, 83, 200]}, "unknown_element"),
    ({"pbc": [True, True, False]}, "unparsable_structure"),
    ({"positions": [[0.0, 0.0, 0.0]]}, "unparsable_structure"),
])
def test_bad_ase_dicts_get_issue_codes(change, code):
    record = raw(MG3BI2_PHONON)
    record["structure"]["data"].update(change)
    assert clean([record], "phonon")[MG3BI2_PHONON]["clean_issue"] == code


# ------------------------------------------------------------------------------------------ values, units
def test_phonon_grid_in_thz_is_converted_and_other_grids_refused():
    in_thz = raw(MG3BI2_PHONON)
    in_thz["values"]["frequencies_cm"] = (properties.PHONON_GRID_CM / 33.35641).tolist()
    shifted = raw(MG3BI2_PHONON, record_id="snapshot:phonon:row-90000")
    shifted["values"]["frequencies_cm"] = (properties.PHONON_GRID_CM + 10.0).tolist()
    rows = clean([in_thz, shifted], "phonon")
    assert rows[MG3BI2_PHONON]["clean_issue"] is None
    assert rows[MG3BI2_PHONON]["frequencies_cm"] == properties.PHONON_GRID_CM.tolist()
    assert rows[shifted["record_id"]]["clean_issue"] == "wrong_shape"


def test_dielectric_parts_share_one_frame_and_ionic_is_total_minus_electronic():
    record = raw(CDCL2_DIELECTRIC)
    row = clean([record], "dielectric")[CDCL2_DIELECTRIC]
    electronic, ionic, total = (np.array(row[part]) for part in ("electronic", "ionic", "total"))
    np.testing.assert_allclose(ionic, total - electronic, atol=1e-15)
    for part in (electronic, ionic, total):
        np.testing.assert_array_equal(part, part.T)
    given = np.array(record["values"]["electronic"])
    np.testing.assert_allclose(electronic, (given + given.T) / 2, atol=1e-15)  # structure frame, symmetric part


@pytest.mark.parametrize(("value", "code"), [
    ({"unparsed": "[[1, 2]", "error": "not JSON"}, "unparsable_tensor"),
    ([[1.0, 2.0, 3.0]] * 2, "wrong_shape"),
    ([[1.0, 2.0], [3.0]], "wrong_shape"),
    ([[1.0, "x", 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "unparsable_tensor"),
    ([[1.0, float("nan"), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "unparsable_tensor"),
    ([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]], "unparsable_tensor"),  # far from symmetric
    (None, "missing_field"),
])
def test_bad_values_get_issue_codes(value, code):
    record = raw(CDCL2_DIELECTRIC)
    record["values"]["total"] = value
    row = clean([record], "dielectric")[CDCL2_DIELECTRIC]
    assert row["clean_issue"] == code
    assert row["total"] is None and row["structure_json"] is not None


# ------------------------------------------------------------------------------------- output, params
def _write_fixture_raw(path: Path, prop: str, copies: int = 1) -> None:
    records = []
    for record_id, record in SNAPSHOT_ROWS.items():
        if record["property"] == prop:
            for n in range(copies):
                row_number = record["provenance"]["row"] * 100 + n
                records.append({**copy.deepcopy(record), "record_id": f"snapshot:{prop}:row-{row_number % 100000:05d}",
                                "provenance": {**record["provenance"], "row": row_number}})
    write_raw(path, records)


def test_clean_property_is_deterministic_and_independent_of_workers(tmp_path):
    raw_path = tmp_path / "raw" / "piezo.jsonl"
    _write_fixture_raw(raw_path, "piezo", copies=40)  # 80 records: more than one chunk, so workers=2 forks
    spec = properties.get("piezo")
    outputs = []
    for run, workers in enumerate((1, 1, 2)):
        out, report = tmp_path / f"clean-{run}.parquet", tmp_path / f"report-{run}.json"
        cleaning.clean_property(spec, raw_path, out, report, dataclasses.replace(CLEAN, workers=workers))
        outputs.append((out.read_bytes(), report.read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
    table = pq.read_table(tmp_path / "clean-0.parquet")
    assert table.num_rows == len(read_raw(raw_path))
    assert table.schema.equals(cleaning.clean_schema(spec), check_metadata=False)
    assert table.column("record_id").to_pylist() == sorted(table.column("record_id").to_pylist())
    report = json.loads(outputs[0][1])
    # AgI (zinc blende, primitive cell) has no determined frame; HCl is settled by Neumann's principle alone.
    assert report["clean_issue"] == {"duplicate_identical": 78, "frame_ambiguous": 1, "none": 1}
    assert report["frame_evidence"] == {"frame_ambiguous": 40, "unique": 40}  # duplicates: on their own evidence


def test_schema_columns_are_fixed():
    schema = cleaning.clean_schema(properties.get("elastic"))
    assert schema.names[:4] == ["record_id", "property", "material_id", "formula"]
    assert schema.field("stiffness_voigt").type == pa.list_(pa.list_(pa.float64(), 6), 6)
    assert schema.field("frame_rotation").type == pa.list_(pa.list_(pa.float64(), 3), 3)
    assert cleaning.clean_schema(properties.get("phonon")).field("dos").type == pa.list_(pa.float64(), 51)
    dielectric = cleaning.clean_schema(properties.get("dielectric"))
    parts = ["electronic", "ionic", "total"]
    assert [name for name in dielectric.names if name in parts] == parts


@pytest.mark.parametrize(("sections", "message"), [
    ({"symmetry": {"symprec": -0.1}}, "symmetry.symprec"), ({"clean": {"workers": 0}}, "clean.workers"),
    ({"clean": {"unknown_key": 1}}, r"clean: unknown key\(s\) \['unknown_key'\]"),
    ({"symmetry": {"neumann_tolerance": 0.1}, "clean": {"symmetrize_max_residual": 0.01}}, "clean.neumann_rtol"),
    ({"clean": {"duplicate_rtol": "small"}}, "clean.duplicate_rtol"),
])
def test_bad_params_are_refused(sections, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        cleaning.CleanParams.from_params(write_params(tmp_path / "params.yaml", **sections))


def test_records_of_another_property_are_refused():
    with pytest.raises(ValueError, match="property"):
        cleaning.clean_records([raw(AGI_PIEZO)], properties.get("elastic"), CLEAN)


# -------------------------------------------------------------------------------------- whole snapshot
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="the pinned snapshot ../shared/datasets is not here")
def test_whole_snapshot_meets_the_neumann_target(tmp_path):
    """>= 99% of the records clean accepts (no issue, frame not 'unresolved') have a Neumann residual below 1e-3
    against their own stored structure, recomputed from the parquet; every one of them names the evidence that
    settled its frame; and the share settled matches what was measured (piezo: about half the records have a frame
    the data do not determine, zoo.data.cleaning.evidence)."""
    # Longer than ~60 lines: cleaning the whole snapshot takes minutes, so every check of its result sits in this
    # one test, each figure with the comment that says where it comes from.
    from zoo.data.sources import snapshot

    # share of all records stored consistent. Elastic (three source files, 2832 records): 80 fit no frame, and 16 of
    # StrainTensorNet's (Laue -3 and 4/m: both spglib-built frames unstable) are frame_ambiguous; the claimed IEEE
    # frame settles the newer files' records where 'ieee' and 'standard' both hold and disagree (elatbot_val through
    # the mp-elastic-extra pool), zoo.data.cleaning.evidence
    floors = {"elastic": 0.85, "dielectric": 0.99, "piezo": 0.45}
    for prop, floor in floors.items():
        spec = properties.get(prop)
        raw_path, out = tmp_path / f"{prop}.jsonl", tmp_path / f"{prop}.parquet"
        snapshot.fetch_property(prop, SHARED_DATASETS, raw_path)
        params = dataclasses.replace(CLEAN, workers=2)
        result = cleaning.clean_property(spec, raw_path, out, tmp_path / f"{prop}.json", params)
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == len(read_raw(raw_path))
        accepted = [row for row in rows if row["clean_issue"] is None and row["frame_action"] != "unresolved"]
        residuals = np.array([stored_residual(row, spec) for row in accepted])
        assert np.mean(residuals < 1e-3) >= 0.99, prop
        assert len(accepted) / len(rows) >= floor, prop
        assert all(row["frame_evidence"] in evidence.EVIDENCE for row in accepted), prop
        outcome = result.report["frames"]["outcome"]
        assert sum(outcome.values()) == len(rows) - sum(
            count for code, count in result.report["clean_issue"].items() if code not in ("none", "frame_ambiguous"))
        if prop == "piezo":
            assert outcome["frame_ambiguous"] > 0.4 * len(rows) and result.report["frames"]["unstable_derived_frame"] > 300
            conventions = result.report["frames"]["conventions"]["matminer-0.4.1/piezoelectric_tensor.csv"]
            assert conventions["standard"]["holds"] and not conventions["ieee"]["holds"]
        elif prop == "elastic":
            # the 2015 file settles every frame (its structure-frame column); only the newer files leave some open
            ambiguous_files = {json.loads(row["provenance_json"])["file"] for row in rows
                               if row["clean_issue"] == "frame_ambiguous"}
            assert ambiguous_files <= {"mp-elastic-extra/elatbot_val.jsonl", "mp-elastic-extra/straintensornet_val.jsonl"}
            report, elatbot = result.report["frames"], "mp-elastic-extra/elatbot_val.jsonl"
            assert outcome["frame_ambiguous"] == 16
            assert report["conventions"][elatbot]["ieee"]["pool"] == "mp-elastic-extra"
            assert report["settled_by_claimed_frame"] == {"matminer-0.4.1/elastic_tensor.csv": 0, elatbot: 77,
                                                          "mp-elastic-extra/straintensornet_val.jsonl": 199}
            assert report["settled_by_pooled_convention"][elatbot] == 122
        else:
            assert outcome["frame_ambiguous"] == 0, prop
        if prop == "elastic":
            raw_by_id = {record["record_id"]: record for record in read_raw(raw_path)}
            # only the 2015 file has a column claimed in the structure frame (the newer files give none)
            rotated = [row for row in accepted if not row["frame_action"].startswith("used_original_column")
                       and raw_by_id[row["record_id"]]["values"].get("stiffness_voigt_original") is not None]
            original = {row["record_id"]: given_cartesian(raw_by_id[row["record_id"]], "stiffness_voigt_original",
                                                          "stiffness") for row in rotated}
            # As given within the Neumann tolerance: the rotation taken agrees with the column claimed in the
            # structure frame.
            agree = [
                np.allclose(
                    tensors.rotate(given_cartesian(raw_by_id[row["record_id"]], "stiffness_voigt", "stiffness"),
                                   np.array(row["frame_rotation"])),
                    original[row["record_id"]], rtol=0, atol=1e-3 * np.abs(row["stiffness_voigt"]).max())
                for row in rotated if not row["frame_action"].endswith("+symmetrized")
            ]
            assert np.mean(agree) >= 0.99
            # Symmetrized (residual up to symmetrize_max_residual): the members of the settled class differ by that
            # noise, which the projection removes; the stored tensor is the structure-frame column's projection.
            for row in rotated:
                if row["frame_action"].endswith("+symmetrized"):
                    info = symmetry.analyze(Structure.from_dict(json.loads(row["structure_json"])))
                    stored = tensors.voigt_to_cartesian(np.array(row["stiffness_voigt"]), "stiffness")
                    deviation = np.linalg.norm(stored - symmetry.symmetrize(original[row["record_id"]], info))
                    assert deviation <= CLEAN.frame_distinct_rtol * np.linalg.norm(stored), row["record_id"]

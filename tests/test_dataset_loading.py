"""zoo.data.datasets.load_folder reads a dataset folder's own files. `datasets` keys its cache of a local folder on
the folder's name and schema, not on the contents: two builds of one dataset that differ only in a value share a
key, so through one cache the second loads as the first. The stages (train, evaluate, `zoo audit`) and
zoo.datasets.load must never get another build than the one on disk."""

from __future__ import annotations

import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from tests.dataset_builds import SALTED, clean_rows, validate_into
from zoo.data import datasets as zd
from zoo.data.dataset_schema import parquet_path, write_parquet

PROP = "piezo"


def test_two_builds_of_one_name_load_as_themselves(tmp_path):
    accepted, report, _ = validate_into(tmp_path / "inputs", PROP, clean_rows(PROP, 20))
    first = zd.build_dataset(PROP, accepted, report, tmp_path / "first", version="1.0.0", **SALTED).path
    second = tmp_path / "second" / first.name
    shutil.copytree(first, second)
    path = second / parquet_path("test")
    table = pq.read_table(path)
    column = table.column_names.index("piezo_irreps")
    values = table.column(column).to_pylist()
    values[0][0] += 1.0  # one value of one record: same name, same schema, same sizes
    field = table.schema.field(column)
    write_parquet(table.set_column(column, field, pa.array(values, type=field.type)), path)

    # The hazard: one shared cache, two folders, the second one's values never seen.
    shared = str(tmp_path / "shared-cache")
    assert datasets.load_dataset(str(first), cache_dir=shared)["test"][0]["piezo_irreps"] == \
        datasets.load_dataset(str(second), cache_dir=shared)["test"][0]["piezo_irreps"] != values[0]

    assert zd.load_folder(second)["test"][0]["piezo_irreps"] == values[0]
    assert zd.load_folder(first)["test"][0]["piezo_irreps"] != values[0]
    assert zd.load_local(PROP, second.parent)["test"][0]["piezo_irreps"] == values[0]

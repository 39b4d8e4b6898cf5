"""Reads a Delta table with the `deltalake` Python package (an independent reader of the
tables laketide writes) and prints a JSON summary for tests/interop.rs."""
import json
import os
import sys

from deltalake import DeltaTable

table = DeltaTable(sys.argv[1])
data = table.to_pyarrow_table()
print(json.dumps({
    "version": table.version(),
    "partition_columns": list(table.metadata().partition_columns),
    "schema": {field.name: str(field.type) for field in data.schema},
    "rows": data.num_rows,
    "events": sum(data.column("events").to_pylist()),
    "actions": sorted(set(data.column("action").to_pylist())),
    "first_window": str(min(data.column("window_start").to_pylist())),
}))
sys.stdout.flush()
# Skip interpreter teardown: the reader's native thread pools can abort the process at exit
# after the work is done ("terminate called without an active exception").
os._exit(0)

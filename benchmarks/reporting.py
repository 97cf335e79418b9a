"""Where every benchmark's result goes: one JSON line on stdout, and the same result in
`results/benchmarks/<name>.json`, from which `make readme` fills the README's benchmark table.

The file records the command line (script name and flags only) and the machine's core count next to the
numbers, so a reader can tell what was run and on what.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "results" / "benchmarks"


def report(name: str, result: dict, out_dir: Path | None = BENCHMARKS) -> dict:
    """Print `result` as one JSON line and write it to `<out_dir>/<name>.json` (`out_dir=None`: print only)."""
    print(json.dumps(result, sort_keys=True), flush=True)
    if out_dir is not None:
        from common.files import atomic_write_text

        # absolute paths (e.g. a photo folder) are shortened to their last part: no machine paths in the record
        args = [f".../{Path(a).name}" if os.path.isabs(a) else a for a in sys.argv[1:]]
        record = {"benchmark": name, "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *args]),
                  "cpu_cores": os.cpu_count(), "result": result}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return result

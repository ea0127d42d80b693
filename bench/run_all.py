"""`make bench`: every benchmark in one go (about 60 minutes on 2 cores; HNSW is not included:
bench/bench_gallery.py --ann pq hnsw measures it too). Each writes its JSON under bench/results/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RUNS = [["calibrate_threshold.py"], ["bench_engine.py"], ["bench_pipeline.py"], ["bench_gallery.py"],
        ["bench_unknowns.py"], ["bench_ui.py"], ["bench_decode.py"], ["eval_reembed_shared.py"],
        ["bench_cameras.py"], ["bench_backbone.py"], ["eval_liveness.py"]]


def main() -> int:
    failed = []
    for run in RUNS:
        print(f"== {' '.join(run)}", flush=True)
        if subprocess.run([sys.executable, str(BENCH / run[0]), *run[1:]]).returncode != 0:
            failed.append(run[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Two versions of the service under the same load, side by side in one run: is a change slower?

    python -m bench.side_by_side --before HEAD~3 --data-dir ../shared/data      # a git ref of this repo
    python -m bench.side_by_side --before /path/to/other/checkout --rounds 3

The "before" checkout (a git worktree made for the run, removed after) and this one each serve the
shipped models in turn, one worker, with `python -m bench`'s HTTP workloads at concurrency 1 and
32. The two alternate, row by row and round by round (A B B A ...), so that a slow phase of a
shared machine falls on both; each cell is the median over the rounds. The last column is
after / before: above 1.00 the change is faster.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.__main__ import workloads
from bench.load import SERVER_LOGS, LoadRow, run_rows, running
from harness.server import service_process

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checkout(ref_or_path: str) -> Iterator[Path]:
    """A folder holding the "before" version: the path itself, or a temporary worktree of a git ref."""
    if Path(ref_or_path).is_dir():
        yield Path(ref_or_path)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), ref_or_path],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], capture_output=True)


def measure(root: Path, models: Path, label: str, data_dir: str | None, concurrencies: tuple[int, ...],
            seconds: float) -> list[LoadRow]:
    server = service_process(SERVER_LOGS, root=root, models_dir=models, log_level="warning")
    with running(server, "/readyz") as live:
        return run_rows(label, live.url, workloads(data_dir), concurrencies, seconds)


def table(rounds: dict[str, list[list[LoadRow]]]) -> str:
    before, after = (rounds[side] for side in ("before", "after"))
    lines = ["| workload | concurrency | before req/s | after req/s | before p99 ms | after p99 ms | after / before |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(before[0]):
        b_rps = statistics.median(r[i].requests_s for r in before)
        a_rps = statistics.median(r[i].requests_s for r in after)
        b_p99 = statistics.median(r[i].p99_ms for r in before)
        a_p99 = statistics.median(r[i].p99_ms for r in after)
        lines.append(f"| {row.workload} | {row.concurrency} | {b_rps:,.0f} | {a_rps:,.0f} | {b_p99:.2f} | "
                     f"{a_p99:.2f} | {a_rps / b_rps:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a git ref of this repository, or a checkout's folder")
    parser.add_argument("--data-dir", help="MNIST location (default: $VQVAE_DATA_DIR or the user cache)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each row")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two versions")
    args = parser.parse_args(argv)
    concurrencies = (1, 32)
    rounds: dict[str, list[list[LoadRow]]] = {"before": [], "after": []}
    with checkout(args.before) as before:
        for n in range(args.rounds):
            order = [("before", before), ("after", ROOT)] if n % 2 == 0 else [("after", ROOT), ("before", before)]
            for side, root in order:
                print(f"round {n + 1}: {side} ({root})", flush=True)
                # Both serve the "before" checkout's models: files that version reads (newer kinds of
                # model it could not), and that this one reads unchanged.
                rounds[side].append(measure(root, before / "models", side, args.data_dir, concurrencies,
                                            args.seconds))
    print(f"\nbefore: {args.before}; after: this checkout; median of {args.rounds} alternating rounds\n")
    print(table(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

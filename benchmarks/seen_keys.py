"""The poll's de-duplication table against crafted keys, and against a plain ``set``, in one run.

    .venv/bin/python benchmarks/seen_keys.py              # two runs, about five minutes
    .venv/bin/python benchmarks/seen_keys.py --runs 1 --repeat 1

It fills, with N distinct keys, each of:
- the baseline: ``BaselineSeenKeys`` below, a copy of SeenKeys as it was before its spread was
  salted (shard = key & 63, slot = (key ^ key >> 24 ^ key >> 48) >> 6), kept here only to measure;
- the salted table, ``cmx_connect_exporter.counting.dedupe.SessionTable`` as the exporter uses it, a page
  of 1,000 keys at a time (without logins: their stamps take the same slots either way);
- a ``set`` of the keys.
Ordinary keys are random 48-bit MACs, like the simulator's randomised ones; crafted keys are the MACs
that all fall in one shard and one first slot of the baseline. Every fill runs in a fresh
process, whose wall time and peak RSS growth are measured (the keys are made before, in an
``array``, so only what the structure keeps is counted: for the ``set``, its ints too). A figure
is the best time of three such fills (other load on the machine only ever adds time) and the
largest RSS growth, also given as a ratio to the baseline filled with as many ordinary keys in
the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from array import array
from pathlib import Path

from cmx_connect_exporter.counting.dedupe import SessionTable

STRUCTURES = ("baseline", "salted", "set")
CASES = (("ordinary", 20_000), ("ordinary", 1_000_000), ("crafted", 20_000))


class BaselineSeenKeys:
    """SeenKeys before the fix, unsalted: where a key goes is fixed by the key alone."""

    _MIN_SLOTS = 1 << 6

    def __init__(self) -> None:
        self._shards = [array("Q", [0]) * self._MIN_SLOTS for _ in range(64)]
        self._used = [0] * 64
        self._zero = False

    def add(self, key: int) -> bool:
        if not key:
            new, self._zero = not self._zero, True
            return new
        shard = key & 63
        slots = self._shards[shard]
        if not _baseline_place(slots, key):
            return False
        self._used[shard] += 1
        if 4 * self._used[shard] > 3 * len(slots):
            bigger = array("Q", [0]) * (2 * len(slots))
            for held in slots:
                if held:
                    _baseline_place(bigger, held)
            self._shards[shard] = bigger
        return True


def _baseline_place(slots: array[int], key: int) -> bool:
    mask = len(slots) - 1
    i = (key ^ key >> 24 ^ key >> 48) >> 6 & mask
    held = slots[i]
    while held:
        if held == key:
            return False
        i = (i + 1) & mask
        held = slots[i]
    slots[i] = key
    return True


def make_keys(case: str, n: int) -> array[int]:
    if case == "crafted":  # h << 24 | h with h = m << 6: shard 0 and first slot 0 for every one
        return array("Q", (m << 30 | m << 6 for m in range(n)))
    rng = random.Random(1)
    return array("Q", (rng.getrandbits(48) for _ in range(n)))


def _status_kib(name: str) -> int:
    return int(re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])


def fill(structure: str, case: str, n: int) -> dict[str, float]:
    """One fill in this process: seconds, and peak RSS growth in MiB."""
    keys = make_keys(case, n)
    table = {"baseline": BaselineSeenKeys, "salted": SessionTable, "set": set}[structure]()
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    if isinstance(table, SessionTable):
        for page in range(0, n, 1000):
            table.add_all(keys[page:page + 1000].tolist())
    else:
        add = table.add
        for key in keys:
            add(key)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_mib": (_status_kib("VmHWM") - before) / 1024}


def fill_apart(structure: str, case: str, n: int, repeat: int) -> dict[str, float]:
    """The best time of ``repeat`` fills, each in a fresh process, and the largest peak RSS growth."""
    fills = [json.loads(subprocess.run([sys.executable, __file__, "--fill", structure, case, str(n)],
                                       check=True, capture_output=True, text=True).stdout) for _ in range(repeat)]
    return {"seconds": min(f["seconds"] for f in fills), "rss_mib": max(f["rss_mib"] for f in fills)}


def one_run(repeat: int) -> dict[tuple[str, str, int], dict[str, float]]:
    figures = {}
    for case, n in CASES:
        for structure in STRUCTURES:
            figures[structure, case, n] = fill_apart(structure, case, n, repeat)
            print(f"  {structure:8} {case:8} {n:>9,}: {figures[structure, case, n]}", file=sys.stderr, flush=True)
    return figures


def table(runs: list[dict[tuple[str, str, int], dict[str, float]]]) -> str:
    """One row per structure and case; each cell gives every run's figure, in run order."""
    def cell(fmt: str, values: list[float]) -> str:
        return " / ".join(format(v, fmt) for v in values)

    lines = ["| structure | keys | N | time s | time / baseline | peak RSS growth MiB | RSS / baseline |",
             "|---|---|---|---|---|---|---|"]
    for case, n in CASES:
        for structure in STRUCTURES:
            mine = [run[structure, case, n] for run in runs]
            base = [run["baseline", "ordinary", n] for run in runs]
            lines.append("| " + " | ".join((
                structure, case, f"{n:,}",
                cell(".3f", [m["seconds"] for m in mine]),
                cell(".2f", [m["seconds"] / b["seconds"] for m, b in zip(mine, base, strict=True)]),
                cell(".1f", [m["rss_mib"] for m in mine]),
                cell(".2f", [m["rss_mib"] / b["rss_mib"] for m, b in zip(mine, base, strict=True)]),
            )) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="fills per figure: the best time counts")
    parser.add_argument("--fill", nargs=3, metavar=("STRUCTURE", "CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        structure, case, n = args.fill
        print(json.dumps(fill(structure, case, int(n))))
        return
    from run import machine  # benchmarks/run.py, beside this script; only the parent needs it

    runs = []
    for number in range(args.runs):
        print(f"run {number + 1}", file=sys.stderr, flush=True)
        runs.append(one_run(args.repeat))
    print(f"Machine: {machine()}\n")
    print(table(runs))


if __name__ == "__main__":
    main()

"""Where a machine's CPU goes while a command runs: every process's CPU time, sampled from /proc.

    python benchmarks/process_cpu.py [--interval 2] [--busy LABEL [--settle 12]] -- COMMAND ...

Runs COMMAND, and every `--interval` seconds reads the CPU time of every process on the machine
(Linux only). Processes are labelled by their title (`ray::TrainController`, `ray::IDLE`) or
their command line. Reported: CPU-seconds per label over the whole command, and, with `--busy
LABEL`, over only the intervals at least `--settle` seconds into a stretch in which processes so
labelled kept at least one core busy (for `ray::RayTrainWorker`: a cell's steady training, its
start-up left out), so that what runs beside training shows. A process that starts and ends
between two samples is missed.
Results: benchmarks/results/process_cpu.json (with the per-interval timeline), or `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "process_cpu.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[int, tuple[float, str]]:
    """CPU-seconds (user + system) and a label for every process that can be read now."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:  # it ended between the listing and the read
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        found[int(entry.name)] = (seconds, _label(argv))
    return found


def _label(argv: list[bytes]) -> str:
    words = [w.decode(errors="replace") for w in argv if w]
    if not words:
        return "(kernel)"
    if words[0].startswith("ray::"):
        return words[0].split()[0].split(".")[0]  # ray::TrainController.run -> the actor
    names = [Path(w).name for w in words[:3] if not w.startswith("-")]
    return " ".join(names)[:60]


def interval_use(before: dict, after: dict) -> Counter:
    """CPU-seconds each label used between two snapshots (new processes from zero)."""
    used: Counter = Counter()
    for pid, (seconds, label) in after.items():
        start = before[pid][0] if pid in before else 0.0  # a Ray worker may take a new title
        if seconds > start:
            used[label] += seconds - start
    return used


def sample(command: list[str], interval: float) -> tuple[int, list[dict]]:
    """Run the command; a timeline of per-interval CPU use by label."""
    child = subprocess.Popen(command)
    timeline, previous, started = [], snapshot(), time.monotonic()
    last = started
    while child.poll() is None:
        time.sleep(interval)
        current, now = snapshot(), time.monotonic()
        used = interval_use(previous, current)
        shown = {k: round(v, 2) for k, v in used.most_common() if v >= 0.01}
        timeline.append({"t": round(now - started, 2), "s": round(now - last, 2), "cpu_s": shown})
        previous, last = current, now
    return child.returncode, timeline


def summarise(timeline: list[dict], busy: str | None, settle: float) -> dict[str, object]:
    result: dict[str, object] = {"wall_s": sum(p["s"] for p in timeline), "all": _total(timeline)}
    if busy:
        chosen = list(_settled(timeline, busy, settle))
        result |= {"busy_label": busy, "settle_s": settle, "busy_s": sum(p["s"] for p in chosen),
                   "while_busy": _total(chosen)}  # fmt: skip
    return result


def _settled(timeline: list[dict], busy: str, settle: float):
    """The intervals at least `settle` seconds into a stretch where `busy` used >= 1 core."""
    stretch = 0.0
    for point in timeline:
        if point["cpu_s"].get(busy, 0.0) < point["s"]:
            stretch = 0.0
            continue
        if stretch >= settle:
            yield point
        stretch += point["s"]


def _total(points: list[dict]) -> dict[str, float]:
    counts: Counter = Counter()
    for point in points:
        counts.update(point["cpu_s"])
    return {k: round(v, 2) for k, v in counts.most_common()}


def _print(title: str, cpu_s: dict[str, float], seconds: float) -> None:
    print(f"\n{title}: {seconds:.0f} s, {sum(cpu_s.values()):.0f} CPU-s")
    for label, used in list(cpu_s.items())[:15]:
        print(f"{used:8.1f} CPU-s {used / max(seconds, 1e-9):5.2f} cores  {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--busy", help="also sum the intervals where this label used >= 1 core")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds of --busy to skip")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    returncode, timeline = sample(command, args.interval)
    summary = summarise(timeline, args.busy, args.settle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, **summary, "timeline": timeline}))
    _print("whole command", summary["all"], summary["wall_s"])
    if args.busy:
        title = f"{args.settle:g} s into stretches where {args.busy} used >= 1 core"
        _print(title, summary["while_busy"], summary["busy_s"])
    return returncode


if __name__ == "__main__":
    sys.exit(main())

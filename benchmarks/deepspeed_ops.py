"""What DeepSpeed's CPU communication op (`deepspeed_shm_comm`) costs and buys.

    python benchmarks/deepspeed_ops.py [--steps 80] [--repeats 3]

DeepSpeed builds the op whenever a process group starts on CPU; the project skips it
(`astropt.train.ops.skip_unused_ops`). Measured here, each in a fresh process:
- first start: from process start to a tiny engine ready, in a fresh TORCH_EXTENSIONS_DIR, the
  project's way (op skipped) and DeepSpeed's (op built), then DeepSpeed's again with the op
  cached;
- training: two processes (a gloo world of two, one thread each, as a 2-worker cell on 2 cores)
  train a model of the 1M preset's size and shape of matrices for `--steps` optimizer steps, with
  and without the op (cached, so its build is not timed), alternating, `--repeats` times. The
  model is plain torch, not astroPT, so that this measures DeepSpeed alone.
Results: benchmarks/results/deepspeed_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "deepspeed_ops.json"


def _since_process_start() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


def _model() -> torch.nn.Module:
    """About 1M parameters in matrices 128 wide, like the 1M preset's blocks: the op could only
    matter through the gradient all-reduce, whose volume this matches."""
    layers = [torch.nn.Linear(768, 128)]
    for _ in range(6):
        layers += [torch.nn.GELU(), torch.nn.Linear(128, 512), torch.nn.GELU(),
                   torch.nn.Linear(512, 128)]  # fmt: skip
    return torch.nn.Sequential(*layers, torch.nn.Linear(128, 768))


def child(mode: str, steps: int) -> dict[str, float]:
    """One process of a world (RANK, WORLD_SIZE, MASTER_* set by the parent): start an engine as
    `build_engine` does (torch AdamW passed in, ZeRO-0, fp32) with the op skipped
    (`init_world_of_one`, the project's way) or built (DeepSpeed's own `init_distributed`),
    then train `steps` steps of 30 sequences of 15 tokens per rank; times from process start."""
    import deepspeed

    from astropt.train.engine import init_world_of_one

    torch.set_num_threads(1)
    imported = _since_process_start()
    if mode == "skip":
        init_world_of_one("gloo")
    else:
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    torch.manual_seed(0)
    model = _model()
    config = {"train_batch_size": 30 * int(os.environ["WORLD_SIZE"]),
              "train_micro_batch_size_per_gpu": 30, "zero_optimization": {"stage": 0},
              "steps_per_print": 10**12}  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    out = {"import_s": imported, "engine_ready_s": _since_process_start()}
    if steps:
        batch = torch.randn(30, 15, 768)
        warmup = 5
        for step in range(warmup + steps):
            if step == warmup:
                started = time.perf_counter()
            loss = torch.nn.functional.huber_loss(engine(batch[:, :-1]), batch[:, 1:])
            engine.backward(loss)
            engine.step()
        elapsed = time.perf_counter() - started
        out["tokens_per_s"] = steps * 14 * config["train_batch_size"] / elapsed
    out["shm_op_loaded"] = deepspeed.comm.comm.cdb.shm_comm_op is not None
    engine.destroy()
    return out


def run_world(mode: str, world: int, ext_dir: str, steps: int) -> dict:
    """`world` child processes started together; rank 0's numbers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = []
    for rank in range(world):
        env = dict(os.environ, TORCH_EXTENSIONS_DIR=ext_dir, RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")  # fmt: skip
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(steps)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a {mode} process failed: {[p.returncode for p in procs]}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=["skip", "build"])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)), flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="astropt-ops-"))
    first_start = {
        "skip_fresh": run_world("skip", 1, str(work / "skip"), 0),
        "build_fresh": run_world("build", 1, str(work / "build"), 0),
        "build_cached": run_world("build", 1, str(work / "build"), 0),
    }
    print(json.dumps(first_start), flush=True)
    training: dict[str, list[dict]] = {"skip": [], "build": []}
    for _ in range(args.repeats):
        for mode in ("skip", "build"):
            training[mode].append(run_world(mode, 2, str(work / "build"), args.steps))
            print(mode, json.dumps(training[mode][-1]), flush=True)
    ratios = [b["tokens_per_s"] / s["tokens_per_s"]
              for s, b in zip(training["skip"], training["build"], strict=True)]  # fmt: skip
    summary = {
        "steps": args.steps, "repeats": args.repeats,
        "cpus": os.cpu_count(), "first_start": first_start, "training": training,
        "ratio_build_over_skip": {"median": statistics.median(ratios), "min": min(ratios),
                                  "max": max(ratios)},
        "load_average": os.getloadavg(),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("first_start", "ratio_build_over_skip")}, indent=2))


if __name__ == "__main__":
    main()

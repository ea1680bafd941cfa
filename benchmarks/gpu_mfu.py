"""Model FLOPs utilisation on one GPU, bf16, through the project's own training step.

    python benchmarks/gpu_mfu.py              # on one GPU: about 5 minutes on an H100/H200
    python benchmarks/gpu_mfu.py --cpu-smoke  # anywhere: the same code path, tiny, on the CPU

Each case is trained the way a cell's worker trains it: uint8 images patchified and
standardised on the device, the DeepSpeed engine of `astropt.train.engine` (bf16, torch's fused
AdamW, gradient clipping) and the workers' float32 loss (`astropt.train.loop.fp32_loss`), one
optimizer step per micro-batch. Presets 21M, 89M and 309M at
256 x 256 and 89M at the paper's 512 x 512, each with torch.compile off and on
(`engine.compile()`); 309M also with ZeRO stages 1 and 2, to pick the best stage for one GPU.
MFU = training FLOPs per token (6N + attention, `astropt.compute.flops_per_token`) x tokens/s / the
GPU's dense bf16 peak. Target: >= 45% for 309M; the whole run under 8 minutes on one H200.
Results: benchmarks/results/gpu_mfu.json; a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import deepspeed
import torch

from astropt.compute import flops_per_token, peak_flops
from astropt.config import DataConfig, ImageConfig, ModelConfig, TrainConfig, TrainingConfig
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.train.engine import build_engine, init_world_of_one
from astropt.train.loop import fp32_loss
from astropt.train.plan import DataFacts, make_plan

RESULTS = Path(__file__).parent / "results" / "gpu_mfu.json"


@dataclass(frozen=True)
class Case:
    preset: str
    image_size: int
    batch: int  # images per step: 16k-32k tokens, enough to fill the GPU
    zero_stage: int = 0
    compile: bool = False


def gpu_cases() -> list[Case]:
    sizes = [("21M", 256, 128), ("89M", 256, 64), ("309M", 256, 64), ("89M", 512, 32)]
    cases = [Case(p, s, b, compile=c) for p, s, b in sizes for c in (False, True)]
    return cases + [Case("309M", 256, 64, zero_stage=z) for z in (1, 2)]


def measure(case: Case, device: str, warmup: int, steps: int) -> dict[str, object]:
    image = ImageConfig(image_size=case.image_size, patch_size=16)
    model_cfg = ModelConfig.from_preset(case.preset, image=image)
    cfg = TrainConfig(
        model=model_cfg,
        data=DataConfig(train="unused/train", val="unused/val"),  # never read
        tokens=10**12,
        training=TrainingConfig(
            global_batch_tokens=case.batch * image.tokens_per_image,
            micro_batch_images=case.batch,
            lr=1e-4,
            zero_stage=case.zero_stage,
        ),
    )
    plan = make_plan(cfg, 1, DataFacts(train_images=None, val_images=None))
    engine = build_engine(AstroPT(model_cfg), cfg, plan, bf16=device == "cuda")
    if case.compile:
        engine.compile()
    images = torch.randint(0, 256, (case.batch, *image.shape), dtype=torch.uint8).to(device)
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            started = time.perf_counter()
        loss = fp32_loss(engine, images_to_tokens(images, image.patch_size))
        engine.backward(loss)
        engine.step()
    _synchronize(device)
    tokens_per_s = steps * plan.global_batch_tokens / (time.perf_counter() - started)
    engine.destroy()
    peak = peak_flops(torch.cuda.get_device_name()) if device == "cuda" else None
    return asdict(case) | {
        "tokens_per_s": tokens_per_s,
        "mfu": flops_per_token(model_cfg).attention * tokens_per_s / peak if peak else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _table(rows: list[dict[str, object]]) -> str:
    header = f"{'preset':>6} {'size':>5} {'batch':>5} {'ZeRO':>4} {'compile':>7}"
    lines = [f"{header} {'tokens/s':>12} {'MFU':>6} {'GB':>6}"]
    for r in rows:
        case = f"{r['preset']:>6} {r['image_size']:>5} {r['batch']:>5} {r['zero_stage']:>4}"
        case += f" {r['compile']!s:>7}"
        if "error" in r:
            lines.append(f"{case} failed: {r['error'][:60]}")
            continue
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        mem = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.1f}"
        lines.append(f"{case} {r['tokens_per_s']:>12.0f} {mfu:>6} {mem:>6}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="one tiny case on the CPU: checks the script"
    )
    args = parser.parse_args()
    if args.cpu_smoke:
        device, cases, warmup, steps = "cpu", [Case("1M", 64, 8)], 1, 2
    elif torch.cuda.is_available():
        device, cases, warmup, steps = "cuda", gpu_cases(), 10, 30
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        print("gpu_mfu: no CUDA device here; run it on a GPU machine (or try --cpu-smoke)")
        return 0
    init_world_of_one("nccl" if device == "cuda" else "gloo")
    started = time.perf_counter()
    rows = []
    for case in cases:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            rows.append(measure(case, device, warmup, steps))
        except Exception as error:  # one failing variant (say, compile) must not lose the rest
            rows.append(asdict(case) | {"error": f"{type(error).__name__}: {error}"[:500]})
        print(json.dumps(rows[-1]), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run)",
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "wall_s": time.perf_counter() - started,
        "target_mfu_309M": 0.45,
        "rows": rows,
    }
    if not args.cpu_smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\n{result['device']}, {result['wall_s']:.0f} s\n{_table(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

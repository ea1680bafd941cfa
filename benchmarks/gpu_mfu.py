"""Model FLOPs utilisation on one GPU, bf16: presets 21M, 89M, 309M at 256 x 256 (and 89M at the
paper's 512 x 512), with torch.compile off and on, fused AdamW.

    python benchmarks/gpu_mfu.py            # about 5 minutes on one H100/H200; prints a table last

MFU = training FLOPs per token (6N + attention, `training_flops_per_token`) x tokens/s / the GPU's
dense bf16 peak. One GPU needs no ZeRO partitioning (stage 0; stages 1-3 only add communication
on a single device), so this times the model and optimizer themselves. Target: >= 45% for 309M.
Results: benchmarks/results/gpu_mfu.json. On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from astropt.config import ModelConfig
from astropt.model import AstroPT, training_flops_per_token
from astropt.train.loop import PEAK_BF16_FLOPS

RESULTS = Path(__file__).parent / "results" / "gpu_mfu.json"
CASES = [("21M", 256, 64), ("89M", 256, 32), ("309M", 256, 16), ("89M", 512, 8)]
WARMUP, STEPS = 5, 20


def measure(preset: str, image_size: int, batch: int, compiled: bool) -> dict[str, float]:
    cfg = ModelConfig.from_preset(preset, image_size=image_size)
    model = AstroPT(cfg).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    step_model = torch.compile(model) if compiled else model
    tokens = torch.randn(batch, cfg.n_patches, cfg.patch_dim, device="cuda")
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = step_model(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    tokens_per_s = STEPS * batch * cfg.block_size / (time.perf_counter() - started)
    name = torch.cuda.get_device_name()
    peak = next((p for k, p in PEAK_BF16_FLOPS.items() if k in name), float("nan"))
    mfu = training_flops_per_token(cfg) * tokens_per_s / peak
    return {"preset": preset, "image_size": image_size, "batch": batch, "compile": compiled,
            "tokens_per_s": tokens_per_s, "mfu": mfu,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_mfu: no CUDA device here; run it on a GPU machine")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for preset, size, batch in CASES:
        for compiled in (False, True):
            torch.cuda.reset_peak_memory_stats()
            rows.append(measure(preset, size, batch, compiled))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    print(f"\n{'preset':>6} {'size':>5} {'compile':>8} {'tokens/s':>12} {'MFU':>6}")
    for r in rows:
        print(f"{r['preset']:>6} {r['image_size']:>5} {r['compile']!s:>8} "
              f"{r['tokens_per_s']:>12.0f} {r['mfu']:>6.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

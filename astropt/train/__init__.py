"""Training one run: its plan, DeepSpeed engine, checkpoints, worker loop and driver side."""

import os

import torch

if not torch.cuda.is_available():
    # DeepSpeed then picks its CPU accelerator without printing a warning on stdout (which
    # `run_grid.py --dry-run --json` keeps for its JSON).
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

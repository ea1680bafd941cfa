"""Downstream science: linear probes of astroPT embeddings on galaxy properties.

- `probe_run` probes a finished cell run's exported model and logs the results to it (what the
  sweep calls at the end of a cell); `probe_model` probes any loaded model.
- `python -m astropt.probe` is the command line; `python -m astropt.probe.scale` relates the
  probe scores of a sweep's cells to their size and loss (`astropt.probe.scale.probe_scale`).
- Weights come from a cell run, an exported folder or an upstream astroPT checkpoint
  (`astropt.probe.weights`, `astropt.upstream`).
"""

from astropt.probe.embed import EmbedSettings, embed
from astropt.probe.errors import ProbeInputError
from astropt.probe.report import ProbeTable
from astropt.probe.run import ProbeOptions, probe_model, probe_run
from astropt.probe.weights import load_weights, save_weights

__all__ = [
    "EmbedSettings",
    "ProbeInputError",
    "ProbeOptions",
    "ProbeTable",
    "embed",
    "load_weights",
    "probe_model",
    "probe_run",
    "save_weights",
]

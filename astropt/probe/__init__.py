"""Downstream science: linear probes of astroPT embeddings on galaxy properties.

* :func:`probe_run` probes a finished cell run's exported model and logs the results to it
  (what the sweep calls at the end of a cell); :func:`probe_model` probes any loaded model.
* ``python -m astropt.probe`` is the command line; ``python -m astropt.probe.scale`` relates the
  probe scores of a sweep's cells to their size and loss
  (:func:`astropt.probe.scale.probe_scale`).
"""

from astropt.probe.embed import EmbedSettings, embed, load_weights
from astropt.probe.errors import ProbeInputError
from astropt.probe.report import ProbeTable
from astropt.probe.run import ProbeOptions, probe_model, probe_run

__all__ = [
    "EmbedSettings",
    "ProbeInputError",
    "ProbeOptions",
    "ProbeTable",
    "embed",
    "load_weights",
    "probe_model",
    "probe_run",
]

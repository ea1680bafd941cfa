"""MLflow names the probe writes and reads that `astropt.record` does not declare yet.

PENDING: these belong in `astropt.record.names` (the one owner of MLflow names); they are kept
here, in one place, until it declares them, and every probe module imports them from here.
"""

from enum import StrEnum

#: A cell run's exported weights: its artifact folder and the two files in it (written by
#: `astropt.train.recorder`, which spells them out itself).
MODEL_ARTIFACT = "model"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class ProbeName(StrEnum):
    METRIC = "probe"  # probe/<target>/<metric> (+ _std): the model's scores
    BASELINE_METRIC = "probe_baseline"  # probe_baseline/<features>/<target>/<metric>
    SCALE_METRIC = "probe_scale"  # probe_scale/<target>/<metric>/rho_<axis> on the parent
    ARTIFACTS = "probe"  # a cell run's probe table and embedding map
    SCALE_ARTIFACTS = "probe_scale"  # the parent run's probe-vs-scale files
    STD_SUFFIX = "_std"

"""Every name in the MLflow record: roles, statuses, tags, params and metrics."""

from enum import StrEnum


class Role(StrEnum):
    SWEEP = "sweep"
    CELL = "cell"
    TRUNK = "trunk"
    FIT = "fit"


class Status(StrEnum):
    PENDING = "pending"  # planned by a sweep, not started yet
    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by the user; a re-run continues it

    @property
    def done(self) -> bool:
        """Finished or diverged: a re-run leaves it alone."""
        return self in (Status.FINISHED, Status.DIVERGED)


class Tag(StrEnum):
    PARENT = "mlflow.parentRunId"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag: which view the UI opens
    ROLE = "astropt.role"
    CELL = "astropt.cell"
    STATUS = "astropt.status"
    ERROR = "astropt.error"  # why a run failed: each failed worker's own error
    PHASE = "astropt.phase"  # what a run was doing last: worker start, engine init, ...
    NODE = "astropt.node_id"  # rank 0's Ray node, set at every start
    STEPS_DONE = "astropt.steps_done"
    SIZE = "astropt.size"
    SEED = "astropt.seed"
    TOKENS_BUDGET = "astropt.tokens_budget"
    LR_MULTIPLIER = "astropt.lr_multiplier"
    TRUNK = "astropt.trunk"  # a branch: the trunk run it started from ...
    BRANCH_STEP = "astropt.branch_step"  # ... at this optimizer step
    INHERITED = "astropt.inherited_through"  # steps <= this were copied from the trunk's run
    GRID = "astropt.grid"
    GRID_HASH = "astropt.grid_hash"
    GIT = "astropt.git"
    PROBE_DONE = "astropt.probe.done"
    PROBE = "astropt.probe"  # prefix of the probe's own tags


class Param(StrEnum):
    """Params read across modules (the run logs more: its whole resolved configuration)."""

    PRESET = "preset"
    N_PARAMS = "n_params"  # non-embedding parameters: the N of the scaling law
    N_PARAMS_TOTAL = "n_params_total"
    TOKENS_BUDGET = "tokens_budget"
    UNIQUE_TOKENS = "unique_tokens"  # tokens in one pass over the training set
    LR = "lr"
    LR_MULTIPLIER = "lr_multiplier"
    SEED = "seed"
    DATA_TRAIN = "data_train"
    DATA_VAL = "data_val"
    WORLD_SIZE = "world_size"
    GLOBAL_BATCH_TOKENS = "global_batch_tokens"
    GRID_NAME = "grid_name"  # the sweep's parent run


class Metric(StrEnum):
    TRAIN_LOSS = "train/loss"
    VAL_LOSS = "val/loss"
    LR = "lr"
    TOKENS_SEEN = "tokens_seen"
    EPOCHS = "epochs"
    TOKENS_PER_S = "tokens_per_s"
    MFU = "mfu"
    FINAL_VAL_LOSS = "final/val_loss"
    FINAL_TOKENS_SEEN = "final/tokens_seen"
    FINAL_EPOCHS = "final/epochs"
    FINAL_COMPUTE_6ND = "final/compute_6nd"
    FINAL_COMPUTE_ATTENTION = "final/compute_attention"
    WORKER_START_S = "time/worker_start_s"
    ENGINE_INIT_S = "time/engine_init_s"
    FIRST_BATCH_S = "time/first_batch_s"
    EVAL_S = "time/eval_s"
    CHECKPOINT_S = "time/checkpoint_s"
    PEAK_RSS_MB = "peak_rss_mb"


#: The experiment view MLflow 3's UI opens (its default for an untagged experiment is GenAI).
MODEL_TRAINING_VIEW = "custom_model_development"


#: The fit's own run name and how an estimate X is logged: X, X_se, X_lo, X_hi.
FIT_RUN_NAME = "fit"
ESTIMATE_SUFFIXES = ("se", "lo", "hi")


class FitTag(StrEnum):
    FIT_RUN = "astropt.fit_run"  # on the sweep's parent: the latest fit run's id
    FIT_CHECKS = "astropt.fit_checks"  # "ok", or e.g. "2 errors, 1 warning"


class FitParam(StrEnum):
    N_CELLS = "n_cells"
    N_EXCLUDED = "n_excluded"
    INIT_GRID_STARTS = "init_grid_starts"
    COMPUTE = "compute"  # which compute drove the IsoFLOP grouping and the allocation
    DATA_CONSTRAINED = "data_constrained"  # whether D was replaced by effective data


class FitMetric(StrEnum):
    ISOFLOP_A = "isoflop/a"
    ENVELOPE_A = "envelope/a"
    EXTRAPOLATION_MEAN = "extrapolation/mean_abs_rel_error"
    EXTRAPOLATION_MAX = "extrapolation/max_abs_rel_error"
    CHECK_ERRORS = "checks/errors"
    CHECK_WARNINGS = "checks/warnings"


def law_metric(name: str) -> str:
    """The parametric law's estimate `name` (E, A, B, alpha, beta, a, b, G)."""
    return f"fit/{name}"


def allocation_metric(compute: float, quantity: str) -> str:
    """The compute-optimal N_opt, D_opt or loss at one budget (MLflow names may not hold '+')."""
    return f"optimal_{compute:.3g}".replace("+", "") + f"/{quantity}"


def power_law_metric(variable: str, name: str) -> str:
    """A coefficient of the single-variable law L(variable)."""
    return f"power_law_{variable}/{name}"


#: A cell run's exported weights: its artifact folder and the two files in it.
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

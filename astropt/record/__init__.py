"""The MLflow record of a sweep: every name in it (`names`), the code that opens, closes and
searches runs (`runs`), and the buffer that writes their metrics (`metrics`). Every other
module imports these from here.

What the record holds (read by the sweep summary, the probes and `fit_scaling`):

- One experiment per grid, tagged as a model-training experiment (`ui_link` opens that view).
  The sweep's parent run has role `sweep`; each cell is a child run (role `cell`) named by the
  cell; a branching sweep's trunks are child runs with role `trunk`; a scaling fit is a child
  run with role `fit`.
- A run's status tag is written by one process only: the driver that opened the run
  (`open_run`, `close_run`). Workers write metrics and the tags of where and how far they ran.
- Metrics are indexed by optimizer step, each (metric, step) written once (`MetricBuffer`).
  A finished branch's run receives its trunk's history up to the branch step (`INHERITED`).
- N = param `n_params` (non-embedding), D = metric `final/tokens_seen`, the loss the fits use
  = `final/val_loss`; compute both ways in `final/compute_6nd` and `final/compute_attention`.

This module imports MLflow and nothing heavier, so `fit_scaling` can use it without Ray or torch.
"""

from astropt.record.metrics import (
    MAX_BATCH,
    MetricBuffer,
    MetricPoint,
    logged_through,
    metric_history,
    validation_curve,
)
from astropt.record.names import (
    CONFIG_FILE,
    ESTIMATE_SUFFIXES,
    FIT_RUN_NAME,
    MODEL_ARTIFACT,
    MODEL_TRAINING_VIEW,
    WEIGHTS_FILE,
    FitMetric,
    FitParam,
    FitTag,
    Metric,
    Param,
    ProbeName,
    Role,
    Status,
    Tag,
    allocation_metric,
    law_metric,
    power_law_metric,
)
from astropt.record.runs import (
    TrackingUnreachable,
    close_run,
    default_tracking_uri,
    ensure_experiment,
    experiment_names,
    find_experiment,
    find_sweep_run,
    log_params,
    make_client,
    mark,
    open_run,
    require_reachable,
    run_status,
    scrub_uri,
    search_runs,
    set_tags,
    sqlite_path,
    ui_link,
)

__all__ = [
    "CONFIG_FILE",
    "ESTIMATE_SUFFIXES",
    "FIT_RUN_NAME",
    "MAX_BATCH",
    "MODEL_ARTIFACT",
    "MODEL_TRAINING_VIEW",
    "WEIGHTS_FILE",
    "FitMetric",
    "FitParam",
    "FitTag",
    "Metric",
    "MetricBuffer",
    "MetricPoint",
    "Param",
    "ProbeName",
    "Role",
    "Status",
    "Tag",
    "TrackingUnreachable",
    "allocation_metric",
    "close_run",
    "default_tracking_uri",
    "ensure_experiment",
    "experiment_names",
    "find_experiment",
    "find_sweep_run",
    "law_metric",
    "log_params",
    "logged_through",
    "make_client",
    "mark",
    "metric_history",
    "open_run",
    "power_law_metric",
    "require_reachable",
    "run_status",
    "scrub_uri",
    "search_runs",
    "set_tags",
    "sqlite_path",
    "ui_link",
    "validation_curve",
]

"""The address the sweep prints for its curves: the one checked by hand in MLflow 3.17.2's UI
(README, "Looking at a sweep in MLflow"): model-training view, chart view, cells only."""

from astropt.record import ui_link

VERIFIED = (
    "#/experiments/1/runs?workflowType=machine_learning&compareRunsMode=CHART"
    "&searchFilter=tags.astropt.size%20LIKE%20%27%25%27"
)


def test_a_local_store_links_to_the_address_mlflow_ui_serves():
    assert ui_link("sqlite:////home/me/runs/mlflow.db", "1") == f"http://127.0.0.1:5000/{VERIFIED}"


def test_a_tracking_server_links_to_itself():
    assert ui_link("http://10.0.0.5:5000/", "1") == f"http://10.0.0.5:5000/{VERIFIED}"

"""Which Ray cluster a driver uses, and that stopping it leaves nothing behind, with real Ray
processes: each driver is a subprocess in a session of its own, with its own Ray temp folder
(so `ray start` records and sessions of other programs on this machine are not seen) and its
own state folder for the clusters it starts."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

#: A driver: connects as told (argv[1]: an address, "" for none), prints its connection, keeps
#: one task running, and then shuts down and exits (argv[2] == "exit") or waits.
HOLD = textwrap.dedent(
    """
    import sys, time
    import ray
    from astropt.cluster import connect

    connection = connect(sys.argv[1] or None, num_cpus=1)
    print("CONNECTED", connection, flush=True)

    @ray.remote(num_cpus=0)
    def busy():
        time.sleep(600)

    busy.remote()
    time.sleep(2)
    if sys.argv[2] == "exit":
        print("STOPPING", flush=True)
        time.sleep(1)
        connection.shutdown()
        print("SHUT DOWN", flush=True)
    else:
        print("READY", flush=True)
        time.sleep(600)
    """
)

#: A sweep-like driver: a Tune trial (it touches argv[3] when it runs) that trains "forever",
#: under stop_on_signals; argv[1] == "stuck" makes its stopping hang, so that only a second
#: signal ends it; argv[2] is Tune's storage.
TUNE_DRIVER = textwrap.dedent(
    """
    import pathlib, sys, time
    from ray import tune
    from astropt.cluster import connect
    from astropt.stopping import Interrupted, call_interruptibly, stop_on_signals

    def cell(config):
        pathlib.Path(config["running"]).touch()
        time.sleep(600)

    connection = connect("local", num_cpus=1)
    print("CONNECTED", connection, flush=True)
    tuner = tune.Tuner(
        tune.with_resources(cell, {"CPU": 0, "trial_driver": 1}),
        param_space={"running": sys.argv[3]},
        run_config=tune.RunConfig(storage_path=sys.argv[2], name="cells", verbose=0),
    )
    with stop_on_signals(connection):
        try:
            call_interruptibly(tuner.fit)
        except Interrupted as stop:
            print("INTERRUPTED", stop.signum, flush=True)
            if sys.argv[1] == "stuck":
                time.sleep(600)
            connection.shutdown()
            sys.exit(stop.exit_code)
    """
)


class Driver:
    """A Python subprocess in a session of its own, its output read line by line."""

    def __init__(self, code: str, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, marker: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                seen = "\n".join(self.seen)
                raise AssertionError(f"no {marker!r} within {timeout} s:\n{seen}") from None
            self.seen.append(line)
            if line.startswith(marker):
                return line

    def ray_processes(self) -> list[psutil.Process]:
        """Everything the driver started (Ray's daemons, and workers under the raylet)."""
        return psutil.Process(self.process.pid).children(recursive=True)

    def kill_all(self) -> None:
        """Every process still in the driver's session, by PID."""
        for process in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                if os.getsid(process.pid) == self.process.pid:
                    process.kill()


def _wait_for_file(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.2)


def _daemons(processes: list[psutil.Process]) -> list[psutil.Process]:
    """A session's GCS and raylet: its idle workers come and go by themselves."""
    return [p for p in processes if p.name() in ("gcs_server", "raylet")]


def _running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
    return alive


@pytest.fixture
def ray_env(tmp_path):
    """An environment with a Ray temp folder of its own (short: Ray's socket paths must fit
    in 107 characters) and a state folder of its own."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("RAY_ADDRESS", None)
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_leftovers_of_a_killed_driver_are_stopped_and_no_running_session_is_joined(ray_env):
    killed = Driver(HOLD, ["local", "wait"], ray_env)
    other = Driver("import ray, time; ray.init(num_cpus=1); print('READY', flush=True); "
                   "time.sleep(600)", [], ray_env)  # fmt: skip
    try:
        killed.wait_for("READY")
        other.wait_for("READY")
        started = killed.ray_processes()
        others = _daemons(other.ray_processes())
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        time.sleep(3)
        assert _running(started), "nothing was left over: the test shows nothing"

        after = Driver(HOLD, ["", "exit"], ray_env)
        try:
            first = after.wait_for("CONNECTED")
            after.wait_for("STOPPING")
            ours = after.ray_processes()
            after.wait_for("SHUT DOWN")
            assert after.process.wait(timeout=60) == 0
        finally:
            after.kill_all()
        stopped = [line for line in after.seen if line.startswith("stopped ")]
        assert len(stopped) == 1, after.seen
        assert f"(PID {killed.process.pid})" in stopped[0]
        assert after.seen.index(first) < after.seen.index(stopped[0]), "which cluster: first"
        assert _running(started) == []
        assert first.startswith("CONNECTED started a local Ray cluster"), first
        assert _running(ours) == []
        assert len(_running(others)) == len(others) == 2, "not this project's: not stopped"
    finally:
        killed.kill_all()
        other.kill_all()


def test_a_new_local_cluster_states_its_authentication_in_the_start_line_not_a_ray_warning(
    ray_env, tmp_path
):
    """As a user runs it (RAY_AUTH_MODE unset): Ray turns token authentication on and would
    print a WARNING among the progress lines; the start line says it instead."""
    env = {key: value for key, value in ray_env.items() if key != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path)  # Ray writes its token under ~/.ray
    driver = Driver(HOLD, ["local", "exit"], env)
    try:
        first = driver.wait_for("CONNECTED")
        driver.wait_for("SHUT DOWN")
        assert driver.process.wait(timeout=60) == 0
    finally:
        driver.kill_all()
    assert first.startswith("CONNECTED started a local Ray cluster"), first
    assert "token authentication on)" in first, first
    assert (tmp_path / ".ray" / "auth_token").exists(), "Ray did not turn authentication on"
    assert not [line for line in driver.seen if "Token authentication" in line], driver.seen


def test_a_ray_start_cluster_is_joined_and_a_dead_one_is_not(ray_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_start = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                 f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]  # fmt: skip
    head = subprocess.Popen(ray_start, env=ray_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    record = Path(ray_env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 90
        while not record.exists():
            assert time.monotonic() < deadline, "ray start wrote no ray_current_cluster"
            time.sleep(0.5)
        cluster = _daemons(psutil.Process(head.pid).children(recursive=True))
        joined = Driver(HOLD, ["", "exit"], ray_env)
        first = joined.wait_for("CONNECTED")
        joined.wait_for("SHUT DOWN")
        assert joined.process.wait(timeout=60) == 0
        assert f":{port}, started with `ray start` ({record})" in first, first
        assert len(_running(cluster)) == len(cluster) == 2, "a joined cluster is not ours to stop"
    finally:
        for process in psutil.process_iter():  # the `ray start` session, as a crash leaves it
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                if os.getsid(process.pid) == head.pid:
                    process.kill()
        head.wait()

    assert record.exists()
    local = Driver(HOLD, ["", "exit"], ray_env)
    try:
        first = local.wait_for("CONNECTED")
        local.wait_for("SHUT DOWN")
    finally:
        local.kill_all()
    assert first.startswith("CONNECTED started a local Ray cluster"), first
    assert f"the `ray start` cluster in {record} is not running" in first


@pytest.mark.parametrize(
    ("signals", "stuck", "code"),
    [((signal.SIGINT,), "graceful", 130), ((signal.SIGTERM, signal.SIGTERM), "stuck", 143)],
    ids=["sigint", "sigterm-twice"],
)
def test_a_stopped_driver_leaves_no_process_of_its_cluster(ray_env, tmp_path, signals, stuck,
                                                           code):  # fmt: skip
    """SIGINT: the driver catches Interrupted and shuts its cluster down. SIGTERM while its
    stopping hangs, then SIGTERM again: the second one kills the cluster and exits."""
    running = tmp_path / "running"
    driver = Driver(TUNE_DRIVER, [stuck, str(tmp_path / "tune"), str(running)], ray_env)
    try:
        _wait_for_file(running)
        started = driver.ray_processes()
        assert len(_daemons(started)) == 2
        driver.process.send_signal(signals[0])
        assert driver.wait_for("INTERRUPTED") == f"INTERRUPTED {signals[0].value}"
        for signum in signals[1:]:
            driver.process.send_signal(signum)
        assert driver.process.wait(timeout=60) == code
        assert _running(started) == []
    finally:
        driver.kill_all()

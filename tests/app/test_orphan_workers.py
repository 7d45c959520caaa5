"""Issue: orphaned workers. A training worker must end with the server that started it (SIGKILL included)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: plays the Streamlit server: starts a long training in a worker process, prints its pid, then waits
SERVER = textwrap.dedent("""
    import sys, time
    from scclust_core import datasets
    from scclust_core.jobs import TrainingJob
    from scclust_core.methods import get_method

    ad = datasets.synthetic(400, 120, 3, seed=0)
    cfg = get_method("contrastive_sc").Config.from_preset(
        None, n_clusters=3, n_hvg=60, epochs=5000, batch_size=50, seed=0, snapshot_every=0, torch_threads=1)
    job = TrainingJob(ad, "contrastive_sc", cfg, runs_root=sys.argv[1], isolation="process").start()
    while job.snapshot().epoch < 2:
        if not job.running:
            print("ENDED", job.status, job.error, flush=True)
            sys.exit(1)
        time.sleep(0.05)
    print("WORKER", job.worker_pid, flush=True)
    time.sleep(600)
""")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None when the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has stopped running


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_server_ends_fork_server_and_worker(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCCLUST_MAX_TRAININGS": "1", "SCCLUST_THREADS": "1"}
    env.pop("SCCLUST_JOB_ISOLATION", None)
    server = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    worker = fork_server = None
    try:
        line = server.stdout.readline()  # blocks until the worker trains (or the server ends)
        assert line.startswith("WORKER "), line
        worker = int(line.split()[1])
        fork_server = int(_stat(worker)[1])  # the worker's parent
        assert fork_server != server.pid and _alive(worker) and _alive(fork_server)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        deadline = time.time() + 10
        while (_alive(worker) or _alive(fork_server)) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the training worker outlived the server"
        assert not _alive(fork_server), "the fork server outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
        for pid in (worker, fork_server):  # never leave a training running after a failed assertion
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)

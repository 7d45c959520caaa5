"""A real ``streamlit run app.py`` server for the browser tests (restartable, workspaces in a temp dir)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workspaces: Path, log: Path):
        self.workspaces = workspaces
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "SCCLUST_WORKSPACES": str(self.workspaces), "PYTHONPATH": str(ROOT),
               "SCCLUST_RUNS_DIR": str(self.workspaces / "_unused_runs")}
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("streamlit did not become healthy in 90 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    srv = Server(tmp / "workspaces", tmp / "streamlit.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    pw_sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (the e2e tests need a system Chromium)")
    with pw_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take


def _small_png(src: Path, dest: Path, max_bytes: int = 300_000) -> None:
    """Save ``src`` as a palette PNG under ``max_bytes`` (README screenshots stay small in git)."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    for width in (1400, 1200, 1000, 800):
        im = img if img.width <= width else img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
        if dest.stat().st_size <= max_bytes:
            return
    raise AssertionError(f"{dest.name} stays above {max_bytes} bytes")


@pytest.fixture
def readme_shot(tmp_path):
    """Screenshots for the README, written only when ``SCCLUST_SCREENSHOTS`` names a folder (e.g. ``assets``), so
    CI never rewrites the committed ones. ``clip``: a region of the viewport; default all of it."""
    target = os.environ.get("SCCLUST_SCREENSHOTS")

    def take(page, name: str, clip: dict | None = None) -> None:
        if not target:
            return
        raw = tmp_path / f"{name}_raw.png"
        page.screenshot(path=str(raw), clip=clip)
        folder = ROOT / target
        folder.mkdir(parents=True, exist_ok=True)
        _small_png(raw, folder / f"{name}.png")

    return take

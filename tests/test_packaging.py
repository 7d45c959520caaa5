"""What a user installs and runs: runtime and test requirements apart, and a server that does not watch the tree."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ("pytest", "hypothesis", "playwright")


def _names(path: Path) -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return [ln.split(">")[0].split("=")[0].split("<")[0].strip().lower() for ln in lines if ln and not ln.startswith("-")]


def test_the_runtime_requirements_hold_no_test_tools_and_the_test_file_adds_them() -> None:
    runtime = _names(ROOT / "requirements.txt")
    assert "streamlit" in runtime and "scanpy" in runtime
    assert not set(TEST_TOOLS) & set(runtime)
    test_file = (ROOT / "requirements-test.txt").read_text()
    assert "-r requirements.txt" in test_file and set(TEST_TOOLS) <= set(_names(ROOT / "requirements-test.txt"))


def test_readme_commands_install_what_each_needs() -> None:
    blocks = (ROOT / "README.md").read_text().split("```bash")[1:3]
    launch, tests = (b.split("```")[0] for b in blocks)
    assert "requirements.txt" in launch and "requirements-test.txt" not in launch and "streamlit run app.py" in launch
    assert "requirements-test.txt" in tests and "pytest" in tests
    assert "requirements-test.txt" in (ROOT / ".ci" / "run").read_text()


def test_streamlit_does_not_watch_the_project_folder() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none" and cfg["server"]["runOnSave"] is False

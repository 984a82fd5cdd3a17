"""The README stays short and points at real pages; the docs site is built strictly by the test command (issue 21)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"


def test_readme_is_short_and_its_links_name_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    targets = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]
    assert targets, "the README links to the docs"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _site_command() -> str:
    """The line of run-tests.sh that builds the site."""
    lines = [line for line in (ROOT / "run-tests.sh").read_text().splitlines() if ".venv/bin/mkdocs build" in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    return lines[0]


def _build(tmp_path: Path, *, broken: bool) -> subprocess.CompletedProcess[str]:
    """Run run-tests.sh's build line on a copy of the site (optionally with a broken link)."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    if broken:
        with open(tmp_path / "docs" / "performance.md", "a", encoding="utf-8") as page:
            page.write("\n\nSee [a page that is not there](no-such-page.md).\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "mkdocs").symlink_to(MKDOCS)
    env = {**os.environ, "TRACEJUDGE_RUN_DIR": str(tmp_path / "run")}
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + _site_command()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_test_command_builds_the_site_and_fails_on_a_broken_link(tmp_path):
    (tmp_path / "ok").mkdir()
    ok = _build(tmp_path / "ok", broken=False)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "run" / "site" / "index.html").exists()
    (tmp_path / "broken").mkdir()
    broken = _build(tmp_path / "broken", broken=True)
    assert broken.returncode != 0, "a broken link must fail the docs build (is --quiet hiding the warning?)"
    assert "no-such-page.md" in broken.stderr + broken.stdout

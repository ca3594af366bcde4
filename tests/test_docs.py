"""The documentation: the docs site builds with --strict (a broken link
fails), the README stays a five-minute read whose links and pictures exist,
and nothing in the repository sends the reader outside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
OUTSIDE = "../" + "shared"  # the steering folder beside a checkout, which a clone lacks
# Text files a reader opens; generated and vendored ones aside.
READ = ("*.md", "*.py", "*.toml", "*.yml", "*.html", "*.js", "*.css", "*.txt", "*.in", "*.example")


def test_the_docs_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_the_readme_is_short_and_its_links_and_pictures_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [target for target in targets if not re.match(r"[a-z]+:", target)]
    assert local, "the README links its docs"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, missing


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(["git", "ls-files", *READ], cwd=ROOT, capture_output=True, text=True, check=True)
    outside = [
        f"{name}:{number}"
        for name in tracked.stdout.split()
        if (ROOT / name).is_file()
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if OUTSIDE in line
    ]
    assert not outside, outside

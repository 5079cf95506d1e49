"""The README's and docs/'s examples run, as written, in the default test suite (and can fail).

Every ``bash``/``sh``/``python`` block of ``README.md`` and ``docs/*.md`` is run by the pytest-codeblocks plugin, in
document order, in one temporary folder that holds copies of the Markdown files and links to ``hub_configs/`` and
``scripts/``, with ``SARLULC_DOCS_SMALL=1`` (:mod:`sarlulc.scale`: the same commands, capped sizes and steps). Shell
blocks share the folder (files one block writes, the next reads); Python blocks each start with fresh globals. A block
that cannot run here carries ``<!--pytest.mark.skip(reason="...")-->`` on the line above it, and the run reports it.

The plugin runs a shell block as one script and checks only its last command's status; every ``bash`` block here runs
with ``set -e -o pipefail`` (through ``BASH_ENV``), so any failing command fails its block, and each command's stderr
goes to a log whose tail a failure shows (the plugin's own report gives only the exit status).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sarlulc.data.classes import JAXA_14, LULC_9, WATER, class_id_remap
from sarlulc.scale import DOCS_SMALL_ENV

REPO = Path(__file__).resolve().parents[1]
# What the examples refer to by relative path, linked into the run's folder.
SHARED_PATHS = ("hub_configs", "scripts")
# Sourced by every non-interactive bash, i.e. by every ``bash`` block: stop at the first failing command, and keep
# what the commands wrote to stderr, with the failing command, for the report.
STRICT_BASH = """set -e -o pipefail
exec 2>>"${SARLULC_DOCS_STDERR:-/dev/stderr}"
trap 'echo "docs example: exit status $? of: $BASH_COMMAND" >&2' ERR
"""
STDERR_LOG = "examples-stderr.log"


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _prepare_folder(folder: Path, files: dict[str, str]) -> list[str]:
    """Write the Markdown ``files`` (relative name -> text) into ``folder`` with the shared paths linked beside them."""
    for name in SHARED_PATHS:
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    (folder / "pytest.ini").write_text("[pytest]\n")  # the examples' run, not the repository's configuration
    (folder / ".strict.sh").write_text(STRICT_BASH)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return list(files)


def _run_codeblocks(folder: Path, names: list[str], *extra: str) -> subprocess.CompletedProcess:
    pytest.importorskip("pytest_codeblocks", reason="pytest-codeblocks is a dev dependency: pip install -e '.[dev]'")
    env = {
        **os.environ,
        DOCS_SMALL_ENV: "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HOME": str(folder / "hf_home"),
        "MPLBACKEND": "Agg",
        # one torch thread per command: the examples' models are tiny, and on a machine whose cores are busy, threads
        # waiting on each other cost more than they gain (see sarlulc.training.ablation's --num_threads)
        "OMP_NUM_THREADS": "1",
        "BASH_ENV": str(folder / ".strict.sh"),
        "SARLULC_DOCS_STDERR": str(folder / STDERR_LOG),
    }
    command = [sys.executable, "-m", "pytest", "--codeblocks", "-c", "pytest.ini", "-p", "no:cacheprovider", "-rs"]
    return subprocess.run([*command, *extra, *names], cwd=folder, env=env, capture_output=True, text=True, timeout=1500)


def test_every_readme_and_docs_example_runs(tmp_path):
    files = {str(path.relative_to(REPO)): path.read_text() for path in _markdown_files()}
    names = _prepare_folder(tmp_path, files)
    result = _run_codeblocks(tmp_path, names)
    output = result.stdout + result.stderr
    log = tmp_path / STDERR_LOG
    stderr = log.read_text(errors="replace")[-6000:] if log.is_file() else ""
    assert result.returncode == 0, output[-6000:] + "\n--- stderr of the shell examples (tail) ---\n" + stderr
    # The README's training section ran end to end on the demo's tiles, the water task included.
    for model in ("runs/pretrain", "runs/lulc/best", "runs/water"):
        assert (tmp_path / model / "config.json").is_file(), (model, output[-3000:])
    assert (tmp_path / "lulc_map.tif").is_file()
    # Skipped blocks are the exception, and each says why.
    assert output.count("SKIPPED") <= 4, output[-3000:]
    assert "passed" in output


def test_a_renamed_flag_in_an_example_fails_the_docs_check(tmp_path):
    """Negative control: the same machinery on a copy of the README's synthetic-scene section passes as written and
    fails once a flag of its command is renamed (the plugin reports a shell block's exit status, 2 for a usage error)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("### Synthetic ALOS-2-like scenes")
    section = readme[start : readme.index("\n### ", start + 1)]
    assert "sarlulc synth --size 2048" in section
    broken = section.replace("sarlulc synth --size 2048", "sarlulc synth --scene-size 2048")
    names = _prepare_folder(tmp_path, {"intact/README.md": section, "broken/README.md": broken})
    intact, doctored = (_run_codeblocks(tmp_path, [name]) for name in names)
    assert intact.returncode == 0 and "1 passed" in intact.stdout, intact.stdout[-3000:]
    assert doctored.returncode == 1 and "1 failed" in doctored.stdout, doctored.stdout[-3000:]
    assert re.search(r"code block check _+\n2\n", doctored.stdout), doctored.stdout[-3000:]  # usage error: exit 2


def test_water_is_derivable_from_lulc_ids_and_lulc_from_jaxa_ids():
    to_water = class_id_remap(LULC_9, WATER)
    assert to_water[LULC_9.label2id["Water"]] == WATER.label2id["water"]
    for name in LULC_9.names[1:]:
        assert to_water[LULC_9.label2id[name]] == WATER.label2id["not water"], name
    assert to_water[255] == 255
    jaxa_to_lulc = class_id_remap(JAXA_14, LULC_9)
    assert jaxa_to_lulc[JAXA_14.label2id["Greenhouse"]] == LULC_9.label2id["Built-up"]
    assert jaxa_to_lulc[JAXA_14.label2id["Bamboo forest"]] == LULC_9.label2id["Evergreen forest"]
    with pytest.raises(ValueError, match="Built-up"):
        class_id_remap(LULC_9, JAXA_14)  # Built-up gathers codes 2 and 14: two jaxa-14 classes


def test_ci_runs_exactly_the_readmes_two_setup_commands():
    """The README's set-up is two commands (install + demo, the tests); CI (.ci/run) runs those very lines."""
    readme = (REPO / "README.md").read_text()
    setup = readme[readme.index("## Set-up") : readme.index("\n## ", readme.index("## Set-up") + 1)]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]
    assert commands == ['python -m pip install -e ".[dev]" && sarlulc demo', "python -m pytest"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    ci_commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == commands

"""The README is a path: its Python snippets run and its command lines parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lol_dreamer.cli import build_parser
from tests.worldmodel_fixture import make_world_model

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S)
PLACEHOLDER = "runs/nano/bc"


def _commands() -> list[str]:
    cmds = []
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("lol-dreamer "):
                    cmds.append(part)
                elif " -m lol_dreamer.cli " in part:
                    cmds.append("lol-dreamer " + part.split(" -m lol_dreamer.cli ", 1)[1])
    return cmds


def test_readme_has_the_two_fresh_machine_commands_and_the_ci_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = "python -m pytest -q -x --durations=15"
    assert test_cmd in TEXT and test_cmd in ci
    assert 'pip install -e ".[dev]"' in TEXT and 'pip install -q -e ".[dev]"' in ci


@pytest.mark.parametrize("cmd", _commands())
def test_readme_command_lines_parse(cmd):
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert callable(args.func), cmd


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    return make_world_model(tmp_path_factory.mktemp("readme") / "wm", heads=True)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_snippets_run(index, world_model, capsys):
    code = PYTHON_BLOCKS[index].replace(PLACEHOLDER, str(world_model))
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": "readme"})

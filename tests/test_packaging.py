"""setup.cfg lists every package, so a wheel install carries all of the code."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_subpackage():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    dirs = {"lol_dreamer": ROOT / "lol_dreamer", "lol_dreamer.envs": ROOT / "envs",
            "lol_dreamer.agents": ROOT / "agents"}  # fmt: skip
    found = set()
    for name, root in dirs.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            if name == "lol_dreamer" and rel[:1] in (("envs",), ("agents",)):
                continue
            found.add(".".join((name, *rel)))
    assert found == listed, (
        f"add to setup.cfg: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    )

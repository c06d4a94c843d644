"""``lol-dreamer eval agent``: closed-loop returns in the real LaneSim with confidence intervals (SPEC §9)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="play random, scripted and learned agents in the real LaneSim and compare their returns",
        description=(
            "Play S seeds × N episodes of LoLLane-v0 with a random agent, the scripted player and "
            "(with --agent) a learned agent run plus, for a PMPO run, its BC parent. Every agent "
            "faces the same start states. Prints mean return with 95%% confidence intervals "
            "(Student t over per-seed means), writes JSON and a video of the agent's first episode."
        ),
    )
    p.add_argument(
        "--agent",
        default=None,
        help="agent run folder (phase 2 or 3); omit to compare the baselines only",
    )
    p.add_argument(
        "--episodes", type=int, default=3, help="episodes per seed (default %(default)s)"
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds; the CI needs at least 2 (default %(default)s)"
    )
    p.add_argument(
        "--task",
        default="farm",
        choices=("farm", "fight", "push"),
        help="LaneSim task (default %(default)s)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=1000,
        help="steps per episode before truncation (default %(default)s)",
    )
    p.add_argument(
        "--res",
        type=int,
        default=None,
        help="frame side (default: the agent's world model, else 128)",
    )
    p.add_argument(
        "--skill",
        type=float,
        default=0.8,
        help="scripted player's skill in [0, 1] (default %(default)s)",
    )
    p.add_argument(
        "--mtp-distance",
        type=int,
        default=None,
        help="policy output layer to act with (default: the run's)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="act with the policy's mode instead of sampling",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the random and scripted rows")
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default RUN/eval_agent_<task>.json, else ./eval_agent_<task>.json)",
    )
    p.add_argument(
        "--video", default=None, help="video path, .mp4 or .gif (default beside the JSON)"
    )
    p.add_argument("--no-video", action="store_true", help="do not write a video")
    p.add_argument(
        "--device", default="cpu", help="device for the learned agent (default %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.agents.evaluate:run"))

"""``kvmesh model create DIR --preset tiny|demo [--seed N]``: build a local model directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kvmesh model`` and its ``create`` action."""
    from kvmesh.connector.local_model import PRESETS

    parser = subparsers.add_parser("model", help="build local model directories (no downloads)")
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    create = actions.add_parser(
        "create", help="write a Llama model with random weights and a local tokenizer"
    )
    create.add_argument("dir", type=Path, help="output directory (created if missing)")
    create.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape")
    create.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    create.set_defaults(func=_create)
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])


def _create(args: argparse.Namespace) -> int:
    from kvmesh.connector.local_model import create_model

    summary = create_model(args.dir, args.preset, seed=args.seed)
    print(json.dumps({"dir": str(args.dir), **summary}))
    return 0

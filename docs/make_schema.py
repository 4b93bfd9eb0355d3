"""Print the JSON Schema of the HelloWord wire protocol, or write docs/protocol.schema.json.

Usage (``make schema`` runs the second)::

    python docs/make_schema.py            # print the schema
    python docs/make_schema.py --write    # rewrite docs/protocol.schema.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto.schema import message_schema, render

#: Where ``--write`` puts the schema: next to this script.
SCHEMA_PATH = Path(__file__).resolve().parent / "protocol.schema.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the schema, or write it to :data:`SCHEMA_PATH` with ``--write``."""
    parser = argparse.ArgumentParser(
        prog="python docs/make_schema.py",
        description="Print (or write) the JSON Schema of the HelloWord wire protocol.")
    parser.add_argument("--write", action="store_true",
                        help=f"write docs/{SCHEMA_PATH.name} instead of printing")
    args = parser.parse_args(argv)
    text = render(message_schema())
    if args.write:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

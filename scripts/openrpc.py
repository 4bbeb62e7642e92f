#!/usr/bin/env python3
"""Rewrite docs/openrpc.json from the code (node/rpc/schemas.py and the method table).

    .venv/bin/python scripts/openrpc.py          # writes docs/openrpc.json
    .venv/bin/python scripts/openrpc.py --check  # exit 1 if the file is stale

tests/node/test_rpc_openrpc.py checks that the file is what `rpc.discover` serves.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.rpc.methods import RpcMethods  # noqa: E402
from node.rpc.openrpc import dumps  # noqa: E402

TARGET = ROOT / "docs" / "openrpc.json"


def main(argv: list[str]) -> int:
    text = dumps(RpcMethods(node=None).discover())  # type: ignore[arg-type]
    if "--check" in argv:
        stale = not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text
        print(f"{TARGET}: {'stale' if stale else 'up to date'}")
        return 1 if stale else 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

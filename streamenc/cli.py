"""The ``streamenc`` command: ``probe``, ``clean`` (more to come: ``record``, ``bench``).

User errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import StreamencError


def cmd_probe(args: argparse.Namespace) -> int:
    from .codecs import probe
    from .ring import SHM_DIR, shm_free_bytes

    results = probe()
    free = shm_free_bytes()
    if args.json:
        print(json.dumps({"encoders": [r.__dict__ for r in results], "shm_free_bytes": free}))
        return 0
    for r in results:
        print(f"{r.name:12s} {'usable' if r.usable else 'no':6s}  {r.reason}")
    print(f"{SHM_DIR}: {free / 2**20:.0f} MiB free")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from .ring import clean_stale

    removed = clean_stale(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "entries": removed}))
    else:
        for name in removed:
            print(f"{verb} /dev/shm/{name}")
        print(f"{len(removed)} stale entr{'y' if len(removed) == 1 else 'ies'} {verb}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamenc", description="Record robot camera frames straight to video.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="which encoders really open here, and why not")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("clean", help="remove shared memory left by dead recorders")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clean)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except StreamencError as e:
        print(f"streamenc: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

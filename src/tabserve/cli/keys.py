"""``tabserve keys``: make API keys and the hashes that the server's configuration stores."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tabserve.api.auth import SCOPES, hash_key, new_key
from tabserve.cli import command_help
from tabserve.errors import ConfigError

EPILOG = """examples:
  tabserve keys new --name checkout                 # a fresh key and its TABSERVE_API_KEYS entry
  tabserve keys new --name ops --scopes predict,admin
  tabserve keys hash tsk_...                        # the sha256 of an existing key
  printf %s "$KEY" | tabserve keys hash             # same, keeping the key out of the shell history

The server stores only the hashes: TABSERVE_API_KEYS='[{"name": "checkout", "sha256": "...", "scopes":
["predict"]}]' (or the path of a JSON file holding that list). Clients send 'Authorization: Bearer KEY'
or 'X-API-Key: KEY'."""


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help=command_help("keys"), description="Make API keys and the "
                       "SHA-256 hashes that TABSERVE_API_KEYS stores.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    h = actions.add_parser("hash", help="print the sha256 of a key (read from stdin when not given)")
    h.add_argument("key", nargs="?", help="the key; omit it to read one line from stdin")
    h.set_defaults(run=run_hash)
    n = actions.add_parser("new", help="make a random key and print it with its configuration entry")
    n.add_argument("--name", required=True, help="who uses the key: it names the client in logs and limits")
    n.add_argument("--scopes", default="predict", help="comma-separated: predict, or predict,admin "
                   "(admin loads and unloads models) (default: predict)")
    n.add_argument("--rate-limit", help="this key's own limit, e.g. 1000/second, or none (default: the "
                   "server's rate_limit)")
    n.set_defaults(run=run_new)


def run_hash(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\r\n")
    if not key:
        raise ConfigError("no key given: pass it as an argument or on stdin")
    print(hash_key(key))
    return 0


def run_new(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    if not scopes or any(s not in SCOPES for s in scopes):
        raise ConfigError(f"--scopes {args.scopes!r}: use predict, or predict,admin")
    key = new_key()
    entry: dict[str, Any] = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.rate_limit:
        entry["rate_limit"] = args.rate_limit
    from tabserve.api.auth import parse_api_keys

    parse_api_keys(json.dumps([entry]))  # the entry must be one the server accepts
    print(f"key:   {key}")
    print(f"entry: {json.dumps(entry)}")
    print("Give the key to its client now: only its hash goes in TABSERVE_API_KEYS, the key is kept nowhere.",
          file=sys.stderr)
    return 0

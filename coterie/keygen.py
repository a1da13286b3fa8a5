"""``coterie keygen BASE...``: make CURVE keypairs for nodes and clients.

Each BASE (a path without extension, such as ``keys/n1``) gets ``BASE.key``, the public key,
and ``BASE.key_secret``, the secret key, created with mode 0600. Both hold one Z85 key; the
config's ``[security]`` table points at them (see coterie/security.py). Existing files are
kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from actors.security import KeyFileError, read_key_file, write_keypair
from coterie.errors import CliError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keygen", help="make CURVE keypairs (BASE.key, BASE.key_secret)")
    parser.add_argument("bases", nargs="+", metavar="BASE", help="path prefix, e.g. keys/n1")
    parser.add_argument("--force", action="store_true", help="replace existing key files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for text in args.bases:
        base = pathlib.Path(text)
        if not base.name or base.name in (".", ".."):
            raise CliError(f"{text!r}: not a file name prefix (try keys/n1)")
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            public_path, secret_path = write_keypair(base, force=args.force)
            public = read_key_file(public_path, "public key", secret=False).decode("ascii")
        except KeyFileError as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:
            raise CliError(f"{base}: cannot write keys: {exc.strerror or exc}") from exc
        print(f"{public_path}  public key {public}")
        print(f"{secret_path}  secret key (mode 0600)")
    return 0

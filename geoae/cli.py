"""The ``geoae`` command line. It owns printing; the stages log through ``logging``.

Each stage module that has a subcommand exposes ``add_cli(subparsers)``, which
registers its parser and sets ``func`` to a callable taking the parsed args and
returning an exit code. Errors caused by user input (``GeoaeError``) are
printed as one clear line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from geoae import __version__
from geoae.errors import GeoaeError

# Modules that register subcommands, in the order of the data flow.
STAGE_MODULES = (
    "geoae.pipeline",   # prepare, train, demo
    "geoae.predict",    # predict
    "geoae.evaluate",   # evaluate
    "geoae.benchmark",  # benchmark
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoae",
        description="Locate Twitter users from their tweets with a stacked denoising autoencoder.",
    )
    parser.add_argument("--version", action="version", version=f"geoae {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except GeoaeError as e:
        print(f"geoae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that is a directory, a file where a directory must go, no permission...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"geoae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geoae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``geoae`` command line. It owns printing; the stages log through ``logging``.

Each stage module that has a subcommand exposes ``add_cli(subparsers)``, which
registers its parser and sets ``func`` to a callable taking the parsed args and
returning an exit code. Errors caused by user input (``GeoaeError``) are
printed as one clear line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import re
import select
import signal
import sys
import threading

from geoae import __version__
from geoae.errors import GeoaeError

# Modules that register subcommands, in the order of the data flow.
STAGE_MODULES = (
    "geoae.pipeline",   # prepare, train, demo
    "geoae.predict",    # predict
    "geoae.evaluate",   # evaluate
    "geoae.benchmark",  # benchmark
)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a real default the text does not
    already state (unlike ``ArgumentDefaultsHelpFormatter``, not for None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if action.option_strings and "default" not in help_ and not unset:
            help_ += " (default: %(default)s)"
        return help_


def _add_logging_options(p: argparse.ArgumentParser, top_level: bool) -> None:
    """-v/-q, accepted before the command and after it (the subcommands' copies default to
    SUPPRESS so they never overwrite what was given before the command)."""
    p.add_argument("-v", "--verbose", action="count", default=0 if top_level else argparse.SUPPRESS,
                   help="debug logging for geoae (-vv: for every library too); the default level is INFO "
                        "(progress and summaries)")
    p.add_argument("-q", "--quiet", action="store_true", default=False if top_level else argparse.SUPPRESS,
                   help="only warnings and errors: no progress bars and no summary on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoae",
        description="Locate Twitter users from their tweets with a stacked denoising autoencoder.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geoae {__version__}")
    _add_logging_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.add_cli(sub)
    parser.commands = tuple(sub.choices)  # for the message when none is given
    parser.command_parsers = dict(sub.choices)  # for _empty_path_option
    for p in sub.choices.values():
        p.formatter_class = _HelpFormatter
        _add_logging_options(p, top_level=False)
    return parser


# Options whose value is a path: an empty one ('') would silently mean the current directory
# (a report or run written there) or be ignored as if not given (--summary, --full-text).
_PATH_DESTS = ("out", "output", "summary", "data", "model", "config", "full_text", "input")


def _empty_path_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The option (e.g. ``--out``) given an empty path, or None."""
    sub = parser.command_parsers.get(args.command)
    for action in (sub._actions if sub else ()):
        value = getattr(args, action.dest, None) if action.dest in _PATH_DESTS else None
        if value == "" or (isinstance(value, list) and "" in value):
            return max(action.option_strings, key=len)
    return None


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Default INFO; -q WARNING; -v DEBUG for geoae's own loggers; -vv DEBUG for everything."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose and not quiet:
        logging.getLogger("geoae").setLevel(logging.DEBUG)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what batch schedulers and ``kill`` send), raised where Python is running so the
    command unwinds as on Ctrl-C: reader and worker processes are stopped, partial output named."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _stdout_closed() -> bool:
    """Whether our stdout is a pipe whose reader has gone (``geoae ... | head``): poll reports an
    error on the write end then. Any other broken pipe (a worker's, a reader process's) is not this."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll on this platform, or stdout is no file
        return False


def _reader_gone() -> int:
    """Exit as a Unix tool killed by SIGPIPE does: quietly, status 141. Whoever read our stdout
    chose to stop; Python would otherwise print a traceback, and again at exit when it flushes."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports torch and the stage modules: a second or two
    except KeyboardInterrupt:
        print("geoae: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.error(f"a command is required: one of {', '.join(parser.commands)}"
                     " (geoae COMMAND --help for its options)")  # exits 2, after the usage
    if args.quiet and args.verbose:
        parser.error("-q and -v contradict each other; give one")
    empty = _empty_path_option(parser, args)
    if empty:
        print(f"geoae {args.command}: error: {empty} is an empty path (''); give a file or directory name "
              "(./ for the current directory)", file=sys.stderr)
        return 2
    _configure_logging(args.verbose, args.quiet)
    # -q also silences what the command prints on success (its progress bars follow the log
    # level); errors still reach stderr below.
    quiet = contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext()
    # Without this, SIGTERM kills the process on the spot: no cleanup, and the reader or worker
    # processes of `predict` are left running. (Only the main thread may set handlers.)
    on_term = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_term else None
    try:
        with quiet:
            status = int(args.func(args) or 0)
        # What is still buffered (a short summary, stdout a pipe) would meet a reader that has gone
        # at exit, past the handler below: "Exception ignored ... BrokenPipeError" and status 120.
        if sys.stdout is not None:
            sys.stdout.flush()
        return status
    except GeoaeError as e:
        # One line, whatever a library put in the message it is built from (pyarrow ends some with a newline).
        msg = " ".join(part.strip() for part in re.split(r"[\r\n]+", str(e)) if part.strip())
        print(f"geoae {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that is a directory, a file where a directory must go, no permission...
        # With -q nothing is written to stdout, so its broken pipe is another's.
        if isinstance(e, BrokenPipeError) and not args.quiet and _stdout_closed():
            return _reader_gone()
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"geoae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        # torch reports a failed CPU allocation as a RuntimeError, CUDA's as OutOfMemoryError (one too)
        if not (isinstance(e, MemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e).lower()):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        print(f"geoae {args.command}: error: out of memory ({first}); "
              "use a smaller --chunksize or batch size, a smaller model, or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        hint = (" (the checkpoint keeps every finished epoch: rerun the same command to resume)"
                if args.command in ("train", "demo") else "")
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"geoae {args.command}: {what}{hint}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if on_term:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())

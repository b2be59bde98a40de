"""The `convnextpose` command line. One module per command declares its arguments beside the function that
runs it (``add_to(subparsers)``, ``run(args)``) and what it needs before it starts (``PRELOAD``: the noisy
libraries imported quietly first; ``ENVIRONMENT``: variables read when PyTorch loads); this module builds
the parser from them, sets up logging and the run's temporary folder, and dispatches.

``python -m cli`` and the ``convnextpose`` console script (``cli:run``) both end in :func:`main`.
"""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import logging
import os
import sys

from cli import (
    bench,
    check_golden,
    demo,
    diagnose,
    eval_synthetic,
    export,
    inspect,
    kernels,
    make_checkpoint,
    profile,
    verify,
)
from common import environment, interrupts, quiet, scratch
from common.errors import ConvNeXtPoseError

#: `convnextpose --help`'s description, as it has always read (argparse reflows it).
DESCRIPTION = """`convnextpose` command line: inspect, make-checkpoint, eval-synthetic, export, verify,
check-golden, bench, diagnose, profile, demo.

Exit codes: 0 done; 3 export published some artifacts and rejected others (the summary and the
manifest say which and why); 2 a user error (bad checkpoint, mismatch, bad option) or nothing could
be exported -- one paragraph, no traceback; 130 interrupted.
"""
#: The commands, in the order --help lists them.
COMMANDS = (inspect, make_checkpoint, eval_synthetic, export, verify, check_golden, bench, diagnose, profile,
            kernels, demo)
_BY_NAME = {command.NAME: command for command in COMMANDS}
EXIT_USER_ERROR = 2
OUR_LOGGERS = ("convnextpose", "common", "models", "runtimes", "judging", "exporters", "benchmarks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convnextpose", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Our own packages log progress at INFO; libraries that log to the root logger only warnings (-v: all)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for package in OUR_LOGGERS:
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    environment.apply()  # telemetry off, library settings out of HOME: before any library is imported
    verbose = bool({"-v", "--verbose"} & set(argv))
    quiet.configure(verbose)  # before anything imports a converter: some read their settings at import
    named = _BY_NAME.get(next((a for a in argv if not a.startswith("-")), None))
    for key, value in getattr(named, "ENVIRONMENT", {}).items():  # read when PyTorch loads: set before
        os.environ.setdefault(key, value)
    try:
        with interrupts.held():  # the help texts' defaults load PyTorch: a Ctrl-C waits for it to load
            args = build_parser().parse_args(argv)
        _configure_logging(verbose)
        # every temporary file of the run, the converters' own included, in one folder removed at the end
        with scratch.run_folder():
            preload = _BY_NAME[args.command].PRELOAD
            if preload is not None:
                quiet.import_quietly(*preload)
            code = args.func(args)
            interrupts.raise_if_received()  # a Ctrl-C that a hook swallowed still ends the run as interrupted
            return code
    except ConvNeXtPoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; no partial artifacts were left in place", file=sys.stderr)
        return 130


def run() -> None:
    """The `convnextpose` command. Once it has answered, the atexit handlers run (logging and
    multiprocessing clean-up, temporary folders), output is flushed and the process ends without the
    interpreter tearing down its modules: with TensorFlow, PyTorch and coremltools loaded that teardown
    took 2.6 s after an export of S (measured), and nothing of ours depends on it.

    A crash of native code (SIGSEGV, SIGABRT...) prints the Python stack of every thread before the
    process dies (``faulthandler``): a report then says where, not only "exit -11". Ctrl-C is remembered
    even where a hook swallows it (common/interrupts.py)."""
    faulthandler.enable()
    interrupts.install()
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""Running a typer app so that every failure of the command line is one line and an exit code.

typer (click) prints usage errors as a boxed block; a daemon's start-up or a script's call is
easier to read and to grep as `PROG: error: <what>; run '<command> --help'` and exit status 2.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.exceptions import Abort


def fail_line(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()


def run_typer(app: typer.Typer, prog: str, args: Sequence[str]) -> int:
    """Run `app` on `args`; the exit status. Exceptions of the program's own pass through."""
    # typer turns Ctrl-C into a silent exit status 130; a flag tells that apart from a command
    # returning 130 itself, so that an interrupted run still ends with its one line.
    interrupted = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        rv = app(args=list(args), prog_name=prog, standalone_mode=False)
    except NoArgsIsHelpError as e:
        if e.ctx is not None:  # the help of the group that was given no command
            typer.echo(e.ctx.get_help())
        return 2
    except UsageError as e:
        path = e.ctx.command_path if e.ctx else prog
        fail_line(prog, f"{e.format_message().rstrip('.')}; run '{path} --help'")
        return 2
    except ClickException as e:
        fail_line(prog, e.format_message())
        return e.exit_code
    except (Abort, KeyboardInterrupt):
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        fail_line(prog, "interrupted")
        return 130
    return rv if isinstance(rv, int) else 0

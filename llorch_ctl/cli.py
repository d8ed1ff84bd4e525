"""`llorch`: the operator's remote control. Pool hosts over SSH, orchestratord over HTTP.

Every failure is one line on stderr (`llorch: ...`) and a distinct exit code (specs/ctl.md);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from llorch_ctl.errors import CtlError
from llorch_ctl.passthrough import fast_remote


def _run_typer(args: list[str]) -> int:
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    from llorch_ctl.app import app

    try:
        rv = app(args=args, prog_name="llorch", standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()
        return 2
    except UsageError as e:
        path = e.ctx.command_path if e.ctx is not None else "llorch"
        sys.stderr.write(f"llorch: {e.format_message().rstrip('.')}; see '{path} --help'\n")
        return 2
    except ClickException as e:
        sys.stderr.write(f"llorch: {e.format_message()}\n")
        return e.exit_code
    except typer.Abort:
        sys.stderr.write("llorch: interrupted\n")
        return 130
    return rv if isinstance(rv, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: returns the exit code (the remote one for `llorch pool ...`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # paramiko imports `invoke` (0.1 s, mostly unittest.mock) only to run ssh_config `Match
    # exec` lines, which llorch does not support; the operator's CLI starts faster without it.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    try:
        # The commonest commands skip typer (and its pydantic) entirely: see bench/ssh.py.
        status = fast_remote(args)
        return _run_typer(args) if status is None else status
    except CtlError as e:
        if "--debug" in args:
            traceback.print_exc()
        sys.stderr.write(f"llorch: {e.message}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("llorch: interrupted\n")
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())

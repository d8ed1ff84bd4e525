"""`--version` for the four programs: one option, one line (`PROGRAM VERSION`), exit 0."""

from __future__ import annotations

from importlib import metadata

import typer

DISTRIBUTION = "llorch"


def version() -> str:
    """The installed distribution's version (every program ships in the same one)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def version_line(prog: str) -> str:
    return f"{prog} {version()}"


def version_option(prog: str) -> typer.models.OptionInfo:
    """An eager `--version` flag for a typer callback or command: prints and exits at once."""

    def show(value: bool) -> None:
        if value:
            typer.echo(version_line(prog))
            raise typer.Exit(0)

    return typer.Option(  # type: ignore[no-any-return]
        "--version",
        callback=show,
        is_eager=True,
        expose_value=True,
        help="Print the program's version and exit.",
    )

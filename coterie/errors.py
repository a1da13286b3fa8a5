"""CliError: a user-facing error of any ``coterie`` command, printed as one line (exit 2).

It lives apart from ``coterie.cli`` so that ``python -m coterie.cli`` (which runs that module
as ``__main__``) and the tools importing it agree on one class."""


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""

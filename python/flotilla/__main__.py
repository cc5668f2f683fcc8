"""`python -m flotilla`: the `flotilla-actor` program."""

from .cli import entry_point

entry_point()

"""Console-script entry point of ``ombridge``."""

from __future__ import annotations


def main() -> None:
    """Run the command line."""
    from .cli import main as cli_main

    cli_main()

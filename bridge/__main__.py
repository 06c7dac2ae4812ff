"""``python -m bridge``: the same as the ``ombridge`` command (the supervisor starts itself this way)."""

from .entry import main

main()

"""The ``ombridge`` command line: parse, call one library function, print.

:mod:`bridge.cli.app` assembles the commands; :mod:`bridge.cli.report` words results and errors
(light: ``ombridge send`` uses it without loading the CLI framework).
"""

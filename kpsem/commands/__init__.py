"""One module per ``python -m kpsem`` command, found by :func:`kpsem.cli.build_parser`.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

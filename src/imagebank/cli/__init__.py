"""The ``imagebank`` command."""

import sys


def run() -> None:
    """The console script. A Ctrl-C while the command is still loading (its imports take a
    moment) ends it as one later does: one line and exit status 130, never a traceback."""
    try:
        from imagebank.cli.main import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    main()

"""``python -m imagebank`` runs the command line."""

from imagebank.cli.main import main

main()

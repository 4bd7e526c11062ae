"""``python -m imagebank`` runs the command line."""

from imagebank.cli import run

run()

"""The ``imagebank`` command."""

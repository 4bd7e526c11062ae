"""The pure core: data model, identifiers, quarantine reasons. No I/O, no third-party imports."""

"""Subcommands of ``evaluate.py`` (one module each; see ``harness.cli.COMMANDS``)."""

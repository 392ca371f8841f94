#!/usr/bin/env python3
"""Thin entry point: ``python evaluate.py --suite bit_errors`` (see ``harness/cli.py``)."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""The runbook command: ``python -m disaster_recovery.failover --reason ...`` is ``dr failover``
(the same arguments, JSON result and exit codes; see :mod:`disaster_recovery.cli.failover`)."""

from __future__ import annotations

import sys

from disaster_recovery.cli import main

if __name__ == "__main__":
    sys.exit(main(["failover", *sys.argv[1:]]))

import sys

from disaster_recovery.cli import main

sys.exit(main())

"""`python -m agent.cli`: the same as the `qwq-agent` command."""

import sys

from agent.cli import main

sys.exit(main())

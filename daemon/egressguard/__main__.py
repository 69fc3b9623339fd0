"""`python -m egressguard` is the `egressguard` command."""

from egressguard.cli.main import main

raise SystemExit(main())

"""``python -m rig`` runs the CLI."""

from rig.cli.main import main

raise SystemExit(main())

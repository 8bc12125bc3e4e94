"""``python -m taskengine.cli``: the same as the ``taskengine`` command."""

from taskengine.cli import main

raise SystemExit(main())

"""`python -m servers --backend NAME …`: serve the authbench HTTP contract."""

from __future__ import annotations

import sys

from servers.errors import ConfigError
from servers.keyring import with_generated_keys
from servers.serve import run
from servers.settings import from_args


def main(argv: list[str] | None = None) -> int:
    """Parse flags and serve until interrupted; return the exit status (1 on a config error)."""
    try:
        settings = with_generated_keys(from_args(argv))
        return run(settings)
    except ConfigError as exc:
        print(f"authbench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`python -m lb`: read the config (exit 2 on a bad variable), then run the balancer on uvloop."""

from __future__ import annotations

import asyncio
import sys

from lb.config import Config, ConfigError


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    import uvloop

    from lb import log
    from lb.server import Balancer

    log.setup(config.log_level)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Balancer(config).run())
    except ConfigError as exc:   # found only when starting: an address that is taken
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

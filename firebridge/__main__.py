"""``python -m firebridge``: the bridge alone, without the CLI's other commands (a
lighter process for a service manager); ``smartcommunity fire-bridge`` is the same."""

from __future__ import annotations

import logging

from core.settings import Settings
from firebridge.service import serve


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(settings)


if __name__ == "__main__":
    main()

"""brandloop's Prefect flows: thin shells over the ``ner`` library, one flow per module.

Importing this package gives Prefect's ephemeral API (used when ``PREFECT_API_URL`` is not
set) a start-up timeout of 180 s unless the environment sets one: on a fresh database and a
busy machine its first start takes longer than Prefect's own default, inside ``make`` or not.
"""

from __future__ import annotations

import os
import sys

#: Prefect's ephemeral API start-up timeout used when the environment does not set one.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


def _ephemeral_startup_timeout() -> None:
    name = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    if name in os.environ:
        return
    os.environ[name] = EPHEMERAL_STARTUP_TIMEOUT_S
    context = sys.modules.get("prefect.context")
    if context is not None:  # Prefect read its settings already: let it read them again
        context.refresh_global_settings_context()


_ephemeral_startup_timeout()

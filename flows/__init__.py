"""brandloop's Prefect flows: thin shells over the ``ner`` library, one flow per module.

Importing this package gives Prefect's ephemeral API (used when ``PREFECT_API_URL`` is not
set) a start-up timeout of 180 s unless the environment sets one: on a fresh database and a
busy machine its first start takes longer than Prefect's own default, inside ``make`` or not.
It also turns off the telemetry the Prefect server sends (``PREFECT_SERVER_ANALYTICS_ENABLED``)
unless the environment sets it: brandloop runs offline, where each attempt logs an ERROR.

It also keeps Prefect's notices about that temporary API ("Starting temporary server on ...
See ... for more information on running a dedicated Prefect server", "Stopping temporary
server on ...") off the console. Prefect logs them at INFO on its top ``prefect`` logger, the
parent of the flow-run loggers, so raising that logger's level would hide the runs' INFO logs
too: a logging filter on it drops just these two notices. They show again when the
``prefect`` logger is at DEBUG (``PREFECT_LOGGING_LEVEL=DEBUG``).
"""

from __future__ import annotations

import logging
import os
import sys

#: Prefect's ephemeral API start-up timeout used when the environment does not set one.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


#: Prefect settings this package gives a default when the environment does not set them.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_S,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _prefect_defaults() -> None:
    unset = {k: v for k, v in PREFECT_DEFAULTS.items() if k not in os.environ}
    if not unset:
        return
    os.environ.update(unset)
    context = sys.modules.get("prefect.context")
    if context is not None:  # Prefect read its settings already: let it read them again
        context.refresh_global_settings_context()


class _TemporaryServerNotice(logging.Filter):
    """Drops Prefect's INFO notices that its temporary (ephemeral) API starts or stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        notice = record.levelno == logging.INFO and str(record.msg).startswith(
            ("Starting temporary server on ", "Stopping temporary server on ")
        )
        return not notice or logging.getLogger("prefect").isEnabledFor(logging.DEBUG)


def _quiet_temporary_server() -> None:
    logger = logging.getLogger("prefect")
    if not any(isinstance(f, _TemporaryServerNotice) for f in logger.filters):
        logger.addFilter(_TemporaryServerNotice())


_prefect_defaults()
_quiet_temporary_server()

"""Start ``train-ner`` once enough new human labels are in Label Studio.

Two modes, one gate (``NER_MIN_NEW_LABELS`` new labels since the last trigger)::

    python -m deployments.label_trigger serve --env dev --port 8765 \\
        [--host 0.0.0.0] [--register-url http://label-trigger:8765/webhook]
    python -m deployments.label_trigger poll --env dev [--interval 60] [--max-polls N]

``serve`` runs :class:`apps.webhook.WebhookReceiver` (``POST /webhook``, ``GET /health``).
With ``--register-url`` it also ensures the environment's project and points its webhook
(ANNOTATION_CREATED and ANNOTATION_UPDATED, with payload) at that URL, which is how Label
Studio reaches this process, and it then ignores events of other projects. Without it,
point the webhook at ``http://<host>:<port>/webhook`` yourself.

``poll`` needs no webhook: it asks Label Studio for new annotations every ``--interval``
seconds and keeps its place in a checkpoint in storage (``checkpoints/``); labels a training
pull has read (its own checkpoint there) are not new either.

Both call ``run_deployment("train-ner/<env>", timeout=0)``: a run is queued and the call
returns at once (the deployment's concurrency limit queues a run that arrives while one
trains), unless a run the trigger queued earlier has not started yet: that one reads the new
labels too. ``--deployment`` names another deployment of ``train-ner``.

Configuration: ``PREFECT_API_URL`` says which Prefect server (required: without it the runs
would go to a temporary local database that no worker reads); the rest is the usual ``NER_``
settings. The Label Studio key comes from ``NER_LABEL_STUDIO_API_KEY`` or the Prefect Secret
block ``NER_LABEL_STUDIO_API_KEY_BLOCK`` (needed by ``poll`` and ``--register-url``); with
``NER_LABEL_STUDIO_WEBHOOK_SECRET`` set, Label Studio must send it in the
``X-Brandloop-Webhook-Token`` header (``--register-url`` configures that). No secret is
logged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from apps.webhook import WEBHOOK_PATH, WebhookReceiver, register_webhook, running_receiver
from flows.context import RunContext, deployment_settings
from ner.errors import BrandloopError, ConfigError, LabelStudioError
from ner.labelstudio.client import LabelStudioProject
from ner.labelstudio.exchange import checkpoint_key
from ner.labelstudio.triggers import watch_labels
from ner.settings import Settings

log = logging.getLogger("brandloop.label_trigger")

#: The flow the trigger starts (its deployments are named after the environment).
TRAIN_FLOW = "train-ner"
#: Parameters of the runs it starts: train on what Label Studio holds.
TRAIN_PARAMETERS: dict[str, Any] = {"source": "label_studio"}
#: Tag on the runs it starts, so they can be told from scheduled ones.
RUN_TAG = "label-trigger"


def deployment_name(env: str, deployment: str | None = None) -> str:
    """``train-ner/<env>``, or ``deployment`` (a deployment name, or ``flow/deployment``)."""
    name = deployment or env
    return name if "/" in name else f"{TRAIN_FLOW}/{name}"


def queued_run(deployment: str) -> str | None:
    """The id of a run of ``deployment`` this trigger queued that has not started yet
    (Scheduled, including one awaiting the deployment's concurrency slot, or Pending), else
    None. Such a run reads every label Label Studio holds when it starts, so a second one
    would train on the same labels. Raises Prefect's ``ObjectNotFound`` for no deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                ),
                tags=FlowRunFilterTags(all_=[RUN_TAG]),
            ),
            limit=1,
        )
    return str(runs[0].id) if runs else None


def start_training(
    deployment: str, *, parameters: Mapping[str, Any] | None = None, coalesce: bool = True
) -> Callable[[], str]:
    """An ``on_trigger`` that queues a run of ``deployment`` and returns its flow run id; with
    ``coalesce``, when a run it queued earlier has not started yet (:func:`queued_run`),
    that run's id instead: it will read these labels too."""

    def trigger() -> str:
        from prefect.deployments import run_deployment

        run: Any = run_deployment  # dispatches on the caller; this is always sync code
        with prefect_errors(deployment):
            if coalesce and (waiting := queued_run(deployment)) is not None:
                log.info(
                    "flow run %s of %s has not started yet and will read these labels: "
                    "no other queued",
                    waiting,
                    deployment,
                )
                return waiting
            flow_run = run(
                deployment,
                parameters=dict(TRAIN_PARAMETERS if parameters is None else parameters),
                timeout=0,
                tags=[RUN_TAG],
                as_subflow=False,
                _sync=True,
            )
        log.info("queued flow run %s of %s", flow_run.id, deployment)
        return str(flow_run.id)

    return trigger


@contextlib.contextmanager
def prefect_errors(deployment: str) -> Iterator[None]:
    """Prefect's errors of a call about ``deployment`` as brandloop's: a deployment the API
    does not know is a :class:`ConfigError` naming it and the API; an API that cannot be
    reached (``httpx.HTTPError``) a :class:`BrandloopError` (the caller retries later)."""
    from prefect.exceptions import ObjectNotFound

    try:
        yield
    except ObjectNotFound as exc:  # its message is empty: say what was not found
        raise ConfigError(
            f"no deployment {deployment!r} on {_api()}: set "
            "PREFECT_API_URL to the server the flows were deployed to, or deploy them "
            "(brandloop deploy --env <env>)"
        ) from exc
    except httpx.HTTPError as exc:
        raise BrandloopError(
            f"cannot queue a run of {deployment!r} on {_api()}: {type(exc).__name__}: {exc}"
        ) from exc


def _api() -> str:
    """The Prefect API runs are queued on, as an error names it."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or "an ephemeral server (no PREFECT_API_URL)"


def prefect_api_url(who: str = "this trigger", sends: str | None = None) -> str:
    """The Prefect API ``who`` queues runs on: ``PREFECT_API_URL`` (or the active profile's).
    Raises :class:`ConfigError` when none is set: what it ``sends`` (default: the train-ner
    runs it queues) would go to a temporary local server whose database no worker reads."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            f"PREFECT_API_URL is not set: {sends or f'the train-ner runs {who} queues'} would "
            "go to a temporary local Prefect database that no worker reads; set it to the API "
            "of the server the flows are deployed to (http://127.0.0.1:4200/api for a local "
            "`prefect server start`)"
        )
    return str(url)


def check_prefect_api(url: str, who: str = "this trigger") -> bool:
    """Warn (log) when no Prefect API answers at ``url`` (:func:`apps.doctor.check_prefect`);
    True when one does. Not a refusal: a trigger may start before its server (a compose
    stack), and each run it starts meanwhile is logged as failed."""
    from apps.doctor import CheckStatus, check_prefect

    check = check_prefect(url)
    if check.status is CheckStatus.FAIL:
        log.warning(
            "no Prefect API answers at %s (%s): the runs %s starts fail until one "
            "does; check PREFECT_API_URL and that `prefect server start` runs there",
            url,
            check.detail,
            who,
        )
    return check.status is not CheckStatus.FAIL


def receiver(
    settings: Settings, on_trigger: Callable[[], object], *, project_id: int | None = None
) -> WebhookReceiver:
    """The webhook receiver of ``settings`` (gate, shared secret) around ``on_trigger``."""
    secret = settings.label_studio_webhook_secret
    return WebhookReceiver.from_settings(
        settings,
        on_trigger,
        secret=secret.get_secret_value() if secret is not None else None,
        project_id=project_id,
    )


def register(settings: Settings, url: str, *, attempts: int = 10, delay: float = 3.0) -> int:
    """Ensure the project and point its webhook at ``url``; returns the project id.

    Label Studio may still be starting (compose starts both together): a failure is
    retried ``attempts`` times, ``delay`` seconds apart, then raised.
    """
    secret = settings.label_studio_webhook_secret
    for attempt in range(1, attempts + 1):
        try:
            project = LabelStudioProject.connect(settings)
            hook = register_webhook(
                project, url, secret=secret.get_secret_value() if secret is not None else None
            )
        except LabelStudioError as exc:
            if attempt == attempts:
                raise
            log.warning("registering the webhook failed (%d/%d): %s", attempt, attempts, exc)
            time.sleep(delay)
            continue
        log.info("webhook %s of project %s posts to %s", hook, project.project_id, url)
        return project.project_id
    raise AssertionError("unreachable")


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread)."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def serve(args: argparse.Namespace) -> int:
    api = prefect_api_url()
    check_prefect_api(api)
    settings = deployment_settings({"env": args.env}, log.info)
    deployment = deployment_name(settings.env, args.deployment)
    stop = _stop_event()
    app_receiver = receiver(settings, start_training(deployment))
    with running_receiver(app_receiver.app, args.host, args.port) as base_url:
        log.info(
            "receiving Label Studio webhooks on %s%s; %d new labels start %s on %s",
            base_url,
            WEBHOOK_PATH,
            settings.min_new_labels,
            deployment,
            api,
        )
        if settings.label_studio_webhook_secret is None:
            log.warning(
                "NER_LABEL_STUDIO_WEBHOOK_SECRET is not set: any sender that reaches %s can "
                "start a training run",
                base_url,
            )
        if args.register_url:
            # Registered once listening, so no event is sent to a closed port.
            app_receiver.project_id = register(settings, args.register_url)
        stop.wait()
    return 0


def poll(args: argparse.Namespace) -> int:
    api = prefect_api_url()
    check_prefect_api(api)
    settings = deployment_settings({"env": args.env}, log.info)
    deployment = deployment_name(settings.env, args.deployment)
    project = LabelStudioProject.connect(settings, create=False)
    storage = RunContext.open(settings).storage
    # A bounded run (--max-polls) is a one-off or a test: it leaves signal handling alone.
    stop = _stop_event() if args.max_polls is None else None
    log.info(
        "polling project %s every %.0f s; %d new labels start %s on %s",
        project.project_id,
        args.interval,
        settings.min_new_labels,
        deployment,
        api,
    )
    triggers = watch_labels(
        project,
        storage,
        settings.min_new_labels,
        start_training(deployment),
        interval=args.interval,
        max_polls=args.max_polls,
        stop=stop,
        read_key=checkpoint_key(project.project_id),  # labels a training pull read are not new
    )
    log.info("stopped after %d triggers", triggers)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m deployments.label_trigger",
        description="Start train-ner once enough new labels are in Label Studio.",
    )
    modes = root.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", required=True, choices=("dev", "staging", "prod"))
    common.add_argument(
        "--deployment",
        default=None,
        help="deployment to run (default: train-ner/<env>); 'name' or 'flow/name'",
    )
    served = modes.add_parser("serve", parents=[common], help="receive Label Studio webhooks")
    served.add_argument("--host", default="127.0.0.1")
    served.add_argument("--port", type=int, default=8765)
    served.add_argument(
        "--register-url",
        default=None,
        help="URL Label Studio reaches this receiver at; registers the project's webhook",
    )
    served.set_defaults(run=serve)
    polled = modes.add_parser("poll", parents=[common], help="poll Label Studio for labels")
    polled.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    polled.add_argument("--max-polls", type=int, default=None, help="stop after N polls")
    polled.set_defaults(run=poll)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # force: importing flows.context has let Prefect configure the root logger already
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.run(args)
    except BrandloopError as exc:
        log.error("%s", exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Pure helpers of the Label Studio API client: task bookkeeping and batching (the server
side is tested in tests/integration/test_labelstudio_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ner.errors import LabelStudioError
from ner.labelstudio.client import LabelStudioProject, batched, post_id_of


# --- task bookkeeping -----------------------------------------------------------------------
def test_post_id_of_tasks_and_sdk_objects() -> None:
    class Task:
        data = {"post_id": 123}

    assert post_id_of({"data": {"post_id": "9"}}) == "9"
    assert post_id_of(Task()) == "123"
    # a task made by hand is read by the pull under data.id, else its task id: checked
    # against the same (a trial's hand-made labels lost to posts of those ids)
    assert post_id_of({"id": 227, "data": {"id": "hm-1", "post_id": ""}}) == "hm-1"
    assert post_id_of({"id": 227, "data": {"text": "t"}}) == "227"
    for missing in ({"data": {"post_id": ""}}, {"data": None}, {}, {"data": {"text": "t"}}):
        assert post_id_of(missing) is None


def test_batched_splits_in_order_and_rejects_a_zero_size() -> None:
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))


class _Listing(LabelStudioProject):
    """A project whose task listing is given (the live-set logic, without a server)."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.project_id = 3
        self.listed = tasks
        self.asked: dict[str, Any] = {}

    def iter_tasks(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.asked = kwargs
        return iter(self.listed)


def test_live_annotations_maps_tasks_to_annotation_ids() -> None:
    project = _Listing(
        [
            {"id": 1, "annotations": [{"id": 12}, {"id": 11}, {"id": "x"}]},
            {"id": 2, "annotations": []},
            {"id": "bad", "annotations": [{"id": 5}]},
        ]
    )
    assert project.live_annotations() == {1: [11, 12], 2: []}
    assert project.asked == {"include": "id,annotations", "fields": "all"}


def test_a_listing_without_annotations_is_refused_not_read_as_deletions() -> None:
    project = _Listing([{"id": 1, "annotations": [{"id": 11}]}, {"id": 2}])
    with pytest.raises(LabelStudioError, match="task 2 was listed without its annotations"):
        project.live_annotations()


def test_a_refused_key_is_an_auth_error_with_the_servers_reason_and_no_secret() -> None:
    from label_studio_sdk.core.api_error import ApiError

    from ner.errors import LabelStudioAuthError
    from ner.labelstudio.client import api_error

    # Given Label Studio's answer to a bad token (a trial saw it retried, then printed raw)
    refused = ApiError(
        status_code=401,
        headers={"www-authenticate": "Token"},
        body={"id": "5bba", "status_code": 401, "detail": "Invalid token."},
    )
    error = api_error("lookup of project 'p'", refused, secret="Invalid")
    # Then it is the permanent kind, says the status and the reason, and what to set
    assert isinstance(error, LabelStudioAuthError)
    assert str(error).startswith("Label Studio lookup of project 'p' failed: HTTP 401: *** token.")
    assert "NER_LABEL_STUDIO_API_KEY" in str(error) and "www-authenticate" not in str(error)
    # And another failure stays a transient LabelStudioError with its body
    down = ApiError(status_code=503, headers={}, body="upstream down")
    other = api_error("import", down)
    assert type(other) is LabelStudioError and str(other).endswith("HTTP 503: upstream down")


def test_label_studios_field_errors_are_said_without_their_html() -> None:
    import base64

    from label_studio_sdk.core.api_error import ApiError

    from ner.labelstudio.client import describe_failure
    from ner.labelstudio.ml_backend import basic_auth_header

    # Given Label Studio's answer to an ML backend it cannot reach (1.23.2, recorded)
    body = {
        "detail": "Validation error",
        "validation_errors": {
            "non_field_errors": ['Can\'t connect, <a href="https://x">Learn more</a> here.']
        },
    }
    said = describe_failure(ApiError(status_code=400, headers={}, body=body))
    # Then the field error is said as text, its link's text kept and its tags dropped
    assert said == "HTTP 400: Validation error: non_field_errors: Can't connect, Learn more here."
    # and a long one is cut with an ellipsis, never in the middle of a bracket
    long = {"detail": "Validation error", "validation_errors": {"url": ["x " * 400]}}
    said = describe_failure(ApiError(status_code=400, headers={}, body=long))
    assert said.endswith("…") and len(said) < 360 and "[" not in said
    # and the webhook's Basic header decodes to the user and password (RFC 7617)
    (token,) = basic_auth_header("studio", "s3:cret").values()
    assert base64.b64decode(token.removeprefix("Basic ")).decode() == "studio:s3:cret"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:9090", True),
        ("http://localhost:9090/", True),
        ("http://10.0.3.7:9090", True),
        ("http://[::1]:9090", True),
        ("https://ml.brandloop.example.org", False),
        ("http://34.120.1.9:9090", False),
    ],
)
def test_the_refusal_to_connect_a_backend_says_the_local_ip_setting_only_for_local_hosts(
    url: str, local: bool
) -> None:
    from ner.labelstudio.ml_backend import REFUSAL_CHARS, refusal_message

    # Given Label Studio's long reason for refusing a backend (a trial saw it cut at 150)
    reason = "HTTP 400: Validation error: non_field_errors: " + "health check failed " * 30
    said = refusal_message(url, reason)
    # Then the message fits the command line's one line, the reason cut with an ellipsis
    assert len(said) <= REFUSAL_CHARS
    assert said.startswith(f"Label Studio did not connect the ML backend {url} (HTTP 400")
    assert "…): start `python -m apps.ml_backend`" in said
    # and Label Studio's local-address switch is named only where it can be the cause
    assert ("ML_BLOCK_LOCAL_IP=false" in said) is local
    # and a short reason is kept whole
    assert "(HTTP 502: Bad Gateway): " in refusal_message(url, "HTTP 502: Bad Gateway")


def test_a_backend_that_refused_the_credentials_is_told_from_one_not_reached() -> None:
    from ner.labelstudio.ml_backend import refusal_message

    # A trial's missing NER_ML_BACKEND_PASSWORD was answered with where to start the backend
    reason = (
        "HTTP 400: Validation error: non_field_errors: Can't connect to ML backend "
        "http://127.0.0.1:9090/, health check failed. Reason: 401 Client Error: Unauthorized "
        "for url: http://127.0.0.1:9090/setup"
    )
    said = refusal_message("http://127.0.0.1:9090", reason)
    assert said.endswith(
        "): the backend refused Label Studio's credentials: set NER_ML_BACKEND_USER and "
        "NER_ML_BACKEND_PASSWORD here to the values the backend was started with"
    )
    assert "ML_BLOCK_LOCAL_IP" not in said


def test_a_label_studio_that_does_not_answer_is_named_by_its_address() -> None:
    from ner.settings import load_settings
    from tests.support.servers import free_port

    # Given nothing listening where the settings say Label Studio is (a trial's flow run said
    # only "Connection refused")
    url = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(label_studio_url=url, label_studio_api_key="secret-key")
    # When a flow connects to its project, then the error names the address and the setting
    with pytest.raises(LabelStudioError) as raised:
        LabelStudioProject.connect(settings, timeout=5)
    said = str(raised.value)
    assert said.startswith("Label Studio lookup of project 'brandloop-dev' failed: ConnectError")
    assert said.endswith(
        f"(at {url}: is Label Studio running there? NER_LABEL_STUDIO_URL names it)"
    )
    assert "secret-key" not in said

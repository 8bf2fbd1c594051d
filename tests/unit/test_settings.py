from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from pydantic import ValidationError

from ner.errors import ConfigError
from ner.settings import Settings, load_settings


def test_embedded_default_needs_no_variable(clean_env: None) -> None:
    # Given no NER_ variable, when settings are built
    settings = load_settings()
    # Then they point at a local folder and a local SQLite MLflow
    assert settings.env == "dev"
    assert settings.mlflow_tracking_uri == "sqlite:///mlflow.db"
    assert "://" not in settings.storage_uri
    assert settings.artifact_location() is not None
    assert settings.artifact_location().endswith("/mlartifacts")  # type: ignore[union-attr]


def test_env_prefix_and_plain_mlflow_variable(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_THRESHOLD", "0.55")
    monkeypatch.setenv("NER_KEYWORDS", '["lipstick", "#sephora"]')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = Settings()
    assert settings.threshold == 0.55
    assert settings.keywords == ("lipstick", "#sephora")
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_settings_are_frozen(clean_env: None) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.threshold = 0.1  # type: ignore[misc]


def test_invalid_value_names_the_variable(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_THRESHOLD", "1.5")
    with pytest.raises(ConfigError, match=r"NER_THRESHOLD='1\.5': Input should be less"):
        load_settings()


def test_the_environment_is_read_in_any_case(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given NER_ENV in capitals (a trial's shell: its deployment variables were read as
    # staging's, then the settings refused the name)
    monkeypatch.setenv("NER_ENV", " Staging")
    settings = load_settings()
    # Then it is staging, with staging's names
    assert (settings.env, settings.registered_model_name) == ("staging", "brand-ner-staging")
    assert load_settings({"env": "PROD"}).env == "prod"
    with pytest.raises(ConfigError, match="NER_ENV='qa'"):
        monkeypatch.setenv("NER_ENV", "QA")
        load_settings()


def test_an_invalid_override_is_named_by_its_key_not_a_variable(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bad value given as an override (--set threshold=2, a flow's overrides)
    with pytest.raises(ConfigError) as refused:
        load_settings({"threshold": 2})
    # Then the error names the key the user gave, not a variable they never set
    message = str(refused.value)
    assert message == "invalid settings: threshold=2: Input should be less than or equal to 1"
    # And a training knob is named by its dotted key, also under a flat name of earlier
    # releases, while a bad variable beside the override keeps its name
    monkeypatch.setenv("NER_TRAIN__DROPOUT", "2")
    with pytest.raises(ConfigError) as refused:
        load_settings({"train": {"max_epochs": 0}, "keywords": ["lipstick", {}]})
    message = str(refused.value)
    assert "train.max_epochs=0: Input should be greater" in message
    assert "keywords item 2 ({}): Input should be" in message
    assert "NER_TRAIN__DROPOUT='2': Input should be less than 1" in message
    # And a bad boolean says which words are booleans (pydantic's own message does not)
    with pytest.raises(ConfigError) as refused:
        load_settings({"train": {"accurate_freeze_embeddings": "maybe"}})
    message = str(refused.value)
    assert (
        "train.accurate_freeze_embeddings='maybe': expected true/false, yes/no, on/off, 1/0, "
        "t/f or y/n" in message
    )
    # And one that may also be auto says so, in one message rather than one per form
    with pytest.raises(ConfigError) as refused:
        load_settings({"train": {"accurate_bf16": "maybe"}})
    message = str(refused.value)
    expected = "train.accurate_bf16='maybe': expected true/false, yes/no, on/off, 1/0, t/f or y/n"
    assert f"{expected}, or auto" in message and message.count("accurate_bf16") == 1
    assert "NER_TRAIN__MAX_EPOCHS" not in message and "NER_KEYWORDS" not in message
    monkeypatch.delenv("NER_TRAIN__DROPOUT")
    with pytest.raises(ConfigError, match=r"settings: max_epochs=0: Input should be greater"):
        load_settings(max_epochs=0)


def test_a_misspelled_knob_override_is_named_by_its_key_with_the_closest_key(
    clean_env: None,
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"train": {"max_epocs": 5}})
    assert str(refused.value) == (
        "invalid settings: train.max_epocs: no such training knob (did you mean train.max_epochs?)"
    )


def test_missing_secret_names_the_variable(clean_env: None) -> None:
    settings = Settings()
    with pytest.raises(ConfigError, match="NER_X_BEARER_TOKEN"):
        settings.require_secret("x_bearer_token")


def test_an_unread_secret_block_fails_only_that_secret(clean_env: None) -> None:
    # Given settings whose X token block could not be read, and a Label Studio key set
    reason = "NER_X_BEARER_TOKEN_BLOCK names the Prefect Secret block 'x-tok', which cannot be"
    settings = Settings(label_studio_api_key="k").with_unread_blocks({"x_bearer_token": reason})
    # Then the X token raises that reason, and only it; copies keep it
    with pytest.raises(ConfigError) as refused:
        settings.require_secret("x_bearer_token")
    assert str(refused.value) == reason
    assert settings.require_secret("label_studio_api_key") == "k"
    assert (
        settings.model_copy(update={"threshold": 0.5}).secret_block_problem("x_bearer_token")
        == reason
    )
    assert Settings().secret_block_problem("x_bearer_token") is None


def test_secrets_never_in_dumps_or_repr(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_X_BEARER_TOKEN", "s3cr3t-token-value")
    monkeypatch.setenv("NER_LABEL_STUDIO_API_KEY", "ls-key-value")
    settings = Settings()
    assert settings.require_secret("x_bearer_token") == "s3cr3t-token-value"
    for text in (repr(settings), str(settings.safe_dump()), str(settings.model_dump())):
        assert "s3cr3t-token-value" not in text
        assert "ls-key-value" not in text
    assert "x_bearer_token" not in settings.safe_dump()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lipstick", ("lipstick",)),
        ("lipstick, #sephora ,makeup", ("lipstick", "#sephora", "makeup")),
        ('["lipstick", "#sephora"]', ("lipstick", "#sephora")),
    ],
)
def test_list_settings_take_json_or_comma_separated_values(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    # Given NER_KEYWORDS as one word, a comma-separated list or a JSON list
    monkeypatch.setenv("NER_KEYWORDS", value)
    monkeypatch.setenv("NER_LABELS", "brand,shop")
    # Then each is read as the list it means
    settings = load_settings()
    assert settings.keywords == expected
    assert settings.labels == ("BRAND", "SHOP")


def test_map_settings_take_json_or_key_value_pairs(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_BASE_LABEL_MAP", "ORG=BRAND, PRODUCT=BRAND")
    monkeypatch.setenv("NER_TRAIN__LABEL_MAP", '{"BRAND": "ORG"}')
    settings = load_settings()
    assert settings.base_label_map == {"ORG": "BRAND", "PRODUCT": "BRAND"}
    assert settings.train.label_map == {"BRAND": "ORG"}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NER_KEYWORDS", '["lipstick",', "JSON list or comma-separated values"),
        ("NER_BASE_LABEL_MAP", "ORG", "KEY=VALUE pairs"),
        ("NER_THRESHOLD", "high", "valid number"),
        ("NER_TRAIN__MAX_EPOCHS", "0", "greater than or equal to 1"),
        ("NER_ENV", "production", "'dev', 'staging' or 'prod'"),
        ("NER_TRAIN__ACCURATE_FREEZE_EMBEDDINGS", "maybe", "expected true/false, yes/no, on/off"),
        ("NER_TRAIN__ACCURATE_BF16", "maybe", "expected true/false, yes/no, on/off, 1/0"),
    ],
)
def test_a_bad_variable_is_named_with_its_value_and_the_expected_form(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"{name}={value!r}" in message and expected in message


def test_a_bad_secret_is_named_without_its_value(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="serve_api_key: Input should be") as raised:
        load_settings(serve_api_key=["not", "a", "string-s3cr3t"])
    assert "s3cr3t" not in str(raised.value)
    # nor when one item of a list of secrets is bad (the error is located at the item)
    monkeypatch.setenv("NER_SERVE_API_KEYS", '[["tok-s3cr3t"], 5]')
    with pytest.raises(ConfigError, match="NER_SERVE_API_KEYS") as raised:
        load_settings()
    assert "s3cr3t" not in str(raised.value)


def test_a_variable_that_is_not_json_is_named_without_its_value(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_TRAIN", "not-json-s3cr3t")
    with pytest.raises(ConfigError, match="NER_TRAIN: not valid JSON") as raised:
        load_settings()
    assert "s3cr3t" not in str(raised.value)
    # and the error shows the form the setting takes
    assert "NER_TRAIN__<KNOB>" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "keys"),
    [("tok-a", ["tok-a"]), ("tok-a, tok-b,", ["tok-a", "tok-b"]), ('["tok-a"]', ["tok-a"])],
)
def test_more_api_keys_are_a_comma_separated_list_or_json(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str, keys: list[str]
) -> None:
    monkeypatch.setenv("NER_SERVE_API_KEYS", value)
    assert [k.get_secret_value() for k in load_settings().serve_api_keys] == keys


def test_more_api_keys_in_broken_json_are_named_without_their_value(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_SERVE_API_KEYS", '["tok-s3cr3t"')
    with pytest.raises(ConfigError, match=r"NER_SERVE_API_KEYS: .*not valid JSON") as raised:
        load_settings()
    assert "s3cr3t" not in str(raised.value)
    # nor in the traceback --debug prints (pydantic's own error shows the input)
    shown = "".join(traceback.format_exception(raised.value))
    assert "s3cr3t" not in shown


def _refusal(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """The ConfigError message of loading the settings with ``variable=value``."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    monkeypatch.delenv(variable)
    return str(raised.value)


def test_a_bad_item_of_a_list_setting_is_named_by_its_position(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a list of tokens whose second item is a number: the item is named, counted
    # from 1, without a secret's value or pydantic's "Value error," prefix
    message = _refusal(monkeypatch, "NER_SERVE_API_KEYS", '["tok-s3cr3t", 7]')
    assert "NER_SERVE_API_KEYS item 2: Input should be a valid string" in message
    assert "item 1" not in message and "s3cr3t" not in message
    assert "Value error" not in message
    # And an item of a plain list shows its value
    message = _refusal(monkeypatch, "NER_KEYWORDS", '["lipstick", {}]')
    assert "NER_KEYWORDS item 2 ({}): Input should be" in message


def test_a_list_setting_in_broken_json_names_the_form_without_pydantic_prefix(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _refusal(monkeypatch, "NER_KEYWORDS", '["lipstick",')
    assert """NER_KEYWORDS='["lipstick",': not valid JSON""" in message
    assert "Value error" not in message and "comma-separated values" in message


def test_training_knobs_are_one_nested_part(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the nested variables, and an override of one knob
    monkeypatch.setenv("NER_TRAIN__MAX_EPOCHS", "5")
    monkeypatch.setenv("NER_TRAIN__START_FROM", "champion")
    settings = load_settings({"train": {"dropout": 0.1}})
    # Then both reach settings.train, the rest keeps its defaults
    assert settings.train.max_epochs == 5 and settings.train.start_from == "champion"
    assert settings.train.dropout == 0.1 and settings.train.patience == 400
    overrides = settings.train.spacy_overrides(settings.seed)
    assert overrides["training.max_epochs"] == 5 and overrides["training.dropout"] == 0.1


def test_flat_training_names_of_earlier_releases_still_work(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given NER_MAX_EPOCHS and flat override keys, as before the nesting
    monkeypatch.setenv("NER_MAX_EPOCHS", "4")
    settings = load_settings({"train_with_gazetteer": True, "train_checkpoint": "last"})
    assert settings.train.max_epochs == 4
    assert settings.train.gazetteer is True and settings.train.checkpoint == "last"
    # And the nested name wins over the flat one
    monkeypatch.setenv("NER_TRAIN__MAX_EPOCHS", "9")
    assert load_settings().train.max_epochs == 9
    # but an override wins over either variable, flat as nested (the demo's recipe gives
    # flat keys; NER_TRAIN__MAX_EPOCHS beat its max_epochs=20), the other variables kept
    monkeypatch.setenv("NER_TRAIN__DROPOUT", "0.3")
    given = load_settings({"max_epochs": 20})
    assert (given.train.max_epochs, given.train.dropout) == (20, 0.3)
    assert load_settings({"max_epochs": 20, "train": {"max_epochs": 7}}).train.max_epochs == 7


def test_an_unknown_override_fails_naming_it(clean_env: None) -> None:
    # with the closest name, as --set says it (a trial's Python overrides had no hint)
    with pytest.raises(ConfigError, match=r"'treshold' \(did you mean 'threshold'\?\)"):
        load_settings({"treshold": 0.5})
    with pytest.raises(ConfigError, match=r"setting\(s\) 'zzz' in overrides"):
        load_settings({"zzz": 1})


def test_unknown_ner_variables_are_listed_with_the_closest_setting() -> None:
    from ner.settings import unknown_variables

    environ = {
        "NER_THRESOLD": "0.7",  # a typo
        "NER_NOTHING_LIKE_IT": "1",
        "NER_ENV": "dev",
        "NER_SERVE_API_KEY_BLOCK": "serve-key",
        "NER_MAX_EPOCHS": "3",  # a flat name of earlier releases, still read
        "NER_TRAIN__MAX_EPOCH": "3",  # refused by validation, not listed here
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        ("NER_NOTHING_LIKE_IT", None),
        ("NER_THRESOLD", "NER_THRESHOLD"),
    ]


def test_a_misspelled_training_knob_is_refused_with_the_closest_knob(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_TRAIN__MAX_EPOCH", "3")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "NER_TRAIN__MAX_EPOCH='3': no such training knob" in str(refused.value)
    assert "(did you mean NER_TRAIN__MAX_EPOCHS?)" in str(refused.value)
    monkeypatch.delenv("NER_TRAIN__MAX_EPOCH")
    monkeypatch.setenv("NER_TRAIN__QQQQQQ", "3")  # nothing close: no guess
    with pytest.raises(ConfigError, match=r"NER_TRAIN__QQQQQQ='3': no such training knob$"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        (".brandloop/demo/mlflow.db", "use sqlite:///.brandloop/demo/mlflow.db"),
        ("/srv/mlflow.sqlite", "use sqlite:////srv/mlflow.sqlite"),
        ("sqlite://.brandloop/demo/mlflow.db", "use sqlite:///.brandloop/demo/mlflow.db"),
        ("sqlite://mlflow.db", "use sqlite:///mlflow.db"),
        # a scheme MLflow does not read (a trial's was read as "no champion yet")
        (
            "bogus://x",
            "use sqlite:///PATH, http(s)://HOST:PORT, postgresql://…, mysql://… or file://…",
        ),
    ],
)
def test_a_tracking_uri_mlflow_would_misread_is_refused_with_the_sqlite_form(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str, fix: str
) -> None:
    # Given a bare path to a .db file (MLflow's file store) or sqlite:// with a host part
    # (SQLAlchemy's "Invalid SQLite URL"), from the variable or as an override
    message = _refusal(monkeypatch, "NER_MLFLOW_TRACKING_URI", value)
    # Then the setting is refused naming the variable, its value and the URI to use
    assert f"NER_MLFLOW_TRACKING_URI={value!r}: " in message and message.endswith(fix)
    if value.startswith("sqlite://"):
        assert "sqlite:///PATH" in message and "sqlite:////abs/path" in message
    if value.startswith("bogus"):
        assert "bogus:// is not a tracking URI MLflow reads" in message
    with pytest.raises(ConfigError) as refused:
        load_settings(mlflow_tracking_uri=value)
    assert f"settings: mlflow_tracking_uri={value!r}: " in str(refused.value)
    assert str(refused.value).endswith(fix)


def test_a_bad_plain_mlflow_variable_is_named_as_set(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLFLOW_TRACKING_URI alone: the error names it, not NER_MLFLOW_TRACKING_URI
    message = _refusal(monkeypatch, "MLFLOW_TRACKING_URI", "mlflow.db")
    assert message.startswith("invalid settings: MLFLOW_TRACKING_URI='mlflow.db': ")
    assert "NER_MLFLOW_TRACKING_URI" not in message


@pytest.mark.parametrize(
    "value",
    [
        "sqlite:///mlflow.db",
        "sqlite:///.brandloop/demo/mlflow.db",
        "sqlite:////tmp/brandloop/mlflow.db",
        "http://127.0.0.1:5000",
        "https://mlflow.example.com",
        "file:///tmp/mlruns",
        "./mlruns",
        "postgresql://mlflow:secret@db:5432/mlflow",
        "databricks",
        "databricks-uc",
        "postgresql+psycopg2://mlflow:secret@db/mlflow",
        "mysql+pymysql://u:p@db/mlflow",
    ],
)
def test_tracking_uris_mlflow_reads_are_kept(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert load_settings(mlflow_tracking_uri=value).mlflow_tracking_uri == value
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", value)
    assert load_settings().mlflow_tracking_uri == value


def test_a_uri_is_shown_without_its_password() -> None:
    from ner.settings import redact_uri, setting_rows

    assert (
        redact_uri("postgresql://bob:hunter2@db:5432/mlflow")
        == "postgresql://bob:***@db:5432/mlflow"
    )
    assert redact_uri("http://u:p@w@127.0.0.1:5000/x?y=1") == "http://u:***@127.0.0.1:5000/x?y=1"
    for plain in ("sqlite:///mlflow.db", "http://127.0.0.1:5000", "gs://bucket/x", "dev", ""):
        assert redact_uri(plain) == plain
    # brandloop settings lists the URI, not the password
    settings = load_settings({"mlflow_tracking_uri": "postgresql://bob:hunter2@db/mlflow"})
    (row,) = [r for r in setting_rows(settings) if r.key == "mlflow_tracking_uri"]
    assert row.value == '"postgresql://bob:***@db/mlflow"'


def test_an_environment_takes_its_deployments_storage_and_mlflow() -> None:
    from ner.settings import deployment_overrides

    environ = {
        "BRANDLOOP_STAGING_STORAGE_URI": "gs://stage-bucket",
        "BRANDLOOP_STAGING_MLFLOW_TRACKING_URI": "https://ops:pw@mlflow.example/",
        "BRANDLOOP_STAGING_LABEL_STUDIO_URL": "http://ls-staging:8080",
        "BRANDLOOP_DEV_STORAGE_URI": "/data/dev",
    }
    # Given --set env=staging (a trial's forget cleaned the local default, not the bucket)
    taken, said = deployment_overrides({"env": "staging"}, environ)
    # Then staging's deployment storage and MLflow are taken, each named, the password of a
    # URI not shown; not its Label Studio URL (its key comes with the NER_ variables)
    assert taken == {
        "env": "staging",
        "storage_uri": "gs://stage-bucket",
        "mlflow_tracking_uri": "https://ops:pw@mlflow.example/",
    }
    assert said == [
        "staging's storage: gs://stage-bucket (BRANDLOOP_STAGING_STORAGE_URI)",
        "staging's MLflow: https://ops:***@mlflow.example/ (BRANDLOOP_STAGING_MLFLOW_TRACKING_URI)",
    ]
    # And a --set value wins, then a NER_ variable (named beside the value it overrides),
    # then the deployment's; without --set env, NER_ENV (else dev) names the environment
    assert (
        deployment_overrides({"env": "staging", "storage_uri": "x"}, environ)[0]["storage_uri"]
        == "x"
    )
    own, said = deployment_overrides({"env": "staging"}, {**environ, "NER_STORAGE_URI": "/mine"})
    assert "storage_uri" not in own and said[0] == (
        "staging's storage: NER_STORAGE_URI=/mine, not its deployments' "
        "BRANDLOOP_STAGING_STORAGE_URI=gs://stage-bucket"
    )
    assert deployment_overrides({}, environ)[0] == {"storage_uri": "/data/dev"}
    assert deployment_overrides({}, {**environ, "NER_ENV": "prod"}) == ({}, [])
    # and MLflow's own MLFLOW_TRACKING_URI counts as the setting's variable (a trial saw the
    # deployment's value win over it without a word)
    mlflow_own = {**environ, "MLFLOW_TRACKING_URI": "sqlite:///mine.db"}
    own, said = deployment_overrides({"env": "staging"}, mlflow_own)
    assert "mlflow_tracking_uri" not in own
    assert said[1].startswith("staging's MLflow: MLFLOW_TRACKING_URI=sqlite:///mine.db, not")


def test_an_empty_storage_uri_is_refused_by_name() -> None:
    from ner.errors import ConfigError
    from ner.settings import load_settings

    # a trial's `--set storage_uri=` was read as the root folder ("/dev")
    with pytest.raises(ConfigError, match=r"storage_uri.*is empty: give a local folder"):
        load_settings({"storage_uri": " "})


def test_a_storage_uri_that_is_or_runs_through_a_file_is_refused_by_name(tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text("{}\n", encoding="utf-8")
    # a trial's posts file as storage_uri gave "NotADirectoryError: ... posts.jsonl/dev/posts"
    # (and its file:// form, which a trial saw end in NotADirectoryError still)
    for uri in (str(posts), f"{posts}/store", f"file://{posts}", f"file://{posts}/store"):
        with pytest.raises(ConfigError, match=rf"storage_uri.*{posts} is a file, not a folder"):
            load_settings({"storage_uri": uri})
    assert load_settings({"storage_uri": str(tmp_path / "new" / "store")}).storage_uri
    assert load_settings({"storage_uri": f"file://{tmp_path}/new"}).storage_uri
    # and the other file: forms are read as RFC 8089 says, or refused by name (a trial's
    # were read as folders named "localhost/…", "file:" or "afile.txt?x=1")
    for uri in (f"file://localhost{posts}", f"file:{posts}"):
        with pytest.raises(ConfigError, match=rf"{posts} is a file, not a folder"):
            load_settings({"storage_uri": uri})
    with pytest.raises(ConfigError, match=r"names the host 'tmp': a file URI takes three"):
        load_settings({"storage_uri": "file://tmp/store"})
    with pytest.raises(ConfigError, match=r"not a file URI of a local path"):
        load_settings({"storage_uri": f"file://{tmp_path}/store?x=1"})


def test_hide_secrets_makes_each_secret_a_secret_str_the_settings_take() -> None:
    from pydantic import SecretStr

    from ner.settings import hide_secrets, plain_secrets

    given = {"threshold": 0.7, "x_bearer_token": "tok", "serve_api_keys": "a, b"}
    assert plain_secrets(given) == ["x_bearer_token", "serve_api_keys"]
    hidden = hide_secrets(given)
    assert hidden["threshold"] == 0.7 and isinstance(hidden["x_bearer_token"], SecretStr)
    assert [type(k) for k in hidden["serve_api_keys"]] == [SecretStr, SecretStr]
    assert plain_secrets(hidden) == []
    settings = load_settings(hidden)
    assert settings.require_secret("x_bearer_token") == "tok"
    assert [k.get_secret_value() for k in settings.serve_api_keys] == ["a", "b"]
    assert given["x_bearer_token"] == "tok"  # the caller's dict is left as it was


def test_a_name_of_another_environment_is_named(clean_env: None) -> None:
    from ner.settings import names_of_other_environments

    # a trial's shell kept NER_REGISTERED_MODEL_NAME=brand-ner-dev; --set env=prod then used
    # dev's registered model without a word
    mixed = load_settings(env="prod", registered_model_name="brand-ner-dev")
    assert names_of_other_environments(mixed) == [
        "registered_model_name is 'brand-ner-dev', dev's own name, while env is prod (is "
        "NER_REGISTERED_MODEL_NAME set for every environment? unset it)"
    ]
    assert names_of_other_environments(load_settings(env="prod")) == []
    assert names_of_other_environments(load_settings(registered_model_name="brands")) == []


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("AUTO", "auto"), ("yes", True), ("0", False)]
)
def test_bf16_takes_a_boolean_or_auto_from_the_environment(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool | str
) -> None:
    monkeypatch.setenv("NER_TRAIN__ACCURATE_BF16", value)
    assert load_settings().train.accurate_bf16 == expected
    # unset, float32 (the shipped recipe)
    monkeypatch.delenv("NER_TRAIN__ACCURATE_BF16")
    assert load_settings().train.accurate_bf16 is False


def test_settings_lists_what_auto_bfloat16_means_on_this_cpu(clean_env: None) -> None:
    from ner.settings import setting_rows
    from ner.transformer import uses_bf16

    here = "bfloat16" if uses_bf16("auto") else "float32"
    settings = load_settings({"train": {"accurate_bf16": "auto"}})
    (row,) = [r for r in setting_rows(settings) if r.key == "train.accurate_bf16"]
    assert row.value == f'"auto" ({here} on this CPU)'
    (row,) = [r for r in setting_rows(load_settings()) if r.key == "train.accurate_bf16"]
    assert row.value == "false"

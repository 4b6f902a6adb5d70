"""OperatorSettings from LMO_* environment variables and `--settings K=V` overrides."""

from __future__ import annotations

import pytest

from lmo.errors import UserError
from lmo.settings import OperatorSettings


def test_defaults():
    s = OperatorSettings.from_env({})
    assert s == OperatorSettings()
    assert s.artifact_store == "pvc://lmo-artifacts/store"
    assert s.field_manager == "lmo"


def test_from_env_parses_types():
    s = OperatorSettings.from_env(
        {
            "LMO_ARTIFACT_STORE": "s3://bucket/lmo",
            "LMO_ARTIFACT_STORE_SECRET": "creds",
            "LMO_JOB_TTL_SECONDS": "60",
            "LMO_CONVERTER_GPU_FOR_FP16": "false",
            "LMO_IMAGE_PULL_SECRETS": '["regcred"]',
            "LMO_CONVERTER_RESOURCES": '{"requests": {"cpu": "2"}}',
            "LMO_SERVICE_ACCOUNT": "",
            "UNRELATED": "x",
        }
    )
    assert s.artifact_store == "s3://bucket/lmo"
    assert s.artifact_store_secret == "creds"
    assert s.job_ttl_seconds == 60
    assert s.converter_gpu_for_fp16 is False
    assert s.image_pull_secrets == ["regcred"]
    assert s.converter_resources == {"requests": {"cpu": "2"}}
    assert s.service_account is None


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"LMO_JOB_TTL_SECONDS": "soon"}, "LMO_JOB_TTL_SECONDS"),
        ({"LMO_ARTIFACT_STORE": "ftp://x"}, "LMO_ARTIFACT_STORE"),
        ({"LMO_IMAGE_PULL_SECRETS": "[oops"}, "LMO_IMAGE_PULL_SECRETS: not valid JSON"),
    ],
)
def test_bad_env_names_the_variable(env, needle):
    with pytest.raises(UserError, match=needle):
        OperatorSettings.from_env(env)


def test_overrides_accept_field_camel_and_env_names():
    s = OperatorSettings().with_overrides(
        ["artifact_store=s3://a/b", "converterImage=img:1", "LMO_JOB_TTL_SECONDS=5"]
    )
    assert (s.artifact_store, s.converter_image, s.job_ttl_seconds) == ("s3://a/b", "img:1", 5)


def test_override_unknown_key_lists_valid_ones():
    with pytest.raises(UserError, match="KEY one of .*artifact_store"):
        OperatorSettings().with_overrides(["artefact_store=s3://a"])
    with pytest.raises(UserError, match="--settings job_ttl_seconds"):
        OperatorSettings().with_overrides(["job_ttl_seconds=-1"])


def test_every_setting_the_chart_sets_exists():
    """The Helm chart passes settings as LMO_* env vars; each must be an OperatorSettings field."""
    import json
    import re
    from pathlib import Path

    from pydantic.alias_generators import to_camel

    chart = Path(__file__).resolve().parents[2] / "charts" / "lmo"
    template = (chart / "templates" / "deployment.yaml").read_text()
    env_names = set(re.findall(r"name: (LMO_[A-Z0-9_]+)\b", template))
    assert "LMO_ARTIFACT_STORE" in env_names
    fields = set(OperatorSettings.model_fields)
    assert {n.removeprefix("LMO_").lower() for n in env_names} <= fields
    schema = json.loads((chart / "values.schema.json").read_text())
    named = schema["properties"]["settings"]["propertyNames"]["not"]["enum"]
    assert set(named) <= {to_camel(f) for f in fields}


def test_docs_settings_table_matches_the_model():
    """docs/children.md embeds `python -m lmo.settings`; regenerate it when a setting changes."""
    from pathlib import Path

    from lmo.settings import markdown_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "children.md").read_text()
    start = doc.index("<!-- settings-table")
    block = doc[doc.index("\n", start) + 1 : doc.index("<!-- /settings-table -->")]
    assert block == markdown_table()

"""spec.logging.payloads on the real API server with the real operator and chart.

The CRD refuses a bad sampleRate and sink with the field's message; a resource with payload
logging becomes Ready (its sink Secret missing does not keep a pod from starting) and its
Triton Deployments carry the logging environment the models read; a redact rule Python
cannot compile (the API server has no regex check) becomes a readable InvalidSpec condition
naming the field; the chart's PrometheusRule with the payload and drift alerts is accepted.
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.real_cluster import ApiError, RealCluster, two_versions

pytestmark = pytest.mark.slow

DEPLOYMENT = ("apps/v1", "Deployment")
PAYLOADS = {"sampleRate": 0.2, "redact": [r"\b\d{11}\b"], "sink": "s3://audit-logs/lmo",
            "secretRef": {"name": "audit-store"}}


def test_bad_payload_settings_are_refused_by_the_server(real: RealCluster, ns: str):
    for payloads, words in [
        ({"sampleRate": 1.5}, "sampleRate"),
        ({"sink": "kafka://broker/topic"},
         "spec.logging.payloads.sink must be stdout or s3://bucket/prefix"),
    ]:
        with pytest.raises(ApiError) as err:
            real.create_lm(ns, "refused", two_versions(logging={"payloads": payloads}))
        assert err.value.status == 422 and words in str(err.value)


def test_payload_logging_reaches_the_triton_pods(real: RealCluster, ns: str):
    real.create_lm(ns, "logged", two_versions(logging={"payloads": PAYLOADS}))
    real.wait_ready(ns, "logged")
    for version in ("v1", "v2"):
        dep = real.get(*DEPLOYMENT, ns, f"logged-{version}")
        (triton,) = [c for c in dep["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "triton"]
        env = {e["name"]: e.get("value") for e in triton["env"]}
        assert (env["LMO_NAME"], env["LMO_VERSION"]) == ("logged", version)
        assert json.loads(env["LMO_PAYLOADS"]) == {
            "sampleRate": 0.2, "redact": PAYLOADS["redact"], "sink": "s3://audit-logs/lmo"}
        assert triton["envFrom"] == [{"secretRef": {"name": "audit-store", "optional": True}}]
    rule = real.request("GET",
                        "/apis/monitoring.coreos.com/v1/namespaces/lmo-system/prometheusrules/lmo")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"LmoPayloadLogsDropping", "LmoInputLengthDrift", "LmoInputUnknownTokens",
            "LmoEmbeddingDrift"} <= alerts


def test_a_redact_rule_python_cannot_compile_is_a_readable_condition(real: RealCluster, ns: str):
    real.create_lm(ns, "badregex", two_versions(logging={"payloads": {"redact": ["(unclosed"]}}))

    def invalid():
        c = real.condition(ns, "badregex", "Ready")
        return c if c.get("reason") == "InvalidSpec" else None

    cond = real.wait(invalid, 60, "Ready=False InvalidSpec")
    assert cond["status"] == "False"
    assert "spec.logging.payloads.redact[0]" in cond["message"]
    assert "not a valid regular expression" in cond["message"]
    assert real.get(*DEPLOYMENT, ns, "badregex-v1") is None

"""Deployment material, checked offline: manifests against the Kubernetes schemas, the policies
and issuers they ship through phigate's own loaders, the compose file's wiring, the systemd
unit with systemd-analyze. Nothing here builds or runs a container."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from phigate.identity import load_issuers
from phigate.policy import load_policies

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSION = "1.33.0"


def manifests() -> list[dict]:
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def by_kind(kind: str) -> dict:
    (found,) = [d for d in manifests() if d["kind"] == kind]
    return found


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_manifest_validates_against_the_kubernetes_schema(manifest):
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest():
    broken = by_kind("Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_is_locked_down_and_probes_the_admin_port():
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    timeout = int(next(a for a in container["args"] if "shutdown_timeout" in a).rsplit("=", 1)[1])
    assert pod["terminationGracePeriodSeconds"] > timeout + 2  # drain, then final checkpoint
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == mounted


def test_configmap_policies_and_issuers_load_with_phigate(tmp_path):
    data = by_kind("ConfigMap")["data"]
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "clinicians.yaml").write_text(data["clinicians.yaml"])
    assert [p.name for p in load_policies(policies).policies] == ["clinicians"]
    (tmp_path / "issuers.yaml").write_text(data["issuers.yaml"])
    assert load_issuers(tmp_path / "issuers.yaml")[0].audience == "phigate"


def test_networkpolicy_allows_egress_only_to_dns_upstream_and_idp():
    spec = by_kind("NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 443]
    assert sum("ipBlock" in peer for rule in spec["egress"] for peer in rule["to"]) == 2


def test_compose_wires_the_app_through_the_gateway_only():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "upstream", "app"}
    app, gateway = services["app"], services["gateway"]
    assert app["environment"]["HTTPS_PROXY"] == "http://gateway:8080"
    assert app["environment"]["SSL_CERT_FILE"].startswith("/var/lib/phigate/ca/")
    assert app["networks"] == ["apps"] and compose["networks"]["apps"]["internal"] is True
    assert "--upstream" in gateway["command"]
    assert all(s.get("read_only") is True for s in services.values())
    assert "localupstream" in " ".join(services["upstream"]["entrypoint"])
    for service in services.values():
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    (secret,) = compose["secrets"].values()
    assert (DEPLOY / secret["file"]).is_file()


def test_compose_config_parses_with_the_docker_client():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"],
                                    capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin")
    result = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config",
                             "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_non_root_and_installs_only_pinned_project_files():
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("0", "root"))
    assert "--require-hashes -r requirements/model.txt" in text
    root = DEPLOY.parent
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (root / source).exists(), source
    assert re.search(r"ENTRYPOINT \[\"phigate\", \"run\"", text)


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "phigate.service").read_text()
    # The unit names the install location; verify checks that the binary exists, so point it
    # at this checkout's phigate for the check.
    unit = unit.replace("/opt/phigate/.venv/bin/phigate", str(Path(sys.executable).with_name("phigate")))
    local = tmp_path / "phigate.service"
    local.write_text(unit)
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "KillSignal=SIGTERM" in unit


"""Renders every chart with Helm's own engine (helm-python-sdk wraps Helm v4's Go SDK) and checks
what an operator relies on: off by default (0 resources), a clear render failure on a missing image
tag or missing required config, the exact set of resources when on, least-privilege pod settings,
and a clean `helm lint`. Run: python3 charts/tests/test_charts.py (scripts/test.sh does).
"""

import collections
import os
import sys
import unittest

import yaml

# helm_python's package dir has a logging.py that shadows the stdlib: never run from inside it.
import helm_python as helm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chart(name):
    return helm.Chart.load(os.path.join(ROOT, name))


def ci_values(name, file):
    with open(os.path.join(ROOT, name, "ci", file)) as f:
        return yaml.safe_load(f)


def render(name, values):
    out = chart(name).render(values, name="r", namespace="catalyst-system")
    return [d for manifest in out.values() for d in yaml.safe_load_all(manifest) if d]


def kinds(docs):
    return collections.Counter(d["kind"] for d in docs)


def pod_spec(docs):
    (w,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    return w["spec"]["template"]["spec"]


# Kubernetes kinds validated strictly against the official schemas (typos are errors); CRD
# kinds (HTTPRoute) are checked against the real CRD's openAPIV3Schema below.
K8S_VERSION = "1.32"


def validate_builtin(testcase, docs):
    import kubernetes_validate

    for d in docs:
        if d["kind"] == "HTTPRoute":
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            testcase.fail(f"{d['kind']} {d['metadata']['name']}: {e}")


def validate_against_crd(testcase, doc, crd_file):
    import jsonschema

    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == doc["apiVersion"].split("/")[1]]
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])


class Common:
    """Checks every service chart must pass. Subclasses set NAME, KEY, ON (ci file), KINDS."""

    NAME = KEY = ON = None
    KINDS = {}

    def test_off_by_default_renders_nothing(self):
        self.assertEqual(render(self.NAME, {}), [])

    def test_on_without_tag_fails_with_a_clear_message(self):
        values = ci_values(self.NAME, self.ON)
        values[self.KEY]["image"]["tag"] = ""
        with self.assertRaises(helm.HelmRenderError) as e:
            render(self.NAME, values)
        self.assertIn(f"{self.KEY}.image.tag is required", str(e.exception))

    def test_on_renders_exactly_the_documented_resources(self):
        self.assertEqual(kinds(render(self.NAME, ci_values(self.NAME, self.ON))), collections.Counter(self.KINDS))

    def test_pods_run_as_nobody_read_only_without_capabilities(self):
        spec = pod_spec(render(self.NAME, ci_values(self.NAME, self.ON)))
        self.assertEqual(spec["securityContext"]["runAsUser"], 65534)
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        self.assertFalse(spec["automountServiceAccountToken"])
        for c in spec["containers"]:
            sc = c["securityContext"]
            self.assertTrue(sc["readOnlyRootFilesystem"])
            self.assertFalse(sc["allowPrivilegeEscalation"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
            self.assertIn("livenessProbe", c)
            self.assertIn("readinessProbe", c)
            self.assertIn("limits", c["resources"])
            self.assertNotIn(":latest", c["image"])

    def test_every_ci_value_set_renders_schema_valid_manifests(self):
        for f in sorted(os.listdir(os.path.join(ROOT, self.NAME, "ci"))):
            validate_builtin(self, render(self.NAME, ci_values(self.NAME, f)))

    def test_lint_is_clean_for_every_ci_value_set(self):
        for f in sorted(os.listdir(os.path.join(ROOT, self.NAME, "ci"))):
            res = helm.lint(os.path.join(ROOT, self.NAME), ci_values(self.NAME, f))
            self.assertEqual(res["errors"], [], f)
            bad = [m for m in res["messages"] if m["severity"] > 1]
            self.assertEqual(bad, [], f)

    def test_mirror_prefix_replaces_the_registry(self):
        values = ci_values(self.NAME, self.ON)
        values["global"] = {"imageRegistry": "registry.example.org/"}
        (c,) = pod_spec(render(self.NAME, values))["containers"]
        self.assertTrue(c["image"].startswith("registry.example.org/openova-io/"), c["image"])
        self.assertTrue(c["image"].endswith(":0123abc"), c["image"])


class FlowServer(Common, unittest.TestCase):
    NAME, KEY, ON = "flow-server", "flowServer", "on.yaml"
    KINDS = {"ServiceAccount": 1, "Deployment": 1, "Service": 1, "NetworkPolicy": 1}

    def test_httproute_adds_one_route_and_requires_an_ingest_token(self):
        values = ci_values(self.NAME, "httproute.yaml")
        docs = render(self.NAME, values)
        self.assertEqual(kinds(docs)["HTTPRoute"], 1)
        (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
        self.assertEqual(route["spec"]["hostnames"], ["openova-flow.omantel.openova.io"])
        self.assertEqual(route["spec"]["parentRefs"][0]["name"], "cilium-gateway")
        validate_against_crd(self, route, os.path.join(ROOT, "tests", "crds", "gateway.networking.k8s.io_httproutes.yaml"))
        values["flowServer"]["auth"]["ingestTokensSecret"] = ""
        with self.assertRaises(helm.HelmRenderError) as e:
            render(self.NAME, values)
        self.assertIn("ingestTokensSecret is required", str(e.exception))
        values = ci_values(self.NAME, "httproute.yaml")
        values["flowServer"]["httproute"]["hostname"] = ""
        with self.assertRaises(helm.HelmRenderError) as e:
            render(self.NAME, values)
        self.assertIn("httproute.hostname is required", str(e.exception))

    def test_tokens_come_from_secrets_and_env_matches_the_binary(self):
        docs = render(self.NAME, ci_values(self.NAME, "httproute.yaml"))
        (c,) = pod_spec(docs)["containers"]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["FLOW_SERVER_INGEST_TOKENS"]["valueFrom"]["secretKeyRef"]["name"], "flow-server-ingest")
        self.assertEqual(env["FLOW_SERVER_READ_TOKENS"]["valueFrom"]["secretKeyRef"]["name"], "flow-server-read")
        self.assertEqual(env["FLOW_SERVER_LISTEN_ADDR"]["value"], "0.0.0.0:8080")

    def test_several_replicas_need_the_jetstream_backend(self):
        docs = render(self.NAME, ci_values(self.NAME, "jetstream.yaml"))
        (c,) = pod_spec(docs)["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertEqual(env["FLOW_SERVER_BACKEND"], "jetstream")
        self.assertEqual(env["FLOW_SERVER_NATS_URL"], "nats://nats.openova-system:4222")
        values = ci_values(self.NAME, "jetstream.yaml")
        values["flowServer"]["backend"] = "memory"
        with self.assertRaises(helm.HelmRenderError):
            render(self.NAME, values)
        values = ci_values(self.NAME, "jetstream.yaml")
        values["flowServer"]["nats"]["url"] = ""
        with self.assertRaises(helm.HelmRenderError):
            render(self.NAME, values)


class WitnessServer(Common, unittest.TestCase):
    NAME, KEY, ON = "witness-server", "witnessServer", "on.yaml"
    KINDS = {"ServiceAccount": 1, "StatefulSet": 1, "Service": 1, "NetworkPolicy": 1}

    def test_exactly_one_replica_with_persistent_state_and_tokens_from_a_secret(self):
        docs = render(self.NAME, ci_values(self.NAME, "on.yaml"))
        (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
        self.assertEqual(sts["spec"]["replicas"], 1)
        self.assertEqual(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "state")
        vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["tokens"]["secret"]["secretName"], "witness-tokens")
        values = ci_values(self.NAME, "on.yaml")
        values["witnessServer"]["tokensSecret"] = ""
        with self.assertRaises(helm.HelmRenderError) as e:
            render(self.NAME, values)
        self.assertIn("tokensSecret is required", str(e.exception))


KIT = os.path.join(os.path.dirname(ROOT), "bootstrap-kit")


def flux_substitute(text, env):
    """Flux postBuild.substitute for the forms the kit uses: ${VAR}, ${VAR:-default}, ${VAR:=default}."""
    import re

    def one(m):
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if name in env and env[name] != "":
            return env[name]
        return default if op else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-=])([^}]*))?\}", one, text)


class BootstrapKit(unittest.TestCase):
    def helm_release(self, slot_file, env):
        with open(os.path.join(KIT, slot_file)) as f:
            docs = list(yaml.safe_load_all(flux_substitute(f.read(), env)))
        (hr,) = [d for d in docs if d["kind"] == "HelmRelease"]
        return hr

    def test_kustomize_builds_the_kit(self):
        import subprocess

        out = subprocess.run(["kubectl", "kustomize", KIT], check=True, capture_output=True, text=True).stdout
        kinds_ = collections.Counter(d["kind"] for d in yaml.safe_load_all(out) if d)
        self.assertEqual(kinds_, collections.Counter({"HelmRepository": 1, "HelmRelease": 1}))

    def test_flow_server_slot_is_off_unless_enabled(self):
        hr = self.helm_release("56-bp-flow-server.yaml", {})
        self.assertEqual(hr["metadata"]["labels"]["catalyst.openova.io/slot"], "56")
        self.assertEqual([d["name"] for d in hr["spec"]["dependsOn"]], ["bp-cilium", "bp-cert-manager"])
        self.assertEqual(render("flow-server", hr["spec"]["values"]), [])
        hr = self.helm_release(
            "56-bp-flow-server.yaml",
            {"FLOW_SERVER_ENABLED": "true", "FLOW_SERVER_IMAGE_TAG": "0123abc", "FLOW_SERVER_HTTPROUTE_ENABLED": "true", "SOVEREIGN_FQDN": "omantel.openova.io"},
        )
        docs = render("flow-server", hr["spec"]["values"])
        self.assertEqual(kinds(docs)["HTTPRoute"], 1)
        self.assertEqual(len(docs), 5)

    def test_enabled_slot_without_an_image_tag_fails_at_render(self):
        hr = self.helm_release("56-bp-flow-server.yaml", {"FLOW_SERVER_ENABLED": "true"})
        with self.assertRaises(helm.HelmRenderError):
            render("flow-server", hr["spec"]["values"])

    def test_every_kit_document_is_valid_against_the_flux_crds(self):
        crds = {
            "HelmRelease": "helm.toolkit.fluxcd.io_helmreleases.yaml",
            "HelmRepository": "source.toolkit.fluxcd.io_helmrepositories.yaml",
        }
        for slot in sorted(f for f in os.listdir(KIT) if f[:2].isdigit()):
            with open(os.path.join(KIT, slot)) as f:
                for d in yaml.safe_load_all(flux_substitute(f.read(), {})):
                    validate_against_crd(self, d, os.path.join(ROOT, "tests", "crds", crds[d["kind"]]))

    def test_the_validators_reject_typos(self):
        import jsonschema
        import kubernetes_validate

        bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
               "spec": {"replica": 1, "selector": {}, "template": {}}}
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
        hr = self.helm_release("56-bp-flow-server.yaml", {})
        hr["spec"]["interval"] = 5
        with self.assertRaises(jsonschema.ValidationError):
            validate_against_crd(self, hr, os.path.join(ROOT, "tests", "crds", "helm.toolkit.fluxcd.io_helmreleases.yaml"))

    def test_slot_pins_match_the_chart_versions(self):
        for slot in sorted(f for f in os.listdir(KIT) if f[:2].isdigit()):
            hr = self.helm_release(slot, {})
            spec = hr["spec"]["chart"]["spec"]
            with open(os.path.join(ROOT, spec["chart"], "Chart.yaml")) as f:
                self.assertEqual(spec["version"], yaml.safe_load(f)["version"], slot)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"charts: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

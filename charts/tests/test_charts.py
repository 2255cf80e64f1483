"""Renders every chart with Helm's own engine (helm-python-sdk wraps Helm v4's Go SDK) and checks
what an operator relies on: off by default (0 resources), a clear render failure on a missing image
tag or missing required config, the exact set of resources when on, least-privilege pod settings
and RBAC grants, env names the binaries really read, and a clean `helm lint`; then the
bootstrap-kit slots (Flux CRD validity, substitution gates both ways, pins, kustomize build).
Run: python3 charts/tests/test_charts.py (scripts/test.sh does).
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


def env_of(container):
    return {e["name"]: e for e in container["env"]}


def rules_of(docs, service_account):
    """(role kind, role namespace or None, rule) for every rule bound to the ServiceAccount."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out = []
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if any(sub["kind"] == "ServiceAccount" and sub["name"] == service_account for sub in b["subjects"]):
            role = roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]
            ns = role["metadata"].get("namespace")
            # A binding grants a Role only in the Role's own namespace.
            assert b["metadata"].get("namespace") == ns, (b, role)
            out += [(role["kind"], ns, r) for r in role["rules"]]
    return out


def grants(rules):
    """{(apiGroup, resource, verb, resourceNames)} from rules_of(); wildcards fail the caller."""
    out = set()
    for _, _, r in rules:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v, tuple(r.get("resourceNames", ()))))
    return out


def assert_no_wildcards(testcase, docs):
    for d in docs:
        for r in d.get("rules", []) if d["kind"] in ("Role", "ClusterRole") else []:
            for field in ("apiGroups", "resources", "verbs"):
                testcase.assertNotIn("*", r[field], d["metadata"]["name"])


def rust_env_names(rel):
    """The env twins a crate's clap args declare (`env = "NAME"`), read from its source."""
    import re

    with open(os.path.join(os.path.dirname(ROOT), rel)) as f:
        return set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', f.read()))


class Common:
    """Checks every service chart must pass. Subclasses set NAME, KEY, ON (ci file), KINDS and,
    for controllers, NEEDS_API."""

    NAME = KEY = ON = None
    KINDS = {}
    # Pods that talk to the Kubernetes API mount their token; the others must not.
    NEEDS_API = False

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
        self.assertIs(spec["automountServiceAccountToken"], self.NEEDS_API)
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

    def test_state_is_created_on_a_new_volume_only_and_env_matches_the_binary(self):
        (c,) = pod_spec(render(self.NAME, ci_values(self.NAME, "on.yaml")))["containers"]
        env = env_of(c)
        # witness-server refuses a missing state file unless told to initialise; the chart
        # initialises on a new (empty) volume only, on every start, never with plain --init.
        self.assertEqual(env["WITNESS_INIT_IF_NEW_VOLUME"]["value"], "true")
        self.assertNotIn("WITNESS_INIT", env)
        self.assertEqual(env["WITNESS_STATE"]["value"], "/var/lib/witness/state.json")
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "state"]
        self.assertEqual(mount["mountPath"], "/var/lib/witness")
        self.assertLessEqual(set(env), rust_env_names("witness-worker/src/bin/witness-server.rs"))


class FlowAdapterFlux(Common, unittest.TestCase):
    NAME, KEY, ON = "flow-adapter-flux", "flowAdapter", "on.yaml"
    NEEDS_API = True
    # emit: SA, Role+RoleBinding (watch in flux-system), Role+RoleBinding (Lease), DaemonSet,
    # NetworkPolicy; recover: SA, Role+RoleBinding (flux-system), CronJob, NetworkPolicy.
    KINDS = {"ServiceAccount": 2, "Role": 3, "RoleBinding": 3, "DaemonSet": 1, "CronJob": 1, "NetworkPolicy": 2}

    def test_other_value_sets_render_exactly_their_resources(self):
        self.assertEqual(kinds(render(self.NAME, ci_values(self.NAME, "all-namespaces.yaml"))), collections.Counter(
            {"ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 2, "Role": 1, "RoleBinding": 1,
             "DaemonSet": 1, "CronJob": 1, "NetworkPolicy": 2}))
        self.assertEqual(kinds(render(self.NAME, ci_values(self.NAME, "emit-only.yaml"))), collections.Counter(
            {"ServiceAccount": 1, "Role": 2, "RoleBinding": 2, "DaemonSet": 1}))

    def test_required_config_fails_at_render_not_at_start(self):
        for path, message in [
            (("emit", "regionKey"), "flowAdapter.emit.regionKey is required"),
            (("emit", "flowId"), "flowAdapter.emit.flowId is required"),
            (("emit", "flowServer", "url"), "flowAdapter.emit.flowServer.url is required"),
        ]:
            values = ci_values(self.NAME, "on.yaml")
            node = values["flowAdapter"]
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = ""
            with self.assertRaises(helm.HelmRenderError, msg=message) as e:
                render(self.NAME, values)
            self.assertIn(message, str(e.exception))
        values = ci_values(self.NAME, "on.yaml")
        values["flowAdapter"]["emit"]["flowServer"]["url"] = "flow-server:8080"
        with self.assertRaises(helm.HelmRenderError) as e:
            render(self.NAME, values)
        self.assertIn("must be an http:// or https:// URL", str(e.exception))

    def test_emit_env_probes_and_lease_match_the_binary(self):
        docs = render(self.NAME, ci_values(self.NAME, "on.yaml"))
        spec = pod_spec(docs)
        (c,) = spec["containers"]
        self.assertEqual(c["args"], ["emit"])
        env = env_of(c)
        self.assertEqual(env["REGION_KEY"]["value"], "fsn1")
        self.assertEqual(env["FLOW_ID"]["value"], "omantel")
        self.assertEqual(env["FLOW_SERVER_URL"]["value"], "http://flow-server.catalyst-system.svc.cluster.local:8080")
        self.assertEqual(env["NAMESPACE_FILTER"]["value"], "flux-system")
        self.assertEqual(env["FLOW_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"], {"name": "flow-adapter-flux-token", "key": "token"})
        self.assertEqual(env["FLOW_ADAPTER_LEADER_ELECTION"]["value"], "true")
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace")
        # The binary's default health address is :8081; the chart binds the same port.
        self.assertEqual(env["HEALTH_LISTEN_ADDR"]["value"], "0.0.0.0:8081")
        self.assertEqual(c["ports"], [{"name": "health", "containerPort": 8081, "protocol": "TCP"}])
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "health"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "health"})
        # Every name the chart sets is one the binary reads (flow-adapter-flux/src/args.rs).
        (cron,) = [d for d in docs if d["kind"] == "CronJob"]
        (rc,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        known = rust_env_names("flow-adapter-flux/src/args.rs")
        self.assertLessEqual(set(env) | set(env_of(rc)), known)
        with open(os.path.join(os.path.dirname(ROOT), "flow-adapter-flux", "src", "http.rs")) as f:
            routes = f.read()
        for path in ("/healthz", "/readyz", "/metrics"):
            self.assertIn(f'"{path}"', routes)

    def test_recover_cronjob_is_hardened_runs_once_and_never_retries(self):
        docs = render(self.NAME, ci_values(self.NAME, "all-namespaces.yaml"))
        (cron,) = [d for d in docs if d["kind"] == "CronJob"]
        self.assertEqual(cron["spec"]["concurrencyPolicy"], "Forbid")
        job = cron["spec"]["jobTemplate"]["spec"]
        self.assertEqual(job["backoffLimit"], 0)
        spec = job["template"]["spec"]
        self.assertEqual(spec["restartPolicy"], "Never")
        self.assertEqual(spec["serviceAccountName"], "flow-adapter-flux-recover")
        self.assertEqual(spec["securityContext"]["runAsUser"], 65534)
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        (c,) = spec["containers"]
        self.assertEqual(c["args"], ["recover"])
        self.assertEqual(c["image"], "registry.omantel.openova.io/openova-io/openova-dr-flow/flow-adapter-flux:0123abc")
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"])
        self.assertIn("limits", c["resources"])
        env = {k: e["value"] for k, e in env_of(c).items()}
        self.assertEqual(env["STUCK_HR_RECOVERY_NAMESPACE"], "")
        self.assertEqual(env["STUCK_HR_RECOVERY_DRY_RUN"], "true")
        self.assertEqual(env["STUCK_HR_RECOVERY_THRESHOLD"], "5m")

    def test_rbac_is_least_privilege_and_only_recover_writes(self):
        for file in ("on.yaml", "all-namespaces.yaml"):
            docs = render(self.NAME, ci_values(self.NAME, file))
            assert_no_wildcards(self, docs)
            emit, recover = rules_of(docs, "flow-adapter-flux-emit"), rules_of(docs, "flow-adapter-flux-recover")
            read = {"get", "list", "watch"}
            self.assertEqual(grants(emit), {
                *(("helm.toolkit.fluxcd.io", "helmreleases", v, ()) for v in read),
                *(("source.toolkit.fluxcd.io", "helmcharts", v, ()) for v in read),
                ("coordination.k8s.io", "leases", "create", ()),
                ("coordination.k8s.io", "leases", "get", ("flow-adapter-flux",)),
                ("coordination.k8s.io", "leases", "update", ("flow-adapter-flux",)),
            }, file)
            self.assertEqual(grants(recover), {
                *(("helm.toolkit.fluxcd.io", "helmreleases", v, ()) for v in ("get", "list", "patch")),
                ("helm.toolkit.fluxcd.io", "helmreleases/status", "patch", ()),
            }, file)
            # Leases only in the release namespace (a Role without a namespace = the release's).
            for kind, ns, r in emit:
                if "leases" in r["resources"]:
                    self.assertEqual((kind, ns), ("Role", None))
            scope = {"on.yaml": ("Role", "flux-system"), "all-namespaces.yaml": ("ClusterRole", None)}[file]
            for kind, ns, r in emit + recover:
                if "leases" not in r["resources"]:
                    self.assertEqual((kind, ns), scope, file)
            for b in (d for d in docs if d["kind"].endswith("Binding")):
                for sub in b["subjects"]:
                    self.assertEqual(sub["namespace"], "catalyst-system")

    def test_network_policies_open_only_what_each_mode_needs(self):
        docs = render(self.NAME, ci_values(self.NAME, "on.yaml"))
        nps = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
        emit, recover = nps["flow-adapter-flux-emit"], nps["flow-adapter-flux-recover"]
        self.assertEqual(emit["ingress"], [{"ports": [{"port": "health", "protocol": "TCP"}]}])
        ports = {p["port"] for rule in emit["egress"] for p in rule["ports"]}
        self.assertEqual(ports, {53, 443, 6443, 8080})
        self.assertEqual(recover["policyTypes"], ["Ingress", "Egress"])
        self.assertNotIn("ingress", recover)
        self.assertEqual({p["port"] for rule in recover["egress"] for p in rule["ports"]}, {53, 443, 6443})
        self.assertEqual(recover["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "recover")


class ContinuumController(Common, unittest.TestCase):
    NAME, KEY, ON = "continuum-controller", "continuum", "on.yaml"
    NEEDS_API = True
    KINDS = {"ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1,
             "Deployment": 1, "Service": 1, "NetworkPolicy": 1}
    CRD = os.path.join(ROOT, "continuum-controller", "crds", "continuums.dr.openova.io.yaml")

    def test_other_value_sets_render_exactly_their_resources(self):
        self.assertEqual(kinds(render(self.NAME, ci_values(self.NAME, "namespaced.yaml"))), collections.Counter(
            {"ServiceAccount": 1, "Role": 2, "RoleBinding": 2, "Deployment": 1, "Service": 1, "NetworkPolicy": 1}))
        no_np = dict(self.KINDS)
        del no_np["NetworkPolicy"]
        self.assertEqual(kinds(render(self.NAME, ci_values(self.NAME, "no-networkpolicy.yaml"))), collections.Counter(no_np))

    def test_required_config_fails_at_render(self):
        for key, sub, message in [
            ("region", None, "continuum.region is required"),
            ("witness", "url", "continuum.witness.url is required"),
            ("witness", "tokenSecret", "continuum.witness.tokenSecret is required"),
        ]:
            values = ci_values(self.NAME, "on.yaml")
            if sub:
                values["continuum"][key][sub] = ""
            else:
                values["continuum"][key] = ""
            with self.assertRaises(helm.HelmRenderError, msg=message) as e:
                render(self.NAME, values)
            self.assertIn(message, str(e.exception))

    def test_peer_kubeconfig_and_postgres_conninfo_come_from_secrets_only_when_set(self):
        def container(values):
            dep = next(d for d in render(self.NAME, values) if d["kind"] == "Deployment")
            return dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0]
        pod, c = container(ci_values(self.NAME, "on.yaml"))
        names = {e["name"] for e in c["env"]}
        self.assertNotIn("CONTINUUM_PEER_KUBECONFIG", names)
        self.assertNotIn("volumes", pod)
        pod, c = container(ci_values(self.NAME, "peer-access.yaml"))
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["CONTINUUM_PEER_KUBECONFIG"]["value"], "/etc/continuum/peer/kubeconfig")
        self.assertEqual(env["CONTINUUM_PG_CONNINFO"]["valueFrom"]["secretKeyRef"], {"name": "pg-conn", "key": "conninfo"})
        self.assertEqual(pod["volumes"][0]["secret"]["secretName"], "peer-kc")
        self.assertEqual(c["volumeMounts"][0]["mountPath"], "/etc/continuum/peer")

    def test_secrets_named_by_continuums_are_readable_by_name_only(self):
        def secret_rules(values):
            role = next(d for d in render(self.NAME, values) if d["kind"] == "ClusterRole")
            return [r for r in role["rules"] if "secrets" in r["resources"]]
        self.assertEqual(secret_rules(ci_values(self.NAME, "on.yaml")), [])
        rules = secret_rules(ci_values(self.NAME, "peer-access.yaml"))
        self.assertEqual(len(rules), 1)
        self.assertEqual(rules[0]["resourceNames"], ["continuum-cf-token", "pdns-api"])
        self.assertEqual(rules[0]["verbs"], ["get"])

    def test_operator_env_probes_and_replicas(self):
        docs = render(self.NAME, ci_values(self.NAME, "on.yaml"))
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        self.assertEqual(dep["spec"]["replicas"], 2)
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        self.assertEqual(c["args"], ["operator"])
        env = env_of(c)
        self.assertEqual(set(env), {"CONTINUUM_REGION", "CONTINUUM_WITNESS_URL", "CONTINUUM_WITNESS_TOKEN",
                                    "CONTINUUM_NATS_URL", "CONTINUUM_LISTEN", "POD_NAME", "POD_NAMESPACE"})
        self.assertEqual(env["CONTINUUM_REGION"]["value"], "fsn1")
        self.assertEqual(env["CONTINUUM_LISTEN"]["value"], "0.0.0.0:8080")
        self.assertEqual(env["CONTINUUM_NATS_URL"]["value"], "nats://nats.openova-system:4222")
        self.assertEqual(env["CONTINUUM_WITNESS_TOKEN"]["valueFrom"]["secretKeyRef"], {"name": "continuum-witness", "key": "token"})
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace")
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
        (svc,) = [d for d in docs if d["kind"] == "Service"]
        self.assertEqual(svc["spec"]["ports"], [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
        docs = render(self.NAME, ci_values(self.NAME, "namespaced.yaml"))
        (c,) = pod_spec(docs)["containers"]
        env = env_of(c)
        self.assertEqual(env["CONTINUUM_NAMESPACE"]["value"], "omantel-apps")
        self.assertEqual(env["CONTINUUM_WITNESS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"], "witness-token")

    def test_rbac_is_exactly_the_documented_least_privilege(self):
        for file, scope in (("on.yaml", ("ClusterRole", None)), ("namespaced.yaml", ("Role", "omantel-apps"))):
            docs = render(self.NAME, ci_values(self.NAME, file))
            assert_no_wildcards(self, docs)
            rules = rules_of(docs, "continuum-controller")
            self.assertEqual(grants(rules), {
                *(("dr.openova.io", "continuums", v, ()) for v in ("get", "list", "watch", "patch")),
                ("dr.openova.io", "continuums/status", "patch", ()),
                ("dr.openova.io", "continuums/finalizers", "update", ()),
                *(("gateway.networking.k8s.io", "httproutes", v, ()) for v in ("get", "list", "watch", "patch")),
                *(("postgresql.cnpg.io", "clusters", v, ()) for v in ("get", "list", "watch", "patch")),
                ("", "events", "create", ()),
                ("", "events", "patch", ()),
                *(("coordination.k8s.io", "leases", v, ()) for v in ("get", "create", "update")),
                ("", "secrets", "get", ("continuum-witness",)),
            }, file)
            for kind, ns, r in rules:
                if set(r["resources"]) & {"leases", "secrets"}:
                    self.assertEqual((kind, ns), ("Role", None), file)  # the release namespace
                else:
                    self.assertEqual((kind, ns), scope, file)

    def test_network_policy_limits_scrapes_and_egress(self):
        docs = render(self.NAME, ci_values(self.NAME, "on.yaml"))
        (np,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
        (ing,) = np["spec"]["ingress"]
        self.assertEqual(ing["from"], [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
        self.assertEqual({p["port"] for r in np["spec"]["egress"] for p in r["ports"]}, {53, 443, 6443, 5432, 4222})

    def test_the_chart_ships_the_generated_crd_and_renders_no_copy(self):
        crds = chart(self.NAME).crds
        self.assertEqual([c["name"] for c in crds], ["crds/continuums.dr.openova.io.yaml"])
        with open(self.CRD) as f:
            text = f.read()
        self.assertTrue(text.startswith("# Generated by `cargo run -p continuum-controller --bin crdgen`"))
        for d in render(self.NAME, ci_values(self.NAME, "on.yaml")):
            self.assertNotEqual(d["kind"], "CustomResourceDefinition")

    def test_the_crd_is_a_valid_crd_and_accepts_the_valid_samples_only(self):
        import jsonschema
        import kubernetes_validate

        with open(self.CRD) as f:
            crd = yaml.safe_load(f)
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
        self.assertEqual(crd["metadata"]["name"], "continuums.dr.openova.io")
        samples = os.path.join(os.path.dirname(os.path.dirname(ROOT)), "shared", "fixtures", "samples")
        if not os.path.isdir(samples):
            self.skipTest("../shared/fixtures/samples not present")
        for name, valid in (("continuum-sample-valid.yaml", True), ("cont-omantel.yaml", True),
                            ("continuum-sample-invalid.yaml", False)):
            with open(os.path.join(samples, name)) as f:
                for d in (d for d in yaml.safe_load_all(f) if d):
                    if valid:
                        validate_against_crd(self, d, self.CRD)
                    else:
                        with self.assertRaises(jsonschema.ValidationError, msg=d["metadata"]["name"]):
                            validate_against_crd(self, d, self.CRD)


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
        self.assertEqual(kinds_, collections.Counter({"HelmRepository": 3, "HelmRelease": 3}))

    def test_kustomization_lists_every_slot_on_disk_in_order(self):
        with open(os.path.join(KIT, "kustomization.yaml")) as f:
            listed = yaml.safe_load(f)["resources"]
        on_disk = sorted(f for f in os.listdir(KIT) if f[:2].isdigit())
        self.assertEqual(listed, on_disk)
        self.assertEqual(on_disk, ["56-bp-flow-server.yaml", "57-bp-flow-adapter-flux.yaml", "62-bp-continuum.yaml"])

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

    EMITTER_ON = {"FLOW_ADAPTER_ENABLED": "true", "FLOW_ADAPTER_IMAGE_TAG": "0123abc",
                  "SOVEREIGN_REGION_KEY": "fsn1", "SOVEREIGN_DEPLOYMENT_ID": "omantel"}
    CONTINUUM_ON = {"CONTINUUM_ENABLED": "true", "CONTINUUM_IMAGE_TAG": "0123abc", "SOVEREIGN_REGION_KEY": "fsn1",
                    "CONTINUUM_WITNESS_URL": "https://witness.omantel.openova.io"}

    def test_flow_emitter_slot_is_off_unless_enabled(self):
        hr = self.helm_release("57-bp-flow-adapter-flux.yaml", {})
        self.assertEqual(hr["metadata"]["labels"]["catalyst.openova.io/slot"], "57")
        self.assertEqual([d["name"] for d in hr["spec"]["dependsOn"]], ["bp-flux"])
        self.assertIs(hr["spec"]["values"]["flowAdapter"]["enabled"], False)
        self.assertEqual(render("flow-adapter-flux", hr["spec"]["values"]), [])
        hr = self.helm_release("57-bp-flow-adapter-flux.yaml", self.EMITTER_ON)
        docs = render("flow-adapter-flux", hr["spec"]["values"])
        self.assertEqual(kinds(docs), collections.Counter(FlowAdapterFlux.KINDS))
        validate_builtin(self, docs)
        (c,) = pod_spec(docs)["containers"]
        env = env_of(c)
        # Same cluster by default: flow-server's Service on its container port.
        self.assertEqual(env["FLOW_SERVER_URL"]["value"], "http://flow-server.catalyst-system.svc.cluster.local:8080")
        self.assertEqual(env["FLOW_ID"]["value"], "omantel")
        self.assertEqual(env["FLOW_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], "flow-adapter-flux-token")
        hr = self.helm_release("57-bp-flow-adapter-flux.yaml", {
            **self.EMITTER_ON, "FLOW_SERVER_URL": "https://openova-flow.omantel.openova.io", "FLOW_ADAPTER_RECOVER_ENABLED": "false"})
        docs = render("flow-adapter-flux", hr["spec"]["values"])
        self.assertNotIn("CronJob", kinds(docs))
        (c,) = pod_spec(docs)["containers"]
        self.assertEqual(env_of(c)["FLOW_SERVER_URL"]["value"], "https://openova-flow.omantel.openova.io")

    def test_continuum_slot_is_off_unless_enabled_and_does_not_wait_for_cnpg(self):
        hr = self.helm_release("62-bp-continuum.yaml", {})
        self.assertEqual(hr["metadata"]["labels"]["catalyst.openova.io/slot"], "62")
        deps = [d["name"] for d in hr["spec"]["dependsOn"]]
        self.assertEqual(deps, ["bp-catalyst-platform", "bp-nats-jetstream", "bp-powerdns"])
        self.assertFalse([d for d in deps if "cnpg" in d])
        self.assertEqual(hr["spec"]["install"]["crds"], "CreateReplace")
        self.assertIs(hr["spec"]["values"]["continuum"]["enabled"], False)
        self.assertEqual(render("continuum-controller", hr["spec"]["values"]), [])
        hr = self.helm_release("62-bp-continuum.yaml", self.CONTINUUM_ON)
        docs = render("continuum-controller", hr["spec"]["values"])
        self.assertEqual(kinds(docs), collections.Counter(ContinuumController.KINDS))
        validate_builtin(self, docs)
        (c,) = pod_spec(docs)["containers"]
        env = env_of(c)
        self.assertEqual(env["CONTINUUM_REGION"]["value"], "fsn1")
        self.assertEqual(env["CONTINUUM_WITNESS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], "continuum-witness")

    def test_enabled_slot_without_an_image_tag_fails_at_render(self):
        hr = self.helm_release("56-bp-flow-server.yaml", {"FLOW_SERVER_ENABLED": "true"})
        with self.assertRaises(helm.HelmRenderError):
            render("flow-server", hr["spec"]["values"])
        for slot, chart_, on, key in (("57-bp-flow-adapter-flux.yaml", "flow-adapter-flux", self.EMITTER_ON, "flowAdapter"),
                                      ("62-bp-continuum.yaml", "continuum-controller", self.CONTINUUM_ON, "continuum")):
            env = {k: v for k, v in on.items() if not k.endswith("_IMAGE_TAG")}
            with self.assertRaises(helm.HelmRenderError) as e:
                render(chart_, self.helm_release(slot, env)["spec"]["values"])
            self.assertIn(f"{key}.image.tag is required", str(e.exception))

    def test_enabled_slot_without_the_sovereign_substitutions_fails_at_render(self):
        env = {k: v for k, v in self.EMITTER_ON.items() if k != "SOVEREIGN_REGION_KEY"}
        with self.assertRaises(helm.HelmRenderError) as e:
            render("flow-adapter-flux", self.helm_release("57-bp-flow-adapter-flux.yaml", env)["spec"]["values"])
        self.assertIn("regionKey is required", str(e.exception))
        env = {k: v for k, v in self.CONTINUUM_ON.items() if k != "CONTINUUM_WITNESS_URL"}
        with self.assertRaises(helm.HelmRenderError) as e:
            render("continuum-controller", self.helm_release("62-bp-continuum.yaml", env)["spec"]["values"])
        self.assertIn("continuum.witness.url is required", str(e.exception))

    def test_every_kit_document_is_valid_against_the_flux_crds(self):
        crds = {
            "HelmRelease": "helm.toolkit.fluxcd.io_helmreleases.yaml",
            "HelmRepository": "source.toolkit.fluxcd.io_helmrepositories.yaml",
        }
        on = {**self.EMITTER_ON, **self.CONTINUUM_ON, "FLOW_SERVER_ENABLED": "true", "FLOW_SERVER_IMAGE_TAG": "0123abc"}
        for slot in sorted(f for f in os.listdir(KIT) if f[:2].isdigit()):
            for env in ({}, on):
                with open(os.path.join(KIT, slot)) as f:
                    for d in yaml.safe_load_all(flux_substitute(f.read(), env)):
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

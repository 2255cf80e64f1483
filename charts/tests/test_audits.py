"""The deploy audits pass on the tree and fail on deliberately broken copies of it; the chart bump
keeps them passing; the image matrix picks exactly the changed services.
Run: python3 charts/tests/test_audits.py (scripts/test.sh does)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUDIT = os.path.join(REPO, "scripts", "audit.py")


def run(audit, root, **env):
    p = subprocess.run([sys.executable, AUDIT, audit, "--root", root], capture_output=True, text=True,
                       env={**os.environ, **env})
    return p.returncode, p.stdout


class Audits(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        for d in ("charts", "bootstrap-kit"):
            shutil.copytree(os.path.join(REPO, d), os.path.join(self.tmp, d))

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def edit(self, rel, old, new):
        path = os.path.join(self.tmp, rel)
        with open(path) as f:
            text = f.read()
        self.assertIn(old, text, rel)
        with open(path, "w") as f:
            f.write(text.replace(old, new))

    def test_the_tree_passes_every_audit(self):
        code, out = run("all", REPO)
        self.assertEqual(code, 0, out)
        self.assertEqual(out.count("PASS"), 5, out)

    def drill_tree(self):
        shutil.copy(os.path.join(REPO, "README.md"), self.tmp)
        shutil.copytree(os.path.join(REPO, "continuum-controller", "drills"),
                        os.path.join(self.tmp, "continuum-controller", "drills"))

    def test_a_hand_edited_campaign_figure_in_the_readme_fails(self):
        self.drill_tree()
        code, out = run("drill-readme", self.tmp)
        self.assertEqual(code, 0, out)
        with open(os.path.join(self.tmp, "README.md")) as f:
            text = f.read()
        begin = text.index("<!-- campaign-table:begin -->")
        row = text.index("| `continuum-controller/drills/campaign-", begin)
        # Claim one more run than the stored output holds.
        line = text[row:text.index("\n", row)]
        cells = line.split(" | ")
        cells[3] = str(int(cells[3]) + 1)
        self.edit("README.md", line, " | ".join(cells))
        code, out = run("drill-readme", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("differs from the stored campaign outputs", out)

    def test_a_new_stored_campaign_changes_the_table(self):
        self.drill_tree()
        src = os.path.join(self.tmp, "continuum-controller", "drills")
        stored = sorted(f for f in os.listdir(src) if f.startswith("campaign-"))[0]
        shutil.copy(os.path.join(src, stored), os.path.join(src, "campaign-zz-copy.txt"))
        code, out = run("drill-readme", self.tmp)
        self.assertEqual(code, 1, out)

    def test_dependency_drift_is_exit_1(self):
        self.edit("bootstrap-kit/56-bp-flow-server.yaml", "    - name: bp-cert-manager\n", "    - name: bp-cnpg\n")
        code, out = run("deps", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("missing edges", out)
        self.assertIn("extra edges", out)

    def test_undeclared_release_is_drift(self):
        self.edit("bootstrap-kit/56-bp-flow-server.yaml", "  name: bp-flow-server\n  namespace: flux-system\n  labels", "  name: bp-flow-server2\n  namespace: flux-system\n  labels")
        code, out = run("deps", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("not declared", out)

    def test_a_cycle_is_exit_2(self):
        self.edit("bootstrap-kit/expected-bootstrap-deps.yaml",
                  "{slot: 57, name: bp-flow-emitter, depends_on: [bp-flux]",
                  "{slot: 57, name: bp-flow-emitter, depends_on: [bp-continuum]")
        self.edit("bootstrap-kit/expected-bootstrap-deps.yaml",
                  "depends_on: [bp-catalyst-platform, bp-nats-jetstream, bp-powerdns]",
                  "depends_on: [bp-flow-emitter]")
        # The slots agree with the expected file, so drift passes and the cycle is what fails.
        self.edit("bootstrap-kit/57-bp-flow-adapter-flux.yaml", "    - name: bp-flux\n", "    - name: bp-continuum\n")
        self.edit("bootstrap-kit/62-bp-continuum.yaml",
                  "    - name: bp-catalyst-platform\n    - name: bp-nats-jetstream\n    - name: bp-powerdns\n",
                  "    - name: bp-flow-emitter\n")
        code, out = run("deps", self.tmp)
        self.assertEqual(code, 2, out)
        self.assertIn("cycle", out)

    def test_pin_drift_fails(self):
        self.edit("charts/flow-server/Chart.yaml", "version: 0.1.0", "version: 0.1.1")
        code, out = run("pins", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("pins flow-server 0.1.0 but Chart.yaml is 0.1.1", out)

    def test_blueprint_out_of_lockstep_fails(self):
        self.edit("charts/witness-server/blueprint.yaml", "version: 0.1.0", "version: 0.0.9")
        code, out = run("blueprint", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("witness-server", out)

    def test_every_slot_on_disk_is_declared_and_nothing_is_deferred(self):
        code, out = run("deps", REPO)
        self.assertEqual(code, 0, out)
        self.assertIn("3 slots match", out)
        self.assertNotIn("deferred", out)

    def test_continuum_pin_drift_fails(self):
        self.edit("charts/continuum-controller/Chart.yaml", "version: 0.1.0", "version: 0.2.0")
        code, out = run("pins", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("pins continuum-controller 0.1.0 but Chart.yaml is 0.2.0", out)

    def test_the_emitter_depending_on_cnpg_is_drift(self):
        self.edit("bootstrap-kit/57-bp-flow-adapter-flux.yaml", "    - name: bp-flux\n", "    - name: bp-flux\n    - name: bp-cnpg-pair\n")
        code, out = run("deps", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("bp-flow-emitter: extra edges", out)

    def test_a_hand_edited_crd_is_drift(self):
        self.edit("charts/continuum-controller/crds/continuums.dr.openova.io.yaml", "plural: continuums", "plural: continuumz")
        code, out = run("crd", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("audit crd: FAIL", out)
        self.assertIn("out of date", out)

    def test_a_hand_copied_crd_without_the_generated_header_fails(self):
        self.edit("charts/continuum-controller/crds/continuums.dr.openova.io.yaml",
                  "# Generated by `cargo run -p continuum-controller --bin crdgen`; do not edit.\n", "")
        code, out = run("crd", self.tmp)
        self.assertEqual(code, 1, out)
        self.assertIn("not crdgen output", out)

    def test_a_missing_crd_or_crdgen_fails_clearly(self):
        code, out = run("crd", self.tmp, CRDGEN=os.path.join(self.tmp, "no-crdgen"))
        self.assertEqual(code, 3, out)
        self.assertIn("cargo build -p continuum-controller --bin crdgen", out)
        os.remove(os.path.join(self.tmp, "charts/continuum-controller/crds/continuums.dr.openova.io.yaml"))
        code, out = run("crd", self.tmp)
        self.assertEqual(code, 3, out)
        self.assertIn("cannot read", out)
        code, out = run("all", self.tmp)
        self.assertNotEqual(code, 0, out)

    def test_a_chart_bump_keeps_pin_and_blueprint_in_lockstep(self):
        os.makedirs(os.path.join(self.tmp, "scripts"))
        shutil.copy(os.path.join(REPO, "scripts", "bump-chart.sh"), os.path.join(self.tmp, "scripts"))
        for chart in ("flow-adapter-flux", "continuum-controller"):
            p = subprocess.run(["bash", os.path.join(self.tmp, "scripts", "bump-chart.sh"),
                                os.path.join(self.tmp, "charts", chart), "0123456789ab"], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("-> 0.1.1", p.stdout)
        for audit in ("pins", "blueprint"):
            code, out = run(audit, self.tmp)
            self.assertEqual(code, 0, out)
        with open(os.path.join(self.tmp, "bootstrap-kit", "62-bp-continuum.yaml")) as f:
            self.assertIn("      version: 0.1.1\n", f.read())


class ImagesMatrix(unittest.TestCase):
    """scripts/images-matrix.py: a push rebuilds exactly the images whose sources changed."""

    def services(self, *changed):
        import json

        p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "images-matrix.py"), "--changed", *changed],
                           capture_output=True, text=True, check=True)
        self.assertTrue(p.stdout.startswith("matrix="), p.stdout)
        return sorted(s["service"] for s in json.loads(p.stdout[len("matrix="):]))

    def test_each_crate_rebuilds_its_image_and_the_images_linking_it(self):
        self.assertEqual(self.services("flow-adapter-flux/src/main.rs"), ["flow-adapter-flux"])
        self.assertEqual(self.services("continuum-controller/src/lib.rs"), ["continuum-controller"])
        self.assertEqual(self.services("flow-server/src/lib.rs"), ["flow-adapter-flux", "flow-server"])
        self.assertEqual(self.services("witness-worker/src/lib.rs"), ["continuum-controller", "witness-server"])
        self.assertEqual(self.services("pdm-client/src/lib.rs"), ["continuum-controller"])
        self.assertEqual(len(self.services("contract/src/lib.rs")), 4)
        self.assertEqual(len(self.services("Cargo.lock")), 4)
        self.assertEqual(self.services("README.md", "charts/flow-server/values.yaml"), [])

    def test_every_service_has_its_containerfile_and_chart(self):
        import json

        p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "images-matrix.py"), "--all"],
                           capture_output=True, text=True, check=True)
        matrix = json.loads(p.stdout[len("matrix="):])
        self.assertEqual(len(matrix), 4)
        for s in matrix:
            self.assertTrue(os.path.isfile(os.path.join(REPO, s["containerfile"])), s)
            self.assertTrue(os.path.isfile(os.path.join(REPO, s["chart"], "Chart.yaml")), s)
            self.assertTrue(os.path.isfile(os.path.join(REPO, s["crate"], "Cargo.toml")), s)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"audits: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

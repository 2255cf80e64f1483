"""The deploy audits pass on the tree and fail on deliberately broken copies of it.
Run: python3 charts/tests/test_audits.py (scripts/test.sh does)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUDIT = os.path.join(REPO, "scripts", "audit.py")


def run(audit, root):
    p = subprocess.run([sys.executable, AUDIT, audit, "--root", root], capture_output=True, text=True)
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
        self.assertEqual(out.count("PASS"), 3, out)

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


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"audits: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

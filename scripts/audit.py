#!/usr/bin/env python3
"""Deploy audits; each prints one PASS/FAIL line and exits non-zero on failure.

  audit.py deps       bootstrap-kit HelmRelease dependsOn vs expected-bootstrap-deps.yaml
                      (drift = exit 1, cycle = exit 2, parse error = exit 3)
  audit.py pins       every slot's chart version == charts/<chart>/Chart.yaml version
  audit.py blueprint  charts/<x>/Chart.yaml version == charts/<x>/blueprint.yaml spec.version
  audit.py crd        charts/continuum-controller/crds/ == what `crdgen` generates from the Rust
                      types (drift = exit 1; crdgen not built or unreadable file = exit 3). Uses
                      $CRDGEN, else $CARGO_TARGET_DIR/debug/crdgen (default ~/.cache/openova-target);
                      build it with `cargo build -p continuum-controller --bin crdgen`.
  audit.py all        all of the above

--root DIR points at another tree (the tests run the audits on deliberately broken copies).
"""

import argparse
import os
import subprocess
import sys

import yaml


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def helm_releases(kit):
    out = {}
    for name in sorted(os.listdir(kit)):
        if not name.endswith(".yaml") or name in ("kustomization.yaml", "expected-bootstrap-deps.yaml"):
            continue
        for d in load_all(os.path.join(kit, name)):
            if d.get("kind") != "HelmRelease":
                continue
            hr = d["metadata"]["name"]
            if hr in out:
                raise ValueError(f"duplicate HelmRelease {hr} in {name}")
            out[hr] = (name, d)
    return out


def audit_deps(root):
    kit = os.path.join(root, "bootstrap-kit")
    try:
        with open(os.path.join(kit, "expected-bootstrap-deps.yaml")) as f:
            expected = yaml.safe_load(f)
        hrs = helm_releases(kit)
    except (OSError, ValueError, yaml.YAMLError, KeyError) as e:
        return 3, f"cannot read the kit: {e}"
    declared = {s["name"]: set(s.get("depends_on") or []) for s in expected["slots"]}
    external = set(expected.get("external") or [])
    problems = []
    for hr, (file, d) in hrs.items():
        if hr not in declared:
            problems.append(f"{hr} ({file}) is not declared in expected-bootstrap-deps.yaml")
            continue
        have = {x["name"] for x in d["spec"].get("dependsOn") or []}
        missing, extra = declared[hr] - have, have - declared[hr]
        if missing:
            problems.append(f"{hr}: missing edges (declared, not in the HelmRelease): {sorted(missing)}")
        if extra:
            problems.append(f"{hr}: extra edges (in the HelmRelease, not declared): {sorted(extra)}")
    if problems:
        return 1, "; ".join(problems)
    # Kahn over the expected graph (external releases are roots).
    nodes = set(declared) | external
    for deps in declared.values():
        unknown = deps - nodes
        if unknown:
            return 1, f"dependency on undeclared releases {sorted(unknown)}"
    indeg = {n: len(declared.get(n, ())) for n in nodes}
    ready = [n for n, k in indeg.items() if k == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for m, deps in declared.items():
            if n in deps:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
    if seen < len(nodes):
        stuck = sorted(n for n, k in indeg.items() if k > 0)
        return 2, f"dependency cycle among {stuck}"
    deferred = sorted(set(declared) - set(hrs))
    return 0, f"{len(hrs)} slots match, no cycle" + (f"; deferred (not on disk yet): {deferred}" if deferred else "")


def audit_pins(root):
    kit = os.path.join(root, "bootstrap-kit")
    problems, n = [], 0
    for hr, (file, d) in helm_releases(kit).items():
        spec = d["spec"]["chart"]["spec"]
        chart_yaml = os.path.join(root, "charts", spec["chart"], "Chart.yaml")
        if not os.path.exists(chart_yaml):
            problems.append(f"{file}: chart {spec['chart']} has no charts/{spec['chart']}")
            continue
        with open(chart_yaml) as f:
            version = yaml.safe_load(f)["version"]
        n += 1
        if str(spec["version"]) != str(version):
            problems.append(f"{file}: pins {spec['chart']} {spec['version']} but Chart.yaml is {version}")
    return (1, "; ".join(problems)) if problems else (0, f"{n} pins equal their chart versions")


def audit_blueprint(root):
    charts = os.path.join(root, "charts")
    problems, n = [], 0
    for name in sorted(os.listdir(charts)):
        chart_yaml = os.path.join(charts, name, "Chart.yaml")
        if not os.path.exists(chart_yaml):
            continue
        bp = os.path.join(charts, name, "blueprint.yaml")
        if not os.path.exists(bp):
            problems.append(f"{name}: no blueprint.yaml")
            continue
        with open(chart_yaml) as f:
            cv = yaml.safe_load(f)["version"]
        with open(bp) as f:
            bv = yaml.safe_load(f)["spec"]["version"]
        n += 1
        if str(cv) != str(bv):
            problems.append(f"{name}: Chart.yaml {cv} != blueprint.yaml spec.version {bv}")
    return (1, "; ".join(problems)) if problems else (0, f"{n} blueprints in lockstep with their charts")


CRD_FILE = os.path.join("charts", "continuum-controller", "crds", "continuums.dr.openova.io.yaml")
CRD_HEADER = "# Generated by `cargo run -p continuum-controller --bin crdgen`; do not edit."


def crdgen_path():
    if os.environ.get("CRDGEN"):
        return os.environ["CRDGEN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "openova-target")
    return os.path.join(target, "debug", "crdgen")


def audit_crd(root):
    crd = os.path.join(root, CRD_FILE)
    try:
        with open(crd) as f:
            first = f.readline().rstrip("\n")
    except OSError as e:
        return 3, f"cannot read {CRD_FILE}: {e}"
    if first != CRD_HEADER:
        return 1, f"{CRD_FILE} is not crdgen output (first line is not the generated header); regenerate it"
    crdgen = crdgen_path()
    if not os.access(crdgen, os.X_OK):
        return 3, f"crdgen is not built at {crdgen}: run `cargo build -p continuum-controller --bin crdgen` first"
    p = subprocess.run([crdgen, "--check", crd], capture_output=True, text=True)
    if p.returncode == 0:
        return 0, f"{CRD_FILE} equals crdgen's output"
    detail = (p.stderr.strip().splitlines() or [f"crdgen exited {p.returncode}"])[-1]
    return (1 if p.returncode == 1 else 3), detail


AUDITS = {"deps": audit_deps, "pins": audit_pins, "blueprint": audit_blueprint, "crd": audit_crd}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audit", choices=[*AUDITS, "all"])
    p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    a = p.parse_args(argv)
    worst = 0
    for name in AUDITS if a.audit == "all" else [a.audit]:
        code, msg = AUDITS[name](a.root)
        print(f"audit {name}: {'PASS' if code == 0 else 'FAIL'}: {msg}")
        worst = worst or code
    return worst


if __name__ == "__main__":
    sys.exit(main())

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
  audit.py drill-readme
                      the README's campaign table (between `<!-- campaign-table:begin -->` and
                      `<!-- campaign-table:end -->`) == what the stored campaign outputs
                      continuum-controller/drills/campaign-*.txt give (drift = exit 1); with
                      --write, regenerate the table instead.
  audit.py all        all of the above

--root DIR points at another tree (the tests run the audits on deliberately broken copies).
"""

import argparse
import glob
import os
import re
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


DRILLS = os.path.join("continuum-controller", "drills")
TABLE_BEGIN = "<!-- campaign-table:begin -->"
TABLE_END = "<!-- campaign-table:end -->"


def parse_campaign(text):
    """The figures of one stored `continuum-lab campaign` output."""
    head = re.search(r"^campaign: (\d+) runs, seed (\d+), TTL (\d+) s, renew (\d+) s, durability (\w+)"
                     r"(?:, network ([^,]+(?:\([^)]*\))?))?", text, re.M)
    summary = re.search(r"^campaign: runs=(\d+) faults=(\d+) lost_tx=(\d+) split_brain=(\d+) "
                        r"failed_runs=(\d+) rto_p50_ms=(\d+) rto_p99_ms=(\d+)", text, re.M)
    if not head or not summary:
        return None
    injected = {}
    for m in re.finditer(r"^campaign run \d+/\d+ seed=\d+ faults=(\S+) (?:lost_tx=|FAILED)", text, re.M):
        for kv in m.group(1).split(","):
            k, _, n = kv.partition(":")
            injected[k] = injected.get(k, 0) + int(n or 0)
    rto = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
           for m in re.finditer(r"^campaign rto\[([^\]]+)\]: n=(\d+) p50_ms=(\d+) p99_ms=(\d+)", text, re.M)}
    return {
        "seed": head.group(2), "ttl": head.group(3), "renew": head.group(4), "durability": head.group(5),
        "network": (head.group(6) or "loopback (TCP proxy)").strip(),
        "runs": summary.group(1), "faults": summary.group(2), "lost": summary.group(3),
        "split": summary.group(4), "failed": summary.group(5),
        "p50": int(summary.group(6)), "p99": int(summary.group(7)),
        "injected": injected, "rto": rto,
    }


def secs(ms):
    return f"{ms / 1000:.1f} s"


# The fault kinds the issue counts, in the totals table's column order.
TOTAL_KINDS = ["controller-kill", "pause", "clock", "double-failure", "isolate", "one-way",
               "region-split", "flap", "partition", "witness-outage", "switchover-crashes"]


def totals_table(groups):
    """One row per lease setting and network: every stored campaign of it summed."""
    lines = ["| lease | network | runs | faults | lost_tx | split_brain | failed runs | "
             + " | ".join(TOTAL_KINDS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(TOTAL_KINDS)]
    for (ttl, renew, network), cs in sorted(groups.items(), key=lambda kv: (int(kv[0][0]), kv[0][2])):
        tot = lambda k: sum(int(c[k]) for c in cs)
        inj = lambda k: sum(c["injected"].get(k, 0) for c in cs)
        lines.append(f"| TTL {ttl} s / renew {renew} s | {network} | {tot('runs')} | {tot('faults')} | "
                     f"{tot('lost')} | {tot('split')} | {tot('failed')} | "
                     + " | ".join(str(inj(k)) for k in TOTAL_KINDS) + " |")
    return lines


def campaign_table(root):
    rows, kinds, groups = [], [], {}
    for path in sorted(glob.glob(os.path.join(root, DRILLS, "campaign-*.txt"))):
        name = os.path.relpath(path, root)
        with open(path) as f:
            c = parse_campaign(f.read())
        if c is None:
            continue
        groups.setdefault((c["ttl"], c["renew"], c["network"]), []).append(c)
        rows.append(f"| `{name}` | {c['network']} | TTL {c['ttl']} s / renew {c['renew']} s, {c['durability']} | "
                    f"{c['runs']} | {c['faults']} | {c['lost']} | {c['split']} | {c['failed']} | "
                    f"{secs(c['p50'])} | {secs(c['p99'])} |")
        for k in sorted(set(c["injected"]) | set(c["rto"])):
            n, p50, p99 = c["rto"].get(k, (0, 0, 0))
            took = f"{n} | {secs(p50)} | {secs(p99)}" if n else "0 | – | –"
            kinds.append(f"| `{name}` | {k} | {c['injected'].get(k, 0)} | {took} |")
    return "\n".join([
        TABLE_BEGIN,
        "<!-- generated by `python3 scripts/audit.py drill-readme --write` from the stored campaign outputs; "
        "`audit.py drill-readme` (in CI) fails when this table and those files disagree -->",
        "| stored run | network | lease | runs | faults | lost_tx | split_brain | failed runs | RTO p50 | RTO p99 |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Totals per lease setting (every stored campaign of it; faults injected per kind):",
        "",
        *totals_table(groups),
        "",
        "Per fault kind (faults injected; takeovers = faults after which the other region took writes):",
        "",
        "| stored run | fault | injected | takeovers | RTO p50 | RTO p99 |",
        "|---|---|---|---|---|---|",
        *kinds,
        TABLE_END,
    ])


def audit_drill_readme(root, write=False):
    readme = os.path.join(root, "README.md")
    with open(readme) as f:
        text = f.read()
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        return 1, f"README.md has no {TABLE_BEGIN} … {TABLE_END} block"
    want = campaign_table(root)
    have = text[start:end + len(TABLE_END)]
    if have == want:
        return 0, "README's campaign table equals the stored campaign outputs"
    if write:
        with open(readme, "w") as f:
            f.write(text[:start] + want + text[end + len(TABLE_END):])
        return 0, "README's campaign table regenerated"
    return 1, "README's campaign table differs from the stored campaign outputs: run `python3 scripts/audit.py drill-readme --write`"


AUDITS = {"deps": audit_deps, "pins": audit_pins, "blueprint": audit_blueprint, "crd": audit_crd,
          "drill-readme": audit_drill_readme}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audit", choices=[*AUDITS, "all"])
    p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--write", action="store_true", help="drill-readme: regenerate the table")
    a = p.parse_args(argv)
    worst = 0
    for name in AUDITS if a.audit == "all" else [a.audit]:
        if name == "drill-readme":
            code, msg = audit_drill_readme(a.root, a.write)
        else:
            code, msg = AUDITS[name](a.root)
        print(f"audit {name}: {'PASS' if code == 0 else 'FAIL'}: {msg}")
        worst = worst or code
    return worst


if __name__ == "__main__":
    sys.exit(main())

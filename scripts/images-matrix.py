#!/usr/bin/env python3
"""Which service images a push must rebuild (.github/workflows/images.yml's matrix).

  images-matrix.py --before SHA --after SHA     git diff between the two commits
  images-matrix.py --changed PATH [PATH ...]    explicit list (tests)
  images-matrix.py --all                        every service (workflow_dispatch, new branch)

Prints `matrix=<JSON list>` for $GITHUB_OUTPUT. A service is rebuilt when its crate or a crate it
links changes, or when a workspace-wide file does. Only rebuilt services get a new chart version.
"""

import argparse
import json
import subprocess
import sys

# service: image name; crate: cargo package; chart: chart dir bumped with the new tag;
# paths: directories whose changes change the image (the crate and the crates it links).
SERVICES = [
    {"service": "flow-server", "crate": "flow-server", "containerfile": "flow-server/Containerfile",
     "chart": "charts/flow-server", "paths": ["flow-server/", "contract/"]},
    {"service": "witness-server", "crate": "witness-worker", "containerfile": "witness-worker/Containerfile",
     "chart": "charts/witness-server", "paths": ["witness-worker/", "contract/"]},
    {"service": "flow-adapter-flux", "crate": "flow-adapter-flux", "containerfile": "flow-adapter-flux/Containerfile",
     "chart": "charts/flow-adapter-flux", "paths": ["flow-adapter-flux/", "flow-server/", "contract/"]},
    {"service": "continuum-controller", "crate": "continuum-controller",
     "containerfile": "continuum-controller/Containerfile", "chart": "charts/continuum-controller",
     "paths": ["continuum-controller/", "witness-worker/", "pdm-client/", "contract/"]},
]
# Any change here rebuilds every image.
WORKSPACE = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", ".github/workflows/images.yml",
             "scripts/images-matrix.py"]


def pick(changed):
    if any(f in WORKSPACE for f in changed):
        return list(SERVICES)
    return [s for s in SERVICES if any(f.startswith(p) for f in changed for p in s["paths"])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before")
    p.add_argument("--after")
    p.add_argument("--changed", nargs="*")
    p.add_argument("--all", action="store_true")
    a = p.parse_args(argv)
    if a.all or (a.changed is None and (not a.before or set(a.before) == {"0"})):
        services = list(SERVICES)
    elif a.changed is not None:
        services = pick(a.changed)
    else:
        out = subprocess.run(["git", "diff", "--name-only", a.before, a.after or "HEAD"],
                             check=True, capture_output=True, text=True).stdout
        services = pick(out.split())
    matrix = [{k: v for k, v in s.items() if k != "paths"} for s in services]
    print("matrix=" + json.dumps(matrix, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

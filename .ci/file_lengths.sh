#!/usr/bin/env bash
# Fails when a Rust source file of the project is over 800 lines: a file that long
# holds more than one concept and should be cut at its seams.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=800
long=$(git ls-files '*.rs' | xargs wc -l | awk -v max=$limit '$2 != "total" && $1 > max')
if [ -n "$long" ]; then
    echo "source files over $limit lines:"
    echo "$long"
    exit 1
fi
echo "no source file over $limit lines ($(git ls-files '*.rs' | wc -l) files)"

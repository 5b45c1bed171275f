#!/usr/bin/env bash
# Fails if any C++ source is not formatted as .clang-format says.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.h' '*.cc')
clang-format --dry-run -Werror "${files[@]}"
echo "format: ${#files[@]} files clean"

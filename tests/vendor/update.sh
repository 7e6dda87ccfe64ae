#!/usr/bin/env bash
# Refresh the vendored test assets from the npm registry, at the versions pinned in package.json.
# axe-core (Deque, MPL-2.0) is injected by tests/test_accessibility.py into every page of the built site; it is kept
# here so that the tests run offline and in CI without npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$work/"
[ -f "$here/package-lock.json" ] && cp "$here/package-lock.json" "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
cp "$work/package-lock.json" "$here/package-lock.json"
mkdir -p "$here/axe-core"
cp "$work/node_modules/axe-core/axe.min.js" "$work/node_modules/axe-core/LICENSE" "$work/node_modules/axe-core/package.json" \
    "$here/axe-core/"
echo "vendored into $here/axe-core:"; ls -l "$here/axe-core"

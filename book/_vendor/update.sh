#!/usr/bin/env bash
# Refresh the vendored assets under static/vendor/ from the npm registry, at the versions pinned in package.json.
# The site then makes no request outside itself: widgets, RequireJS and MathJax are served from _static/vendor/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$work/"
[ -f "$here/package-lock.json" ] && cp "$here/package-lock.json" "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
cp "$work/package-lock.json" "$here/package-lock.json"
mods="$work/node_modules"
dest="$here/static/vendor"
# widgets-setup.js is the course's own glue, not a vendored file: keep it.
find "$dest" -mindepth 1 -maxdepth 1 ! -name widgets-setup.js -exec rm -rf {} +
mkdir -p "$dest/html-manager" "$dest/mathjax/output/chtml/fonts" "$dest/mathjax/input/tex"
cp "$mods/requirejs/require.js" "$dest/require.js"
cp "$mods/requirejs/package.json" "$dest/require.package.json"
# The AMD embed bundle of the widget manager includes @jupyter-widgets/base and controls; its font files sit beside it.
hm="$mods/@jupyter-widgets/html-manager"
# Stored gzipped (it is 3.6 MB as text); book/_ext/course_site.py unpacks it into the built site.
gzip -9 -n -c "$hm/dist/embed-amd.js" > "$dest/html-manager/embed-amd.js.gz"
find "$hm/dist" -maxdepth 1 \( -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
    -exec cp {} "$dest/html-manager/" \;
cp "$hm/package.json" "$dest/html-manager/package.json"
[ -f "$hm/LICENSE" ] && cp "$hm/LICENSE" "$dest/html-manager/LICENSE"
mj="$mods/mathjax/es5"
cp "$mj/tex-chtml.js" "$dest/mathjax/"
cp -r "$mj/output/chtml/fonts/woff-v2" "$dest/mathjax/output/chtml/fonts/"
cp -r "$mj/input/tex/extensions" "$dest/mathjax/input/tex/"
cp -r "$mj/a11y" "$mj/ui" "$mj/sre" "$mj/adaptors" "$dest/mathjax/"
cp "$mods/mathjax/package.json" "$dest/mathjax/package.json"
cp "$mods/mathjax/LICENSE" "$dest/mathjax/LICENSE"
echo "vendored into $dest:"; du -sh "$dest"/*

#!/usr/bin/env bash
# scripts/snapshot_outputs.sh REPO DEST: grade the sample class of every assignment (ada = solution, ben = blank, ...) from REPO,
# keep grades.csv/tasks.csv and the released/source notebooks under DEST, for a byte comparison before/after.
set -uo pipefail
REPO=$(cd "$1" && pwd); DEST=$2; mkdir -p "$DEST"
cd "$REPO"
for ps in ps1 ps2 ps3 ps4 ps5 ps6; do
  tmp=$(mktemp -d)
  PYTHONPATH="$REPO" python samples/make_class.py $ps --dest "$tmp/class" >/dev/null
  PYTHONPATH="$REPO" python -m grader grade $ps "$tmp/class" --out "$tmp/out" > "$DEST/$ps.log" 2>&1
  echo "$ps exit $?" >> "$DEST/exits.txt"
  cp "$tmp/out/grades.csv" "$DEST/$ps.grades.csv" 2>/dev/null
  cp "$tmp/out/tasks.csv" "$DEST/$ps.tasks.csv" 2>/dev/null
  mkdir -p "$DEST/nb/$ps"; cp exercises/$ps/*.ipynb solutions/$ps/*.ipynb "$DEST/nb/$ps/" 2>/dev/null
  rm -rf "$tmp"
done

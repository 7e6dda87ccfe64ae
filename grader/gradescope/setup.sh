#!/usr/bin/env bash
# Gradescope runs this once while it builds the autograder's image; the zip's contents are in /autograder/source.
# It installs what `python -m grader` needs: the course's pinned Python packages and bubblewrap (the sandbox).
# The course's pins need Python 3.11: choose an image that has it (or install it here before pip).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends bubblewrap
cd /autograder/source
python3 -m pip install -q -r requirements.txt

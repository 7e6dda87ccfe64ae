#!/usr/bin/env bash
# Build the GPU kit: what scripts/gpu_check.sh needs on a lent GPU machine that its image lacks, as files that
# travel with the working tree (that machine reaches no network).
#
#   scripts/gpu_kit.sh [DIR]               # default DIR: _build/gpu-kit (git-ignored; name it in the run's carry)
#   scripts/gpu_kit.sh --check-size DIR    # only the size checks below
#
# DIR gets:
#   wheels/          the wheels scripts/gpu_kit.lock pins (CPython 3.12, manylinux x86-64), hashes checked; never
#                    torch, triton or nvidia-*: the machine's own PyTorch is used (scripts/gpu_kit_lock.py says what
#                    is in the lock and what is left out)
#   gpu_kit.lock     the lock the wheels came from (gpu_check.sh --kit installs exactly it, --no-deps)
#   bubblewrap/      Debian 12's bubblewrap unpacked, with the libcap2, libselinux1 and libpcre2-8-0 it links
#                    (each needs glibc >= 2.34): gpu_check.sh runs it through the system's dynamic loader
#   MANIFEST.txt     what is in it, versions and sizes
# Needs the network (PyPI, Debian's mirrors through apt-get) and apt-get/dpkg-deb. Prints the kit's size and exits
# 1 when the kit is over 60 MiB, or when the kit and the files git would send (tracked and untracked, not ignored)
# together pass the 64 MiB a device run carries.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
KIT_LIMIT_MIB=60
TRAVEL_LIMIT_MIB=64
DEBS=(bubblewrap libcap2 libselinux1 libpcre2-8-0)

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# check_size DIR: the kit's bytes (apparent size, as they travel) against the kit's and the travel limits.
check_size() {
    local kit=$1 kit_bytes tree_bytes total
    kit_bytes=$(du -sb "$kit" | cut -f1)
    tree_bytes=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    total=$((kit_bytes + tree_bytes))
    echo "gpu_kit: $kit is $(mib "$kit_bytes") MiB (limit $KIT_LIMIT_MIB MiB); with the $(mib "$tree_bytes") MiB" \
         "of files git sends, $(mib "$total") MiB travel (limit $TRAVEL_LIMIT_MIB MiB)"
    if [ "$kit_bytes" -gt $((KIT_LIMIT_MIB * 1048576)) ]; then
        echo "gpu_kit: FAILED: the kit is over $KIT_LIMIT_MIB MiB" >&2
        return 1
    fi
    if [ "$total" -gt $((TRAVEL_LIMIT_MIB * 1048576)) ]; then
        echo "gpu_kit: FAILED: the kit and the working tree pass the $TRAVEL_LIMIT_MIB MiB a device run carries" >&2
        return 1
    fi
}

if [ "${1:-}" = "--check-size" ]; then
    [ -d "${2:-}" ] || { echo "usage: $0 --check-size DIR" >&2; exit 2; }
    check_size "$2"
    exit
fi
case "${1:-}" in
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
esac

KIT=${1:-$REPO/_build/gpu-kit}
for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "gpu_kit: $tool is missing (Debian's, for bubblewrap)" >&2; exit 2; }
done
rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/bubblewrap"
KIT=$(cd "$KIT" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ------------------------------------------------------------------------------------------------ the wheels
mapfile -t PLATFORM < <(cd "$REPO/scripts" \
    && "$PYTHON" -c 'from gpu_kit_lock import PLATFORM_ARGS; print(*PLATFORM_ARGS, sep="\n")')
cp "$REPO/scripts/gpu_kit.lock" "$KIT/gpu_kit.lock"
"$PYTHON" -m pip download -q --no-deps --require-hashes "${PLATFORM[@]}" -d "$KIT/wheels" -r "$KIT/gpu_kit.lock"
pinned=$(grep -c '^[A-Za-z0-9]' "$KIT/gpu_kit.lock")
got=$(find "$KIT/wheels" -name '*.whl' | wc -l)
[ "$pinned" -eq "$got" ] || { echo "gpu_kit: the lock pins $pinned wheels, $got were downloaded" >&2; exit 1; }

# -------------------------------------------------------------------------------------------- the bubblewrap
(cd "$TMP" && apt-get download -q "${DEBS[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for name in "${DEBS[@]}"; do
    deb=$(ls "$TMP"/"${name}"_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || { echo "gpu_kit: apt-get download $name got nothing (apt-get update?)" >&2; exit 1; }
    dpkg-deb -x "$deb" "$KIT/bubblewrap"
    echo "deb $(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)" >>"$TMP/debs"
done
# Keep the binaries, the libraries and the licences; drop manuals and shell completions.
find "$KIT/bubblewrap/usr/share" -mindepth 1 -maxdepth 1 ! -name doc -exec rm -rf {} +
find "$KIT/bubblewrap/usr/share/doc" -type f ! -name copyright -delete
[ -f "$KIT/bubblewrap/usr/bin/bwrap" ] || { echo "gpu_kit: no usr/bin/bwrap in the bubblewrap package" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------ manifest
{
    echo "GPU kit for scripts/gpu_check.sh --kit, built $(date -u +%FT%TZ) from scripts/gpu_kit.lock"
    cat "$TMP/debs"
    (cd "$KIT/wheels" && for w in *.whl; do echo "wheel $w $(stat -c %s "$w")"; done)
} >"$KIT/MANIFEST.txt"
echo "gpu_kit: $got wheels, $(wc -l <"$TMP/debs") Debian packages in $KIT"
check_size "$KIT"

#!/usr/bin/env bash
# Runs a command as on a machine without the optional system packages (qemu-utils, Ceph, fio,
# libnbd-bin, nbdkit, socat, openssl, e2fsprogs, nasm): in a private mount namespace, their programs and
# libraries are hidden behind overlayfs whiteouts, so they are truly absent (ENOENT for exec, "cannot open shared object" for dlopen).
# Needs root (CI is). CI is unset for the command: it runs as `npm test` would on a developer's
# machine that lacks those packages, which must pass too.
#
#   scripts/without-optional.sh npm test
set -euo pipefail
if [[ $# -eq 0 ]]; then echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; fi
if [[ "${1:-}" != "--inside" ]]; then
  exec unshare --mount --propagation private "$0" --inside "$@"
fi
shift

PROGRAMS=(qemu-img qemu-io qemu-nbd qemu-storage-daemon qemu-system-x86_64 fio rbd rados ceph ceph-mon ceph-osd ceph-authtool ceph-conf nbdinfo nbdcopy nbdkit socat openssl mkfs.ext4 e2fsck debugfs nasm chromium)
LIBRARIES=(librados.so.2 librbd.so.1 librados.so librbd.so liburing.so.2)

declare -A hide=()  # directory -> space-separated names
add() { hide["$1"]+="$2 "; }
for p in "${PROGRAMS[@]}"; do
  for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [[ -e "$d/$p" && ! -L "$d" ]] && add "$(readlink -f "$d")" "$p"
  done
done
for l in "${LIBRARIES[@]}"; do
  while read -r path; do
    [[ -n "$path" ]] || continue
    add "$(dirname "$(readlink -f "$path")")" "$(basename "$path")"
    real=$(readlink -f "$path")
    add "$(dirname "$real")" "$(basename "$real")"
  done < <(ldconfig -p | awk -v n="$l" '$1 == n { print $NF }')
done

work=$(mktemp -d "${TMPDIR:-/tmp}/without-optional.XXXXXX")
i=0
for d in "${!hide[@]}"; do
  wh="$work/$i"; i=$((i + 1))
  mkdir -p "$wh"
  for name in ${hide[$d]}; do [[ -e "$wh/$name" ]] || mknod "$wh/$name" c 0 0; done
  mount -t overlay overlay -o "lowerdir=$wh:$d" "$d"
done

for p in "${PROGRAMS[@]}"; do
  if command -v "$p" >/dev/null; then echo "without-optional: $p is still visible" >&2; exit 1; fi
done
echo "== without optional packages: hidden ${PROGRAMS[*]} ${LIBRARIES[*]} (where present)"
unset CI BLOCKLAYER_CEPH_CONF BLOCKLAYER_CEPH_STATE
"$@"

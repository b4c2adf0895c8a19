#!/usr/bin/env bash
# The Ceph part of CI: installs Debian's Ceph packages (if missing), starts a throwaway
# single-node cluster (scripts/ceph-test-cluster.sh), runs a command with the cluster's
# environment exported (BLOCKLAYER_CEPH_CONF, …), and stops the cluster whatever happens.
#
#   .ci/ceph.sh                 # runs the rbd integration tests only
#   .ci/ceph.sh npm test        # runs the whole suite with the cluster up (what .ci/run does)
#
# Prints how long each step took. Exit status: the command's.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(ceph-mon ceph-osd ceph-common librbd1)

t0=$SECONDS
if ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v rbd >/dev/null || ! ldconfig -p | grep -q 'librbd\.so\.1 '; then
  echo "== ceph: installing ${PACKAGES[*]}"
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  }
fi
t1=$SECONDS

echo "== ceph: starting a throwaway cluster"
# A state file of our own: never reuse or stop a cluster someone else started.
BLOCKLAYER_CEPH_STATE=$(mktemp -u "${TMPDIR:-/tmp}/blocklayer-ceph-ci.XXXXXX")
export BLOCKLAYER_CEPH_STATE
env_lines=$(scripts/ceph-test-cluster.sh start)
trap 'scripts/ceph-test-cluster.sh stop' EXIT
eval "$env_lines"
t2=$SECONDS

if [[ $# -eq 0 ]]; then set -- npx vitest run tests/integration/rbd; fi
echo "== ceph: $*"
status=0
"$@" || status=$?
t3=$SECONDS
echo "== ceph: install $((t1 - t0)) s, cluster start $((t2 - t1)) s, '$*' $((t3 - t2)) s"
exit "$status"

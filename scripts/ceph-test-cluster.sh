#!/usr/bin/env bash
# A throwaway single-node Ceph cluster on 127.0.0.1 for the rbd integration tests and bench.
#
#   scripts/ceph-test-cluster.sh start   # one mon + one memstore OSD, pool 'rbd' (size 1), cephx on
#   scripts/ceph-test-cluster.sh env     # prints `export BLOCKLAYER_CEPH_CONF=…` lines (eval them)
#   scripts/ceph-test-cluster.sh stop    # stops the daemons by PID, removes the temp directory
#   scripts/ceph-test-cluster.sh status  # exit 0 if it is running
#
# Needs Debian's ceph-mon, ceph-osd, ceph-common (and librbd1 for the driver). No systemd, no
# ceph-mgr; all state lives in one temp directory whose path is kept in $STATE (override with
# BLOCKLAYER_CEPH_STATE). Data is in RAM (memstore) and gone after stop.
set -euo pipefail

STATE=${BLOCKLAYER_CEPH_STATE:-${TMPDIR:-/tmp}/blocklayer-ceph-test-cluster.path}
POOL=${BLOCKLAYER_CEPH_POOL:-rbd}

die() { echo "ceph-test-cluster: $*" >&2; exit 1; }

cluster_dir() { [[ -f $STATE ]] && cat "$STATE"; }

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768+), no TIME_WAIT clashes
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

print_env() {
  local d=$1
  echo "export BLOCKLAYER_CEPH_CONF=$d/ceph.conf"
  echo "export BLOCKLAYER_CEPH_KEYRING=$d/keyring"
  echo "export BLOCKLAYER_CEPH_POOL=$POOL"
  echo "export BLOCKLAYER_CEPH_USER=admin"
}

running() {
  local d
  d=$(cluster_dir) || return 1
  [[ -n $d && -f $d/mon.a.pid ]] && kill -0 "$(cat "$d/mon.a.pid")" 2>/dev/null
}

start() {
  for cmd in monmaptool ceph-mon ceph-osd ceph ceph-authtool rbd uuidgen; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y --no-install-recommends ceph-mon ceph-osd ceph-common librbd1"
  done
  if running; then echo "ceph-test-cluster: already running in $(cluster_dir)" >&2; print_env "$(cluster_dir)"; return; fi
  local t0=$SECONDS d port fsid
  d=$(mktemp -d "${TMPDIR:-/tmp}/blocklayer-ceph.XXXXXX")
  echo "$d" >"$STATE"
  # A failed step leaves nothing behind; the logs are printed first.
  trap 'echo "ceph-test-cluster: start failed; last log lines:" >&2; tail -n 5 "$d"/*.log >&2 || true; stop' ERR
  port=$(free_port)
  fsid=$(uuidgen)
  mkdir -p "$d/mon" "$d/osd0" "$d/run"
  cat >"$d/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$port
mon initial members = a
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $d/keyring
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
auth allow insecure global id reclaim = false
ms bind msgr2 = false
run dir = $d/run
admin socket = $d/run/\$name.asok
log file = $d/\$name.log
pid file = $d/\$name.pid
[mon.a]
mon data = $d/mon
keyring = $d/mon.keyring
[osd.0]
osd data = $d/osd0
keyring = $d/osd0/keyring
osd objectstore = memstore
memstore device bytes = 4294967296
osd crush update on start = false
CONF
  local c=(-c "$d/ceph.conf")
  ceph-authtool --create-keyring "$d/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$d/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$d/mon.keyring" --import-keyring "$d/keyring" >/dev/null
  monmaptool --create --addv a "v1:127.0.0.1:$port" --fsid "$fsid" "$d/monmap" >/dev/null
  ceph-mon "${c[@]}" --mkfs -i a --monmap "$d/monmap" --keyring "$d/mon.keyring"
  ceph-mon "${c[@]}" -i a
  local uuid id
  uuid=$(uuidgen)
  id=$(ceph "${c[@]}" osd new "$uuid")
  [[ $id == 0 ]] || die "expected osd id 0, got '$id'"
  ceph "${c[@]}" auth get-or-create osd.0 osd 'allow *' mon 'allow profile osd' -o "$d/osd0/keyring" 2>/dev/null
  ceph-osd "${c[@]}" -i 0 --mkfs --osd-uuid "$uuid" 2>>"$d/osd.0.mkfs.log"
  ceph-osd "${c[@]}" -i 0 2>>"$d/osd.0.start.log"
  ceph "${c[@]}" osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1
  ceph "${c[@]}" osd pool create "$POOL" 8 >/dev/null 2>&1
  rbd "${c[@]}" pool init "$POOL"
  trap - ERR
  echo "ceph-test-cluster: up in $((SECONDS - t0)) s, dir $d, mon 127.0.0.1:$port" >&2
  print_env "$d"
}

stop() {
  local d
  d=$(cluster_dir) || { echo "ceph-test-cluster: not running" >&2; return 0; }
  local pids=()
  for f in "$d/osd.0.pid" "$d/mon.a.pid"; do
    [[ -f $f ]] || continue
    local pid
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    # Memstore data is thrown away anyway: a daemon slow to exit gets SIGKILL after 3 s.
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  done
  [[ $d == "${TMPDIR:-/tmp}"/blocklayer-ceph.* ]] && rm -rf "$d"
  rm -f "$STATE"
  echo "ceph-test-cluster: stopped" >&2
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) d=$(cluster_dir) || die "not running (run: $0 start)"; print_env "$d" ;;
  status) running ;;
  *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac

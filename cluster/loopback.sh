#!/usr/bin/env bash
# `ray up` of cluster/onprem.yaml for real, on one machine: the head on 127.0.0.1 and two worker nodes on 127.0.0.2
# and 127.0.0.3, reached over SSH by Ray's `local` node provider as it reaches your own machines. Then the day of
# docs/cluster.md: `ray dashboard` (the SSH tunnel), `ray job submit` of a small sweep with the token, `fedvsr best`
# on its folder (no cluster, no token), the token refusals, and `ray down`; each step is checked and the script
# stops at the first that fails.
#
#     cluster/loopback.sh [WORKDIR]      # as root on Debian/Ubuntu, from anywhere; WORKDIR default /tmp/fedvsr-loopback
#
# What it sets up (all of it on 127.0.0.0/8, nothing else is touched):
# - openssh-server (apt-get, if /usr/sbin/sshd is missing), started on its own config listening on 127.0.0.1-3:22
#   only, public keys only, for one user;
# - a user fedvsr-lo (the cluster's SSH user; not root, so that the `ray stop` of `ray up` and `ray down` stops only
#   this cluster's Ray, never another Ray on the machine) and an ed25519 key made for the purpose;
# - the user's ~/venv (the setup commands find it and skip creating one): Python 3.11 with this machine's
#   FEDVSR_SITE (default /work/venv's site-packages) on its path, so the cluster's setup commands find ray and torch
#   installed (pip says "already satisfied"); `pip install -e ~/fedvsr` does install the repository there;
# - a token in WORKDIR/token (the cluster's, never in the repository) and a folder WORKDIR/shared standing in for
#   the NFS mount;
# - WORKDIR/loopback.yaml: a copy of cluster/onprem.yaml with the placeholders filled and its documented variables
#   NFS=none, SHARED=WORKDIR/shared, SAME_MACHINE=yes (see the config's header).
# At the end (also on failure) it stops its sshd by its pid; the user and its home stay for the next run.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/fedvsr-loopback}
U=fedvsr-lo
SITE=${FEDVSR_SITE:-/work/venv/lib/python3.11/site-packages}
PY=${FEDVSR_PYTHON:-/usr/bin/python3.11}
RAY=${RAY:-$(command -v ray)}
HERE=${HERE:-$(command -v python)}   # this machine's Python, for `fedvsr best` here
DASH=18265   # the local end of `ray dashboard`'s tunnel (the head's dashboard is on its 127.0.0.1:8265)

step() { echo; echo "=== $(date -u +%H:%M:%S) $*"; }
fedvsr_here() { env -u RAY_AUTH_MODE -u RAY_AUTH_TOKEN_PATH -u RAY_ADDRESS PYTHONPATH="$REPO" "$HERE" -m fedvsr.cli "$@"; }
fail() { echo "loopback.sh: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (it installs and starts sshd and adds the user $U)"
for port in 6379 8265 $DASH; do
  ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || fail "port $port on 127.0.0.1 is taken (another Ray?)"
done

step "sshd on 127.0.0.1-3, user $U, a key made for the purpose"
command -v /usr/sbin/sshd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server rsync
command -v rsync >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q rsync
mkdir -p "$W" /run/sshd && chmod 755 "$W"
id "$U" >/dev/null 2>&1 || useradd -m -s /bin/bash "$U"
usermod -p '*' "$U"   # no password, not locked: sshd admits a key
H=$(getent passwd "$U" | cut -d: -f6)
rm -f "$W/key" "$W/key.pub" "$W/hostkey" "$W/hostkey.pub"
ssh-keygen -q -t ed25519 -N '' -C fedvsr-loopback -f "$W/key"
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"
install -d -o "$U" -g "$U" -m 700 "$H/.ssh"
install -o "$U" -g "$U" -m 600 "$W/key.pub" "$H/.ssh/authorized_keys"
cat > "$W/sshd_config" <<EOF
Port 22
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
ListenAddress 127.0.0.3
HostKey $W/hostkey
PidFile $W/sshd.pid
AllowUsers $U
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
EOF
/usr/sbin/sshd -f "$W/sshd_config" -E "$W/sshd.log"
trap 'kill "$(cat "$W/sshd.pid")" 2>/dev/null || true' EXIT
ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i "$W/key" "$U@127.0.0.2" \
  'echo "ssh $USER@$(echo $SSH_CONNECTION | cut -d" " -f3) ok"'

step "the user's ~/venv ($PY with $SITE on its path), TMPDIR, the token, the shared folder"
if [ ! -x "$H/venv/bin/python" ]; then
  # no pip or setuptools of its own: those of $SITE (a venv's own would shadow them, older than torch needs)
  su - "$U" -c "$PY -m venv --without-pip ~/venv"
  echo "$SITE" > "$H/venv/lib/python3.11/site-packages/fedvsr-loopback-site.pth"
  for cmd in "ray ray.scripts.scripts" "pip pip._internal.cli.main"; do
    set -- $cmd
    printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$H/venv/bin/python" "$2" > "$H/venv/bin/$1"
    chmod 755 "$H/venv/bin/$1"
  done
fi
grep -q fedvsr-loopback-tmp "$H/.bashrc" || sed -i "1i export TMPDIR=/tmp/fvlo  # fedvsr-loopback-tmp" "$H/.bashrc"
install -d -o "$U" -g "$U" /tmp/fvlo
rm -rf "$W/shared" && install -d -o "$U" -g "$U" -m 2775 "$W/shared"
(umask 077 && openssl rand -hex 32 > "$W/token")
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$W/token

step "fill a copy of cluster/onprem.yaml -> $W/loopback.yaml"
sed -e "s|^cluster_name: fedvsr|cluster_name: fedvsr-loopback|" \
    -e "s|REPLACE-WITH-HEAD-HOST|127.0.0.1|; s|REPLACE-WITH-GPU-HOST-1|127.0.0.2|; s|REPLACE-WITH-GPU-HOST-2|127.0.0.3|" \
    -e "s|REPLACE-WITH-SSH-USER|$U|; s|ssh_private_key: .*|ssh_private_key: $W/key|" \
    -e "s|\"~/.fedvsr/ray-token\"|\"$W/token\"|" \
    -e "s|NFS=REPLACE-WITH-NFS-SERVER:/REPLACE-WITH-EXPORT; SHARED=/mnt/fedvsr;|NFS=none; SHARED=$W/shared;|" \
    -e "s|SAME_MACHINE=no;|SAME_MACHINE=yes;|" \
    "$REPO/cluster/onprem.yaml" > "$W/loopback.yaml"
! grep -n "REPLACE-WITH" "$W/loopback.yaml" || fail "a placeholder is left in $W/loopback.yaml"
grep -c "SAME_MACHINE=yes;" "$W/loopback.yaml" | grep -qx 2 || fail "SAME_MACHINE not set in both start commands"

cd "$REPO"
step "ray up -y $W/loopback.yaml"
"$RAY" up -y --no-config-cache "$W/loopback.yaml" || fail "ray up"

step "ray dashboard (SSH tunnel 127.0.0.1:$DASH -> the head's 127.0.0.1:8265), wait for 3 nodes"
"$RAY" dashboard --port $DASH "$W/loopback.yaml" > "$W/dashboard.log" 2>&1 &
TUNNEL=$!
trap 'kill $TUNNEL 2>/dev/null || true; kill "$(cat "$W/sshd.pid")" 2>/dev/null || true' EXIT
nodes() {
  curl -fsS -H "Authorization: Bearer $(cat "$W/token")" "http://127.0.0.1:$DASH/api/v0/nodes?limit=100" |
    "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]["result"]; a=[n for n in r if n["state"]=="ALIVE"]
for n in a: print("node", n["node_ip"], n["node_id"][:12], "head" if n["is_head_node"] else "worker", n["resources_total"].get("CPU", 0), "CPU", file=sys.stderr)
print(len(a))'
}
for _ in $(seq 120); do [ "$(nodes 2>/dev/null)" = 3 ] && break; sleep 5; done
[ "$(nodes 2>/dev/null)" = 3 ] || { "$RAY" exec "$W/loopback.yaml" 'tail -n 40 /tmp/fvlo/ray-head/session_latest/logs/monitor.*' || true; fail "3 nodes did not come up"; }
nodes > /dev/null

step "the head's system config (--system-config): updates up to 512 KiB come back inline"
GCS=$(pgrep -u "$U" -f 'gcs_server ' | head -1) || fail "no gcs_server of $U"
tr '\0' '\n' < "/proc/$GCS/cmdline" | sed -n 's/^--config_list=//p' | base64 -d |
  "$PY" -c 'import json,sys; c=json.load(sys.stdin); print("max_direct_call_object_size", c.get("max_direct_call_object_size"))
sys.exit(c.get("max_direct_call_object_size") != 524288)' || fail "the head's GCS runs without the inline-results setting"

step "ray job submit (token from RAY_AUTH_TOKEN_PATH): a sweep of 2 trials on the 2 worker nodes"
SWEEP=$W/shared/sweeps/loopback
cat > "$W/shared/spec.yaml" <<EOF
search: grid
scheduler: none
fixed: {model.preset: tiny, fl.rounds: 2, fl.clients: 4, fl.clients_per_round: 2, fl.batch_size: 4,
        data.root: $W/shared/data/synthetic, data.videos: 10, data.frames: 5, data.height: 64, data.width: 64,
        data.patch: 16, data.samples_per_video: 4, eval.holdout: 2, eval.clips: 2,
        platform.workers: 1, platform.cpus_per_worker: 1}
params: {fl.lr: {grid: [0.001, 0.003]}}
EOF
chmod 644 "$W/shared/spec.yaml"
"$RAY" job submit --address "http://127.0.0.1:$DASH" --working-dir . -- \
  python -m fedvsr.cli sweep "$W/shared/spec.yaml" --out "$SWEEP" --concurrent 2 | tee "$W/job.log"
grep -q "Job 'raysubmit_.*' succeeded" "$W/job.log" || fail "the sweep job did not succeed"

step "trials on more than one node (trials.parquet, read here without Ray)"
"$PY" - "$SWEEP" "$SITE" <<'EOF'
import sys; sys.path.insert(0, sys.argv[2])
import pyarrow.parquet as pq
rows = pq.read_table(f"{sys.argv[1]}/trials.parquet").to_pylist()
for r in rows: print(r["trial"], r["status"], r["node_ip"], r["node_id"][:12], round(r["final_psnr"], 4))
assert all(r["status"] == "finished" for r in rows), "a trial did not finish"
assert len({r["node_id"] for r in rows}) >= 2, "the trials ran on one node only"
print(f"{len(rows)} trials finished on {len({r['node_id'] for r in rows})} nodes: {sorted({r['node_ip'] for r in rows})}")
EOF

step "fedvsr best (no cluster, no token)"
fedvsr_here best "$SWEEP" --top 2 || fail "fedvsr best --top 2"
fedvsr_here best "$SWEEP" > "$W/best.yaml" || fail "fedvsr best"
head -4 "$W/best.yaml"
fedvsr_here report "$SWEEP" > /dev/null || fail "fedvsr report"
echo "fedvsr report $SWEEP: exit 0, wrote $(ls "$SWEEP/report" | tr "\n" " ")"

step "ray exec and ray rsync-down (the page's other ways to read a sweep)"
"$RAY" exec "$W/loopback.yaml" "fedvsr best $SWEEP --top 2" 2>&1 | grep -v "Shared connection" || fail "ray exec"
rm -rf "$W/copy" && "$RAY" rsync-down "$W/loopback.yaml" "$SWEEP/" "$W/copy/" > /dev/null 2>&1 &&
  test -f "$W/copy/trials.parquet" || fail "ray rsync-down"
echo "ray rsync-down: $(find "$W/copy" -type f | wc -l) files in $W/copy"

step "ray job submit: fedvsr simulate, 300 clients, 20 a round, one client worker per worker node"
RUN=$W/shared/runs/clients300
"$RAY" job submit --address "http://127.0.0.1:$DASH" --working-dir . -- \
  python -m fedvsr.cli simulate --out "$RUN" --set model.preset=tiny --set fl.rounds=3 --set fl.clients=300 \
  --set fl.clients_per_round=20 --set fl.batch_size=4 --set data.root="$W/shared/data/synthetic" \
  --set data.videos=304 --set data.frames=5 --set data.height=64 --set data.width=64 --set data.patch=16 \
  --set data.samples_per_video=4 --set eval.holdout=4 --set eval.clips=4 --set platform.workers=2 \
  --set platform.cpus_per_worker=1 | tee "$W/simulate.log"
grep -q "Job 'raysubmit_.*' succeeded" "$W/simulate.log" || fail "the simulate job did not succeed"

step "clients per node (clients.parquet's node column), per round (rounds.parquet)"
"$PY" - "$RUN" "$SITE" <<'EOF'
import json, sys; sys.path.insert(0, sys.argv[2])
from collections import Counter
import pyarrow.parquet as pq
clients = pq.read_table(f"{sys.argv[1]}/clients.parquet").to_pylist()
rounds = pq.read_table(f"{sys.argv[1]}/rounds.parquet").to_pylist()
per_node = Counter(c["node"][:12] for c in clients)
print(f"{len(clients)} client-rounds, {len({c['client'] for c in clients})} distinct clients of 300, per node: "
      + ", ".join(f"{n}: {k}" for n, k in sorted(per_node.items())))
for r in rounds:
    print(f"round {r['round']}: psnr {r['psnr']:.4f}  {r['aggregated']} aggregated  {r['seconds']:.1f} s "
          f"(train {r['train_seconds']:.1f} s, eval {r['eval_seconds']:.1f} s on {r['eval_workers']} workers)")
busy = Counter(c["node"][:12] for c in clients if c["status"] == "ok")
secs = {n: sum(c["seconds"] for c in clients if c["node"][:12] == n) for n in busy}
print("client seconds per node: " + ", ".join(f"{n}: {s:.1f} s for {busy[n]} clients ({s / busy[n]:.2f} s each)"
                                             for n, s in sorted(secs.items())))
assert len(per_node) >= 2 and "" not in per_node, per_node
assert all(c["status"] == "ok" for c in clients)
EOF

step "a wrong token and no token: ray job list through the tunnel, and the dashboard's REST API"
set +e
env RAY_AUTH_TOKEN="$(openssl rand -hex 32)" "$RAY" job list --address "http://127.0.0.1:$DASH" > "$W/wrong.log" 2>&1
echo "wrong token: exit $?"; tail -n 1 "$W/wrong.log"
env -u RAY_AUTH_MODE -u RAY_AUTH_TOKEN_PATH "$RAY" job list --address "http://127.0.0.1:$DASH" > "$W/none.log" 2>&1
echo "no token: exit $?"; tail -n 1 "$W/none.log"
echo "REST API without the token: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DASH/api/v0/nodes")"
set -e
grep -q "AuthenticationError" "$W/wrong.log" && grep -q "AuthenticationError" "$W/none.log" ||
  fail "a driver without the right token was not refused"

step "ray down -y"
kill $TUNNEL 2>/dev/null || true
"$RAY" down -y "$W/loopback.yaml" || fail "ray down"
sleep 3
left=$( (pgrep -u "$U" -f "raylet|gcs_server" || true) | wc -l)
[ "$left" = 0 ] || fail "$left Ray processes of $U are still running after ray down"
echo "no Ray process of $U is left"
for pid in $(pgrep -u "$U" || true); do kill "$pid" 2>/dev/null || true; done   # the autoscaler's idle SSH sessions
echo; echo "loopback.sh: every step succeeded"

#!/usr/bin/env bash
# The figures of docs/transport.md "Measured on this machine", in one command: every engine and
# codec at 640x480 and 1920x1080, each run REPEAT times (default 3), the median of each figure.
#
#   benchmarks/transport/run.sh          # builds framepipe-transport-bench (release, both
#                                        # adapters on) in build/transport-bench
#
# It starts what the runs need, on this machine only: a nats-server on 127.0.0.1 at a free port,
# with max_payload 8 MB so that a raw 1080p frame (6.2 MB) fits (the tests use the 1 MB default),
# and, for iceoryx, an iox-roudi with tests/transport/roudi.toml inside a mount namespace of its
# own (tests/transport/isolated.sh: needs root or user namespaces). Writes
# benchmarks/transport/results/: runs.jsonl (every run), table.md, machine.txt. About 3 minutes.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build/transport-bench}"
out="$repo/benchmarks/transport/results"
repeat="${REPEAT:-3}"
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: REPEAT must be a positive number" >&2; exit 2; }

# shellcheck source=SCRIPTDIR/../../scripts/lib/packages.sh
source "$repo/scripts/lib/packages.sh"
# What the release build of framepipe-transport-bench needs (the same names as scripts/test's).
ensure_debian_packages g++ cmake make catch2 pkg-config libcli11-dev nlohmann-json3-dev clang-14 \
    libopencv-dev opencv-doc libboost-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    libiceoryx-posh-dev libiceoryx-hoofs-dev iceoryx libnats-dev nats-server util-linux python3

cmake --preset release -B "$build" -DFRAMEPIPE_WITH_ICEORYX=ON -DFRAMEPIPE_WITH_NATS=ON >/dev/null
cmake --build "$build" -j2 --target framepipe-transport-bench >/dev/null
bench="$build/examples/detection/framepipe-transport-bench"

mkdir -p "$out"
runs="$out/runs.jsonl"
: >"$runs"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nats-server: $(nats-server --version 2>&1 | head -n1), max_payload 8 MB"
    echo "repetitions: $repeat, the median of each figure"
} >"$out/machine.txt"

# One run: the driver's JSON line plus the echo side's figures, as one JSON object.
record() {
    python3 -c '
import json, sys
drv, echo = None, None
for line in sys.stdin:
    line = line.strip()
    if line.startswith("echo {"):
        echo = json.loads(line[5:])
    elif line.startswith("{"):
        drv = json.loads(line)
if drv is None or echo is None:
    sys.exit("run.sh: a run printed no figures")
drv["receiver_cpu_ms_per_frame"] = echo["cpu_ms_per_frame"]
drv["receiver_lost"] = echo["lost"]
print(json.dumps(drv))' >>"$runs"
}

# NATS: a server of our own, stopped on exit.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
conf="$(mktemp)"
printf 'max_payload: 8388608\n' >"$conf"
nats-server -a 127.0.0.1 -p "$port" -c "$conf" >/dev/null 2>&1 &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null || true; rm -f "$conf"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

for size in "640 480" "1920 1080"; do
    for ((i = 0; i < repeat; i++)); do
        # shellcheck disable=SC2086 # size is two words on purpose
        # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
        "$repo/tests/transport/isolated.sh" sh -c '
            iox-roudi -c "$1" -l error >/dev/null 2>&1 & roudi=$!
            sleep 1
            "$2" iceoryx raw $3 $4; status=$?
            kill $roudi; wait $roudi 2>/dev/null
            exit $status' sh "$repo/tests/transport/roudi.toml" "$bench" $size | record
        for codec in raw jpeg; do
            # shellcheck disable=SC2086
            "$bench" "nats://127.0.0.1:$port" "$codec" $size | record
        done
    done
done

python3 - "$runs" "$out/table.md" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["engine"], r["codec"], r["size"]), []).append(r)
def med(rs, k):
    return statistics.median(r[k] for r in rs)
order = sorted(rows, key=lambda k: (k[0] != "iceoryx", k[1] != "raw", int(k[2].split("x")[0])))
lines = ["| engine | codec | size | round trip p50 / p99 | ping-pong fps | CPU per frame, camera / receiver | 30 fps for 3 s: answered |",
         "|---|---|---|---|---|---|---|"]
for k in order:
    rs = rows[k]
    engine = "iceoryx" if k[0] == "iceoryx" else "NATS"
    codec = "raw" if k[1] == "raw" else "JPEG q80"
    lines.append(f"| {engine} | {codec} | {k[2]} | {med(rs, 'rtt_p50_ms'):.2f} / {med(rs, 'rtt_p99_ms'):.2f} ms "
                 f"| {med(rs, 'pingpong_fps'):,.0f} | {med(rs, 'sender_cpu_ms_per_frame'):.2f} / "
                 f"{med(rs, 'receiver_cpu_ms_per_frame'):.2f} ms "
                 f"| {med(rs, 'paced_answered'):.0f} of {med(rs, 'paced_sent'):.0f} |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"

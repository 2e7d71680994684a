#!/usr/bin/env bash
# benchmarks/multicam/run.sh - framepipe-multicam at scale: N synthetic 640x480 cameras at
# 30 fps into one detector with a fixed 20 ms service time (a sleep), for N = 1, 4, 16, 64, 256,
# each as framepipe builds it, as the naive design (a thread and an unbounded queue per camera,
# one detector polling them) and as the floor (the camera threads alone), one process per run,
# interleaved; then 256 cameras with nothing flowing. Prints a markdown table (and keeps the raw
# JSON lines), with the load average each run saw.
#
#   benchmarks/multicam/run.sh                 # every N, 10 s each (about 5 minutes)
#   SECONDS_PER_RUN=5 CAMERAS="4 16" benchmarks/multicam/run.sh
#
# Environment: BUILD_DIR (default build/bench-multicam), JOBS (default 2), SECONDS_PER_RUN
# (default 10), CAMERAS (default "1 4 16 64 256"), BATCH (default 8), OUT (the raw JSON lines,
# default $BUILD_DIR/multicam.jsonl).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
build_dir="${BUILD_DIR:-$repo_root/build/bench-multicam}"
seconds="${SECONDS_PER_RUN:-10}"
cameras="${CAMERAS:-1 4 16 64 256}"
batch="${BATCH:-8}"
out="${OUT:-$build_dir/multicam.jsonl}"

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DFRAMEPIPE_BUILD_TESTS=OFF \
    -DFRAMEPIPE_BUILD_EXAMPLES=ON -DFRAMEPIPE_REQUIRE_VIDEO_EXAMPLES=ON \
    -DFRAMEPIPE_BUILD_BENCHMARKS=ON -DFRAMEPIPE_BENCHMARK_PEERS=OFF >/dev/null
cmake --build "$build_dir" -j"${JOBS:-2}" --target bench_multicam >/dev/null
bench="$build_dir/benchmarks/multicam/bench_multicam"

: >"$out"
for n in $cameras; do
    for design in floor framepipe naive; do
        echo "==> $design, $n cameras" >&2
        "$bench" --design "$design" --cameras "$n" --seconds "$seconds" --batch "$batch" >>"$out"
    done
done
echo "==> framepipe, 256 cameras, nothing flowing" >&2
"$bench" --idle --cameras 256 --seconds "$seconds" --batch "$batch" >>"$out"

python3 - "$out" "$batch" <<'EOF'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
batch = sys.argv[2]
by = {(r["design"], r["cameras"]): r for r in rows}
print(f"Synthetic 640x480 cameras at 30 fps, detector 20 ms per batch of up to {batch}; "
      "CPU per frame = process CPU / frames captured.\n")
print("| N | design | frames/s | CPU per frame | framework CPU per frame | input age p50 / p99 | "
      "age bound | Jain | batch | peak RSS | RSS bound | RSS start -> end | load |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in sorted({r["cameras"] for r in rows if r["design"] != "framepipe-idle"}):
    floor = by.get(("floor", n))
    for design in ("framepipe", "naive", "floor"):
        r = by.get((design, n))
        if r is None:
            continue
        over = "-"
        if floor and design != "floor":
            over = f'{r["cpu_us_per_frame"] - floor["cpu_us_per_frame"]:.2f} us'
        age = "-" if "age_p50_ms" not in r else f'{r["age_p50_ms"]:.1f} / {r["age_p99_ms"]:.1f} ms'
        jain = "-" if "jain" not in r else f'{r["jain"]:.4f}'
        bound = "-" if design == "floor" else f'{r["age_bound_ms"]:.1f} ms'
        rss_bound = f'{r["rss_bound_mb"]:.0f} MB' if r.get("rss_bound_mb") else "-"
        extra = ""
        if design == "naive":
            extra = f' ({r["queued_frames"]} frames queued at the end)'
        print(f'| {n} | {design} | {r["frames_per_s"]:.0f} | {r["cpu_us_per_frame"]:.2f} us | '
              f'{over} | {age}{extra} | {bound} | {jain} | {r["mean_batch"]:.2f} | '
              f'{r["peak_rss_mb"]:.0f} MB | {rss_bound} | '
              f'{r["rss_start_mb"]:.0f} -> {r["rss_end_mb"]:.0f} MB | {r["load_average"].split()[0]} |')
idle = by.get(("framepipe-idle", 256))
if idle:
    print(f'\nIdle, 256 cameras connected, no frame flowing: CPU {idle["cpu_percent"]:.3f} % of one '
          f'core over {idle["seconds"]:.0f} s ({idle["cpu_s"] * 1000:.1f} ms), peak RSS '
          f'{idle["peak_rss_mb"]:.0f} MB, load {idle["load_average"].split()[0]}.')
EOF

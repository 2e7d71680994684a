#!/usr/bin/env bash
# Regenerates benchmarks/results/profile/callgrind_ops.txt: the path length (instructions per
# call, one thread, uncontended) of framepipe's operations and their peers', measured with
# valgrind's callgrind on framepipe-profile-ops, and the functions where each op's instructions
# go. Run after scripts/bench has built build/bench (or pass another build directory).
#
#   benchmarks/profile.sh [build-dir]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$repo_root/build/bench}"
tool="$build_dir/benchmarks/framepipe-profile-ops"
out="$repo_root/benchmarks/results/profile/callgrind_ops.txt"
n=200000

if ! command -v valgrind >/dev/null; then
    echo "benchmarks/profile.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 2
fi
if [[ ! -x $tool ]]; then
    echo "benchmarks/profile.sh: $tool not found; run scripts/bench first" >&2
    exit 2
fi
cmake --build "$build_dir" --target framepipe-profile-ops >/dev/null

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ops=(empty ring_push_pop spsc_ring_push_pop boost_spsc_push_pop rwq_push_pop ring_push_full
    spsc_ring_push_full mutex_circular_buffer_push_full latest_publish latest_publish_take
    triple_publish triple_publish_take now rate_admit rate_reject bcast_publish_K1
    rwq_shared_ptr_push_pop window_push_N30 window_push_snapshot_N30
    mutex_circular_window_push_snapshot_N30)

total() { # total Ir of one callgrind output
    # No early exit in awk: callgrind_annotate would die of SIGPIPE and fail the pipeline.
    callgrind_annotate "$1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}

for op in "${ops[@]}"; do
    valgrind --tool=callgrind --callgrind-out-file="$work/$op.out" "$tool" "$op" "$n" \
        >/dev/null 2>&1
done
base="$(total "$work/empty.out")"
{
    echo "# valgrind --tool=callgrind, framepipe-profile-ops <op> $n (one thread, uncontended)"
    echo "# instructions per operation = (Ir(op) - Ir(empty)) / $n; regenerate: benchmarks/profile.sh"
    for op in "${ops[@]}"; do
        printf '%-40s %10.1f\n' "$op" \
            "$(awk -v a="$(total "$work/$op.out")" -v b="$base" -v n="$n" 'BEGIN {print (a - b) / n}')"
    done
    for op in "${ops[@]}"; do
        [[ $op == empty ]] && continue
        echo "=== $op"
        callgrind_annotate "$work/$op.out" 2>/dev/null |
            awk '/^-+$/ {sep++; next} sep >= 3 && NF > 0 && shown < 8 {print; shown++}'
    done
} >"$out"
echo "benchmarks/profile.sh: wrote $out"

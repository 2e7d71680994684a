#!/usr/bin/env bash
# Profiles behind the explanations in docs/benchmarks.md. Run after scripts/bench (it uses the
# binaries in build/bench); writes benchmarks/results/profile/.
#
#   benchmarks/profile.sh             callgrind path lengths + perf profiles of the key cases
#   benchmarks/profile.sh callgrind   only callgrind (deterministic, load-independent)
#   benchmarks/profile.sh perf        only perf (needs perf; software cpu-clock is enough)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${BUILD_DIR:-$repo_root/build/bench}/benchmarks"
out="$repo_root/benchmarks/results/profile"
what="${1:-all}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

OPS=(empty ring_push_pop spsc_ring_push_pop boost_spsc_push_pop rwq_push_pop ring_push_full
    spsc_ring_push_full mutex_circular_buffer_push_full latest_publish latest_publish_take triple_publish
    triple_publish_take now rate_admit rate_reject bcast_publish_K1 rwq_shared_ptr_push_pop
    window_push_N30 window_push_snapshot_N30 mutex_circular_window_push_snapshot_N30)

if [[ $what == all || $what == callgrind ]]; then
    command -v valgrind >/dev/null || { echo "profile.sh: valgrind not found" >&2; exit 1; }
    n=200000
    {
        echo "# valgrind --tool=callgrind: framepipe-profile-ops <op> $n (one thread, uncontended)"
        echo "# instructions per operation = (Ir(op) - Ir(empty)) / $n"
        base=""
        for op in "${OPS[@]}"; do
            valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$op" "$bin/framepipe-profile-ops" \
                "$op" "$n" >/dev/null 2>&1
            ir="$(sed -n 's/^summary: //p; s/^totals: //p' "$tmp/cg.$op" | head -n1 | awk '{print $1}')"
            [[ -z $base ]] && base="$ir"
            awk -v op="$op" -v ir="$ir" -v b="$base" -v n="$n" 'BEGIN { printf "%-42s %8.1f\n", op, (ir - b) / n }'
        done
        for op in ring_push_pop spsc_ring_push_pop ring_push_full spsc_ring_push_full \
            latest_publish_take rate_admit bcast_publish_K1 window_push_snapshot_N30; do
            echo
            echo "=== $op: where the instructions go"
            callgrind_annotate "$tmp/cg.$op" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,12p' |
                cut -c1-170 | sed 's/ \[\/.*//'
        done
    } >"$out/callgrind_ops.txt"
    echo "profile.sh: wrote $out/callgrind_ops.txt"
fi

if [[ $what == all || $what == perf ]]; then
    command -v perf >/dev/null || { echo "profile.sh: perf not found" >&2; exit 1; }
    run_perf() { # name binary filter
        local name="$1" b="$2" filter="$3"
        perf record -F 4000 -g -o "$tmp/$name.data" "$bin/$b" --benchmark_filter="$filter" \
            --benchmark_min_time=0.5 >/dev/null 2>&1
        {
            echo "# perf record -F 4000 -g $b --benchmark_filter='$filter' (software cpu-clock)"
            echo "# self time by symbol, both threads"
            # awk, not head: head would close the pipe early, and under pipefail the SIGPIPE of
            # the commands before it would end the script after the first profile.
            perf report -i "$tmp/$name.data" --no-children --sort symbol --stdio 2>/dev/null |
                grep -E '^ +[0-9.]+%' | awk 'NR <= 25' | cut -c1-150
        } >"$out/perf_$name.txt"
        echo "profile.sh: wrote $out/perf_$name.txt"
    }
    run_perf ring_spsc_throughput bench_ring 'ring.spsc_throughput/8B/framepipe.ring_spin/'
    run_perf spsc_ring_spsc_throughput bench_ring 'ring.spsc_throughput/8B/framepipe.spsc_ring_spin/'
    run_perf ring_spsc_throughput_rwq bench_ring 'ring.spsc_throughput/8B/moodycamel.ReaderWriterQueue/'
    run_perf latest_slot_publish bench_latest_slot 'latest_slot.publish/8B/framepipe.latest_slot/'
    run_perf wakeup_ring bench_wakeup 'wakeup/8B/framepipe.ring/'
    run_perf wakeup_atomic_wait bench_wakeup 'wakeup/any/floor.atomic_wait/'
    run_perf broadcaster_K1 bench_broadcaster 'broadcaster.publish_K1/8B/framepipe.broadcaster/'
fi

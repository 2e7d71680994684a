#!/usr/bin/env bash
# Scores every --sampling strategy of framepipe-detect against the detector run on every frame,
# offline, on real clips from Debian's opencv-doc (vtest.avi, Megamind.avi, tree.avi), then draws
# the plot and puts the table into docs/sampling.md (between its "sampling-table" markers).
#
#   benchmarks/sampling/run.sh            # builds framepipe-bench-sampling (BUILD_DIR, default
#                                         # build/dev: HOG's time is in Debian's OpenCV either way)
#
# Writes benchmarks/sampling/results/: sampling.json (every figure, per clip and pooled),
# table.md, per_clip.md, sampling.dat, sampling_labels.dat, sampling.gp, sampling.png,
# machine.txt. Needs gnuplot (gnuplot-nox) and opencv-doc; takes 10 to 20 minutes on a busy
# 2-core machine (HOG on 1133 frames, and again on the cascade's regions).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build/dev}"
out="$repo/benchmarks/sampling/results"
data="${FRAMEPIPE_SAMPLING_DATA:-/usr/share/doc/opencv-doc/examples/data}"
doc="$repo/docs/sampling.md"

command -v gnuplot >/dev/null || { echo "run.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
for clip in vtest Megamind tree; do
    [[ -f $data/$clip.avi ]] || { echo "run.sh: $data/$clip.avi not found (apt-get install opencv-doc)" >&2; exit 1; }
done
if [[ ! -d $build ]]; then
    cmake --preset dev >/dev/null
fi
cmake --build "$build" -j2 --target framepipe-bench-sampling >/dev/null

mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "opencv: $(pkg-config --modversion opencv4 2>/dev/null || echo unknown), gstreamer: $(pkg-config --modversion gstreamer-1.0 2>/dev/null || echo unknown)"
    echo "build: $build"
} >"$out/machine.txt"
"$build/examples/detection/framepipe-bench-sampling" --out "$out" \
    "$data/vtest.avi" "$data/Megamind.avi" "$data/tree.avi"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"

# Savings against event recall, one point per strategy and setting (pooled over the clips).
cat >"$out/sampling.gp" <<GP
set terminal pngcairo size 1100,700 font ",11" noenhanced
set output "sampling.png"
set title "Sampling: compute saving against event recall (HOG on every frame is the reference; vtest + Megamind + tree)"
set xlabel "saving: frames in / frames sent to the detector (log)"
set ylabel "recall against HOG on every frame"
set logscale x
set xrange [0.8:300]
set yrange [0:1.05]
set grid
set key top right
plot "sampling.dat" using 2:3 with points pt 7 ps 1.5 title "event recall", \
     "sampling.dat" using 2:4 with points pt 4 ps 1.3 title "box recall @0.5", \
     "sampling.dat" using 2:(\$3+\$5):1 with labels offset 0.8,0 left font ",9" notitle, \
     "sampling_labels.dat" using 1:2:3 with labels left font ",9" notitle
GP
(cd "$out" && gnuplot sampling.gp)

# The table into the doc, between the markers.
python3 - "$doc" "$out" <<'PY'
import pathlib, sys
doc, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
text = doc.read_text()
begin, end = "<!-- sampling-table:begin -->", "<!-- sampling-table:end -->"
if begin not in text or end not in text:
    sys.exit(f"run.sh: {doc} has no {begin} ... {end} markers")
table = (out / "table.md").read_text() + "\nPer clip:\n" + (out / "per_clip.md").read_text()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
doc.write_text(head + begin + "\n" + table + "\n" + end + tail)
PY
echo "run.sh: $out/table.md, $out/sampling.png; docs/sampling.md updated"

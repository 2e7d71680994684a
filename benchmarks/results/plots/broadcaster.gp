set terminal pngcairo size 1200,520 font ",10" noenhanced
set output "/tmp/bench37/benchmarks/results/plots/broadcaster.png"
set grid ytics
set key outside right top
set multiplot layout 1,2
set logscale xy 2
set xlabel 'subscribers K'
set ylabel 'ns per publish'
set key inside top left font ',8'
set title "broadcaster: publish cost, 8B (lower is better)"
plot "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:2 with linespoints lw 2 title "Kx.boost.spsc_queue.shared_ptr", "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:3 with linespoints lw 2 title "Kx.boost.spsc_queue.value", "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:4 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.shared_ptr", "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:5 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.value", "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:6 with linespoints lw 2 title "framepipe.broadcaster", "/tmp/bench37/benchmarks/results/plots/broadcaster_8B.dat" using 1:7 with linespoints lw 2 title "tbb.broadcast_node"
set title "broadcaster: publish cost, 64B (lower is better)"
plot "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:2 with linespoints lw 2 title "Kx.boost.spsc_queue.shared_ptr", "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:3 with linespoints lw 2 title "Kx.boost.spsc_queue.value", "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:4 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.shared_ptr", "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:5 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.value", "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:6 with linespoints lw 2 title "framepipe.broadcaster", "/tmp/bench37/benchmarks/results/plots/broadcaster_64B.dat" using 1:7 with linespoints lw 2 title "tbb.broadcast_node"
unset multiplot

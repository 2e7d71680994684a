set terminal pngcairo size 1200,520 font ",10" noenhanced
set output "broadcaster.png"
set grid ytics
set key outside right top
set multiplot layout 1,2
set logscale xy 2
set xlabel 'subscribers K'
set ylabel 'ns per publish'
set key inside top left font ',8'
set title "broadcaster: publish cost, 8B (lower is better)"
plot "broadcaster_8B.dat" using 1:2 with linespoints lw 2 title "Kx.boost.spsc_queue.shared_ptr", "broadcaster_8B.dat" using 1:3 with linespoints lw 2 title "Kx.boost.spsc_queue.value", "broadcaster_8B.dat" using 1:4 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.shared_ptr", "broadcaster_8B.dat" using 1:5 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.value", "broadcaster_8B.dat" using 1:6 with linespoints lw 2 title "framepipe.broadcaster", "broadcaster_8B.dat" using 1:7 with linespoints lw 2 title "tbb.broadcast_node"
set title "broadcaster: publish cost, 64B (lower is better)"
plot "broadcaster_64B.dat" using 1:2 with linespoints lw 2 title "Kx.boost.spsc_queue.shared_ptr", "broadcaster_64B.dat" using 1:3 with linespoints lw 2 title "Kx.boost.spsc_queue.value", "broadcaster_64B.dat" using 1:4 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.shared_ptr", "broadcaster_64B.dat" using 1:5 with linespoints lw 2 title "Kx.moodycamel.ReaderWriterQueue.value", "broadcaster_64B.dat" using 1:6 with linespoints lw 2 title "framepipe.broadcaster", "broadcaster_64B.dat" using 1:7 with linespoints lw 2 title "tbb.broadcast_node"
unset multiplot

set terminal pngcairo size 1300,1100 font ",10" noenhanced
set output "policies_age_30fps.png"
set grid ytics
set key outside right top
set multiplot layout 3,2 title "drop policies at 30 fps: age of the result (capture -> end of processing) against load"
set logscale xy
set xtics (0.5, 1, 2, 10)
set xlabel 'mean service time / frame interval'
set ylabel 'ms'
set key inside top left font ',8'
set title "fixed service time: age p50"
plot "policies_30_fixed.dat" using 1:2 with linespoints lw 2 title "latest_slot", "policies_30_fixed.dat" using 1:4 with linespoints lw 2 title "drop_oldest/2", "policies_30_fixed.dat" using 1:6 with linespoints lw 2 title "drop_oldest/4", "policies_30_fixed.dat" using 1:8 with linespoints lw 2 title "drop_oldest/8", "policies_30_fixed.dat" using 1:10 with linespoints lw 2 title "drop_newest/4", "policies_30_fixed.dat" using 1:12 with linespoints lw 2 title "block/4", "policies_30_fixed.dat" using 1:14 with linespoints lw 2 title "block_then_drop/4", "policies_30_fixed.dat" using 1:16 with linespoints lw 2 title "unbounded"
set title "fixed service time: age p99"
plot "policies_30_fixed.dat" using 1:3 with linespoints lw 2 title "latest_slot", "policies_30_fixed.dat" using 1:5 with linespoints lw 2 title "drop_oldest/2", "policies_30_fixed.dat" using 1:7 with linespoints lw 2 title "drop_oldest/4", "policies_30_fixed.dat" using 1:9 with linespoints lw 2 title "drop_oldest/8", "policies_30_fixed.dat" using 1:11 with linespoints lw 2 title "drop_newest/4", "policies_30_fixed.dat" using 1:13 with linespoints lw 2 title "block/4", "policies_30_fixed.dat" using 1:15 with linespoints lw 2 title "block_then_drop/4", "policies_30_fixed.dat" using 1:17 with linespoints lw 2 title "unbounded"
set title "lognormal service time: age p50"
plot "policies_30_lognormal.dat" using 1:2 with linespoints lw 2 title "latest_slot", "policies_30_lognormal.dat" using 1:4 with linespoints lw 2 title "drop_oldest/2", "policies_30_lognormal.dat" using 1:6 with linespoints lw 2 title "drop_oldest/4", "policies_30_lognormal.dat" using 1:8 with linespoints lw 2 title "drop_oldest/8", "policies_30_lognormal.dat" using 1:10 with linespoints lw 2 title "drop_newest/4", "policies_30_lognormal.dat" using 1:12 with linespoints lw 2 title "block/4", "policies_30_lognormal.dat" using 1:14 with linespoints lw 2 title "block_then_drop/4", "policies_30_lognormal.dat" using 1:16 with linespoints lw 2 title "unbounded"
set title "lognormal service time: age p99"
plot "policies_30_lognormal.dat" using 1:3 with linespoints lw 2 title "latest_slot", "policies_30_lognormal.dat" using 1:5 with linespoints lw 2 title "drop_oldest/2", "policies_30_lognormal.dat" using 1:7 with linespoints lw 2 title "drop_oldest/4", "policies_30_lognormal.dat" using 1:9 with linespoints lw 2 title "drop_oldest/8", "policies_30_lognormal.dat" using 1:11 with linespoints lw 2 title "drop_newest/4", "policies_30_lognormal.dat" using 1:13 with linespoints lw 2 title "block/4", "policies_30_lognormal.dat" using 1:15 with linespoints lw 2 title "block_then_drop/4", "policies_30_lognormal.dat" using 1:17 with linespoints lw 2 title "unbounded"
set title "stalls service time: age p50"
plot "policies_30_stalls.dat" using 1:2 with linespoints lw 2 title "latest_slot", "policies_30_stalls.dat" using 1:4 with linespoints lw 2 title "drop_oldest/2", "policies_30_stalls.dat" using 1:6 with linespoints lw 2 title "drop_oldest/4", "policies_30_stalls.dat" using 1:8 with linespoints lw 2 title "drop_oldest/8", "policies_30_stalls.dat" using 1:10 with linespoints lw 2 title "drop_newest/4", "policies_30_stalls.dat" using 1:12 with linespoints lw 2 title "block/4", "policies_30_stalls.dat" using 1:14 with linespoints lw 2 title "block_then_drop/4", "policies_30_stalls.dat" using 1:16 with linespoints lw 2 title "unbounded"
set title "stalls service time: age p99"
plot "policies_30_stalls.dat" using 1:3 with linespoints lw 2 title "latest_slot", "policies_30_stalls.dat" using 1:5 with linespoints lw 2 title "drop_oldest/2", "policies_30_stalls.dat" using 1:7 with linespoints lw 2 title "drop_oldest/4", "policies_30_stalls.dat" using 1:9 with linespoints lw 2 title "drop_oldest/8", "policies_30_stalls.dat" using 1:11 with linespoints lw 2 title "drop_newest/4", "policies_30_stalls.dat" using 1:13 with linespoints lw 2 title "block/4", "policies_30_stalls.dat" using 1:15 with linespoints lw 2 title "block_then_drop/4", "policies_30_stalls.dat" using 1:17 with linespoints lw 2 title "unbounded"
unset multiplot

set terminal pngcairo size 1300,520 font ",10" noenhanced
set output "policies_drops.png"
set grid ytics
set key outside right top
set multiplot layout 1,2 title 'drop policies, 30 fps, lognormal service time'
set logscale x
set xtics (0.5, 1, 2, 10)
set xlabel 'mean service time / frame interval'
set key inside top left font ',8'
set ylabel 'dropped %'
set title 'frames dropped'
plot "policies_drops.dat" using 1:2 with linespoints lw 2 title "latest_slot", "policies_drops.dat" using 1:4 with linespoints lw 2 title "drop_oldest/2", "policies_drops.dat" using 1:6 with linespoints lw 2 title "drop_oldest/4", "policies_drops.dat" using 1:8 with linespoints lw 2 title "drop_oldest/8", "policies_drops.dat" using 1:10 with linespoints lw 2 title "drop_newest/4", "policies_drops.dat" using 1:12 with linespoints lw 2 title "block/4", "policies_drops.dat" using 1:14 with linespoints lw 2 title "block_then_drop/4", "policies_drops.dat" using 1:16 with linespoints lw 2 title "unbounded"
set ylabel 'fps'
set title 'frames processed per second'
plot "policies_drops.dat" using 1:3 with linespoints lw 2 title "latest_slot", "policies_drops.dat" using 1:5 with linespoints lw 2 title "drop_oldest/2", "policies_drops.dat" using 1:7 with linespoints lw 2 title "drop_oldest/4", "policies_drops.dat" using 1:9 with linespoints lw 2 title "drop_oldest/8", "policies_drops.dat" using 1:11 with linespoints lw 2 title "drop_newest/4", "policies_drops.dat" using 1:13 with linespoints lw 2 title "block/4", "policies_drops.dat" using 1:15 with linespoints lw 2 title "block_then_drop/4", "policies_drops.dat" using 1:17 with linespoints lw 2 title "unbounded"
unset multiplot

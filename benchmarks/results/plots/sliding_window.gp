set terminal pngcairo size 1100,520 font ",10" noenhanced
set output "sliding_window.png"
set grid ytics
set key outside right top
set title "sliding_window: push and snapshot cost, 8B (lower is better)"
set ylabel "ns per operation"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 30 right nomirror
set bmargin 9
set yrange [0:*]
set logscale y
set yrange [*:*]
plot "sliding_window.dat" using 2:xtic(1) title "N=4", '' using 3:xtic(1) title "N=30", '' using 4:xtic(1) title "N=64"

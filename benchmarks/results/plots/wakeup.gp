set terminal pngcairo size 1100,520 font ",10" noenhanced
set output "wakeup.png"
set grid ytics
set key outside right top
set title "blocking wake-up: ping-pong round trip, median (lower is better)"
set ylabel "us per round trip (2 wake-ups)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 30 right nomirror
set bmargin 9
set yrange [0:*]
plot "wakeup.dat" using 2:xtic(1) title "8B", '' using 3:xtic(1) title "64B"

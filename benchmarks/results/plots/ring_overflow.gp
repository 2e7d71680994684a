set terminal pngcairo size 1100,520 font ",10" noenhanced
set output "ring_overflow.png"
set grid ytics
set key outside right top
set title "ring: drop-oldest push cost, 8B, capacity 8 (lower is better)"
set ylabel "ns per push (mean)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 30 right nomirror
set bmargin 9
set yrange [0:*]
plot "ring_overflow.dat" using 2:xtic(1) title "0.5x (no overflow)", '' using 3:xtic(1) title "2x", '' using 4:xtic(1) title "10x"

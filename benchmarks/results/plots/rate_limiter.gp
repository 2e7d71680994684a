set terminal pngcairo size 1100,520 font ",10" noenhanced
set output "rate_limiter.png"
set grid ytics
set key outside right top
set title "rate_limiter: try_acquire (lower is better)"
set ylabel "ns per call"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 30 right nomirror
set bmargin 9
set yrange [0:*]
plot "rate_limiter.dat" using 2:xtic(1) title "admit, 1 thread", '' using 3:xtic(1) title "reject, 1 thread", '' using 4:xtic(1) title "admit, 2 threads", '' using 5:xtic(1) title "reject, 2 threads"

set terminal pngcairo size 1500,900 font ",10" noenhanced
set output "goals.png"
set grid ytics
set key outside right top
set title "goal attainment: target / measured (>= 1 means the goal is met)"
set ylabel "attainment (log)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 30 right nomirror
set bmargin 20
set lmargin 24
set xtics font ',8'
unset key
set yrange [0:*]
set logscale y
set yrange [*:*]
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb 'red'
plot "goals.dat" using 2:xtic(1) title "attainment"

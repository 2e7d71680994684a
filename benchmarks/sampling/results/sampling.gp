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
plot "sampling.dat" using 2:3 with points pt 7 ps 1.5 title "event recall",      "sampling.dat" using 2:4 with points pt 4 ps 1.3 title "box recall @0.5",      "sampling.dat" using 2:($3+$5):1 with labels offset 0.8,0 left font ",9" notitle,      "sampling_labels.dat" using 1:2:3 with labels left font ",9" notitle

#!/usr/bin/env python3
"""benchmarks/compare_runs.py - two scripts/bench runs side by side.

    python3 benchmarks/compare_runs.py RESULTS_A RESULTS_B [--label-a A] [--label-b B]

RESULTS_A and RESULTS_B are results directories (benchmarks/results of each run, with
goals.json and summary.json). Prints Markdown: every goal with its measured ratio (framepipe /
peer in the metric's own terms) in both runs and whether it was met; then the two-thread
throughput rows of summary.json with framepipe's own figure in both runs and the spread between
them (B / A - 1), which is what the "repeatable to within +-15 %" criterion looks at.
"""

import argparse
import json
import os


def load(d, name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


def cell(goal):
    if goal is None:
        return "-"
    parts = []
    for m in goal["measured"]:
        parts.append(f'{m["payload"]} {m["natural"]:.2f}x{"" if m["met"] else " (missed)"}')
    return ", ".join(parts) or "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--label-a", default="run A")
    ap.add_argument("--label-b", default="run B")
    args = ap.parse_args()

    ga = {(g["block"], g["goal"]): g for g in load(args.a, "goals.json")}
    gb = {(g["block"], g["goal"]): g for g in load(args.b, "goals.json")}
    met_a = sum(g["met"] for g in ga.values())
    met_b = sum(g["met"] for g in gb.values())
    print(f"| block | goal | {args.label_a} ({met_a} of {len(ga)} met) | "
          f"{args.label_b} ({met_b} of {len(gb)} met) |")
    print("|---|---|---|---|")
    for key in list(ga) + [k for k in gb if k not in ga]:
        print(f"| {key[0]} | {key[1]} | {cell(ga.get(key))} | {cell(gb.get(key))} |")

    sa = {r["scenario"].split(" [")[0]: r for r in load(args.a, "summary.json")}
    sb = {r["scenario"].split(" [")[0]: r for r in load(args.b, "summary.json")}
    print()
    print(f"| case (two threads or more) | unit | {args.label_a} | {args.label_b} | spread |")
    print("|---|---|---|---|---|")
    for name, ra in sa.items():
        if not any(w in name for w in ("SPSC throughput", "MPMC 2 producers", "SPSC round trip")):
            continue
        rb = sb.get(name)
        if rb is None:
            continue
        spread = rb["framepipe"] / ra["framepipe"] - 1 if ra["framepipe"] else float("nan")
        flag = "" if abs(spread) <= 0.15 else " **(> 15 %)**"
        print(f'| {name} | {ra["unit"]} | {ra["framepipe"]:.3g} | {rb["framepipe"]:.3g} | '
              f'{spread:+.0%}{flag} |')


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""benchmarks/compare_runs.py - two scripts/bench runs side by side.

    python3 benchmarks/compare_runs.py RESULTS_A RESULTS_B [--label-a A] [--label-b B]

RESULTS_A and RESULTS_B are results directories (benchmarks/results of each run, with
goals.json and summary.json). Prints Markdown: every goal with its measured ratio (framepipe /
peer in the metric's own terms) in both runs and whether it was met; then the two-thread
throughput rows of summary.json with framepipe's own figure in both runs and the spread between
them (B / A - 1), which is what the "repeatable to within +-15 %" criterion looks at; then, where
both runs have modes.json (bench_ring's two-thread cases run in several processes), each case's
modes in both runs, and whether every mode of one run has one in the other within +-15 %.
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

    if not all(os.path.exists(os.path.join(d, "modes.json")) for d in (args.a, args.b)):
        return
    ma = {(r["scenario"], r["payload"], r["implementation"]): r for r in load(args.a, "modes.json")}
    mb = {(r["scenario"], r["payload"], r["implementation"]): r for r in load(args.b, "modes.json")}
    print()
    print(f"| case across processes (ns an iteration) | {args.label_a}: modes x processes | "
          f"{args.label_b}: modes x processes | the largest modes' spread | "
          f"every mode within +-15 % of one in the other run |")
    print("|---|---|---|---|---|")
    for key, ra in ma.items():
        rb = mb.get(key)
        if rb is None:
            continue
        matched = (all(has_match(m, rb["modes"]) for m in ra["modes"])
                   and all(has_match(m, ra["modes"]) for m in rb["modes"]))
        spread = largest(rb)["ns"] / largest(ra)["ns"] - 1
        flag = "" if abs(spread) <= 0.15 else " **(> 15 %)**"
        print(f'| {" ".join(key)} | {modes_cell(ra)} | {modes_cell(rb)} | {spread:+.0%}{flag} | '
              f'{"yes" if matched else "**no**"} |')


def modes_cell(row):
    return "; ".join(f'{m["ns"]:.3g} x {m["processes"]}' for m in row["modes"])


def largest(row):
    """The mode most processes had (the faster one on a tie)."""
    return max(row["modes"], key=lambda m: (m["processes"], -m["ns"]))


def has_match(mode, others):
    return any(abs(o["ns"] / mode["ns"] - 1) <= 0.15 for o in others)


if __name__ == "__main__":
    main()

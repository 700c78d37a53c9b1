#!/usr/bin/env python3
"""Runs `shardline replay --json` over CSV series and tabulates issue 20's goal.

Usage:
  replay_table.py run BINARY OUTDIR CSV... [-- EXTRA ARGS]   one JSON per series into OUTDIR
  replay_table.py table BEFORE_DIR AFTER_DIR                  a markdown table, before → after

Per series: whether the goal is met (predictive ≤ ½ reactive's overload_seconds, ≤ 1.1 × its
shard_seconds, ≤ 1.3 × the oracle's), and the predictive/reactive overload and shard-seconds
ratios and the predictive/oracle shard-seconds ratio.
"""
import json
import os
import subprocess
import sys


def run(binary, outdir, csvs, extra):
    os.makedirs(outdir, exist_ok=True)
    for csv in csvs:
        name = os.path.splitext(os.path.basename(csv))[0]
        out = subprocess.run([binary, "replay", "--csv", csv, "--json", *extra],
                             check=True, capture_output=True, text=True).stdout
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            f.write(out)


def ratio(a, b):
    if b == 0:
        return "0/0" if a == 0 else "∞"
    return f"{a / b:.2f}"


def facts(report):
    c = report["controllers"]
    p, r, o = c["predictive"], c["reactive"], c["oracle"]
    met = (p["overload_seconds"] <= 0.5 * r["overload_seconds"]
           and p["shard_seconds"] <= 1.1 * r["shard_seconds"]
           and p["shard_seconds"] <= 1.3 * o["shard_seconds"])
    return {
        "met": met,
        "over": f'{p["overload_seconds"]:.0f}/{r["overload_seconds"]:.0f}',
        "over_ratio": ratio(p["overload_seconds"], r["overload_seconds"]),
        "shard_ratio": ratio(p["shard_seconds"], r["shard_seconds"]),
        "oracle_ratio": ratio(p["shard_seconds"], o["shard_seconds"]),
    }


def table(before_dir, after_dir):
    names = sorted(f[:-5] for f in os.listdir(after_dir) if f.endswith(".json"))
    print("| series | goal | overload s pred/react | overload ratio p/r | shard-s ratio p/r | shard-s ratio p/oracle |")
    print("|---|---|---|---|---|---|")
    met = [0, 0]
    for name in names:
        rows = []
        for i, d in enumerate((before_dir, after_dir)):
            with open(os.path.join(d, name + ".json")) as f:
                rows.append(facts(json.load(f)))
            met[i] += rows[-1]["met"]
        b, a = rows
        yn = lambda x: "met" if x else "no"
        print(f'| {name} | {yn(b["met"])} → **{yn(a["met"])}** | {b["over"]} → {a["over"]} '
              f'| {b["over_ratio"]} → {a["over_ratio"]} | {b["shard_ratio"]} → {a["shard_ratio"]} '
              f'| {b["oracle_ratio"]} → {a["oracle_ratio"]} |')
    print(f"\ngoal met on {met[0]} → {met[1]} of {len(names)}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        args = sys.argv[4:]
        extra = args[args.index("--") + 1:] if "--" in args else []
        csvs = args[:args.index("--")] if "--" in args else args
        run(sys.argv[2], sys.argv[3], csvs, extra)
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

#!/usr/bin/env python3
"""Summarises Nsight Compute's source page (`ncu -i REPORT --page source --csv --print-source sass`),
as `scripts/gpu/run.sh profile-source` writes it: for each kernel, its stall samples by reason, its
regions (runs of consecutive SASS lines executed equally often: loop bodies and phases) with their
share of samples and instructions, and its hottest instructions.

Usage: sass_summary.py SASS.csv [--top N] [--kernel SUBSTRING]
"""
import argparse
import collections
import csv


def kernels(path):
    """Yields (kernel name, header, rows) for each kernel block of the CSV."""
    name, header, rows = None, None, []
    for row in csv.reader(open(path)):
        if not row:
            continue
        if row[0] == "Kernel Name":
            if header:
                yield name, header, rows
            name, header, rows = row[1], None, []
        elif row[0] == "Address":
            header = row
        elif header:
            rows.append(row)
    if header:
        yield name, header, rows


def number(text):
    return int(float(text.replace(",", ""))) if text and text not in ("-", "") else 0


def summarise(name, header, rows, top):
    column = {key: i for i, key in enumerate(header)}
    stalls = [key for key in header if key.startswith("stall_") and "Not Issued" not in key]
    lines = []
    for row in rows:
        lines.append({
            "address": row[column["Address"]][-6:],
            "source": row[column["Source"]].strip(),
            "executed": number(row[column["Instructions Executed"]]),
            "samples": number(row[column["Warp Stall Sampling (All Samples)"]]),
            "stalls": {key[6:]: number(row[column[key]]) for key in stalls},
        })
    executed = sum(line["executed"] for line in lines) or 1
    samples = sum(line["samples"] for line in lines) or 1
    print(f"\n== {name}\n{executed / 1e6:.1f} M warp instructions, {samples} stall samples")
    by_reason = collections.Counter()
    for line in lines:
        by_reason.update(line["stalls"])
    print("  " + ", ".join(f"{reason} {count / samples:.0%}" for reason, count in by_reason.most_common(8)))

    regions = []
    for line in lines:
        if regions and regions[-1]["count"] == line["executed"]:
            region = regions[-1]
        else:
            region = {"start": line["address"], "count": line["executed"], "lines": 0, "samples": 0,
                      "executed": 0, "stalls": collections.Counter()}
            regions.append(region)
        region["lines"] += 1
        region["samples"] += line["samples"]
        region["executed"] += line["executed"]
        region["stalls"].update(line["stalls"])
    print("  regions with ≥ 1% of the samples (first address, times executed, lines):")
    for region in regions:
        if region["samples"] < 0.01 * samples:
            continue
        reasons = ", ".join(f"{reason} {count / region['samples']:.0%}"
                            for reason, count in region["stalls"].most_common(3))
        print(f"  {region['start']} ×{region['count']:<9} {region['lines']:4d} lines: "
              f"{region['samples'] / samples:5.1%} of samples, {region['executed'] / executed:5.1%} of "
              f"instructions ({reasons})")
    print(f"  hottest {top} instructions:")
    for line in sorted(lines, key=lambda line: -line["samples"])[:top]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in
                            sorted(line["stalls"].items(), key=lambda item: -item[1])[:2] if count)
        print(f"  {line['address']} {line['samples']:6d}  {line['source'][:56]:56s} {reasons}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--kernel", default="")
    args = parser.parse_args()
    seen = set()
    for name, header, rows in kernels(args.csv):
        # ncu writes each kernel's page twice when several sections hold source counters.
        if args.kernel not in name or (name, len(rows)) in seen:
            continue
        seen.add((name, len(rows)))
        summarise(name, header, rows, args.top)


if __name__ == "__main__":
    main()

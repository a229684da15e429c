"""Per-kernel time table from `ncu --metrics gpu__time_duration.sum --csv` output (serialised
kernels, so without launch overlap).

Usage: ncu_kernel_table.py CSV LABEL --steps N
           every kernel in the file, totals divided by N (the file holds N steps)
       ncu_kernel_table.py CSV LABEL --segment NAME K
           one step only: the K-th (from 1) run of kernels that begins at a kernel whose name
           contains NAME and ends before the next such kernel
"""
import collections
import csv
import sys

UNIT_US = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3}


def short_name(name):
    """Without the return type and this project's namespaces, which every kernel of ours shares."""
    for prefix in ('void ', 'mamba::ops::', '(anonymous namespace)::', 'cuda_detail::'):
        name = name[len(prefix):] if name.startswith(prefix) else name
    return name


def kernel_times(path):
    """(name, µs) of each kernel, in launch order."""
    rows = csv.DictReader(line for line in open(path) if line.startswith('"'))
    return [(r['Kernel Name'], float(r['Metric Value'].replace(',', '')) * UNIT_US[r['Metric Unit']])
            for r in rows if r.get('Metric Name') == 'gpu__time_duration.sum']


def main():
    path, label, mode = sys.argv[1:4]
    times = kernel_times(path)
    if mode == '--steps':
        steps = int(sys.argv[4])
    else:
        marker, which = sys.argv[4], int(sys.argv[5])
        starts = [i for i, (name, _) in enumerate(times) if marker in name] + [len(times)]
        if len(starts) <= which:
            sys.exit(f"{path}: fewer than {which} runs starting at a kernel named *{marker}*")
        times = times[starts[which - 1]:starts[which]]
        steps = 1
    per = collections.OrderedDict()
    for name, us in times:
        per.setdefault(short_name(name)[:60], []).append(us)
    total = sum(us for _, us in times)
    print(f"\n{label}: {len(times)} kernels in {steps} step(s), {total / steps:.1f} us per step (serialised)")
    for name, v in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {sum(v) / steps:8.1f} us/step  {len(v) // steps:4d} x  mean {sum(v) / len(v):6.2f} us  {name}")


main()

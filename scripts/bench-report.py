#!/usr/bin/python3
"""Turns one bench run (scripts/bench-guest.sh output) into results.

    scripts/bench-report.py RAW_DIR PREFIX
    scripts/bench-report.py --merge PREFIX RESULT.json RESULT.json...

writes PREFIX.json (run description and every raw fio result), PREFIX.md
(each figure as a ratio to local dm-linear at the same RTT, and the targets
of issue 6), PREFIX-latency.png and PREFIX-throughput.png. Needs Debian's
python3-matplotlib (scripts/deps.sh).
"""
import json
import os
import re
import sys

# As scripts/vm.sh: what counts as a kernel splat in a guest's log.
SPLAT = re.compile(r"WARNING:|BUG:|Oops|KASAN|kernel BUG|general protection fault|Kernel panic|"
                   r"soft lockup|INFO: task .* blocked|rcu_sched self-detected stall")

SYSTEMS = [
    ("local", "local dm-linear"),
    ("spec-async", "specmirror speculative, async"),
    ("spec-sync", "specmirror speculative, sync"),
    ("lock-sync", "specmirror lock-sync, sync"),
    ("drbd-A", "DRBD 8.4 protocol A"),
    ("drbd-C", "DRBD 8.4 protocol C"),
    ("dm-mirror", "dm-mirror + NBD leg"),
]
NAMES = dict(SYSTEMS)
# (key, workload, field, title, unit, scale, higher_is_better)
FIGURES = [
    ("qd1_mean", "qd1", "lat_mean_ns", "4k random write, QD1, mean latency", "ms", 1e-6, False),
    ("qd1_p50", "qd1", "lat_p50_ns", "4k random write, QD1, p50 latency", "ms", 1e-6, False),
    ("qd1_p99", "qd1", "lat_p99_ns", "4k random write, QD1, p99 latency", "ms", 1e-6, False),
    ("qd32_iops", "qd32", "iops", "4k random write, QD32, throughput", "IOPS", 1, True),
    ("seq_mbs", "seq", "bw_bytes", "1M sequential write, QD8, throughput", "MB/s", 1e-6, True),
    ("qd32_cpu", "qd32", "cpu_s_per_gib", "4k random write, QD32, guest CPU seconds per GiB written", "s/GiB", 1,
     False),
    ("seq_cpu", "seq", "cpu_s_per_gib", "1M sequential write, QD8, guest CPU seconds per GiB written", "s/GiB", 1,
     False),
    ("qd32_pkts", "qd32", "tx_pkts_per_mib", "4k random write, QD32, packets the primary sent per MiB written",
     "pkts/MiB", 1, False),
    ("seq_pkts", "seq", "tx_pkts_per_mib", "1M sequential write, QD8, packets the primary sent per MiB written",
     "pkts/MiB", 1, False),
    ("seq_link", "seq", "link_bytes_s", "1M sequential write, QD8, bytes per second the primary put on its link",
     "MB/s", 1e-6, True),
]


def rate_bytes(rate):
    """netem's rate ("100mbit", "1gbit", "500kbit") in bytes per second."""
    m = re.fullmatch(r"([0-9.]+)([kmg]?)bit", (rate or "").lower())
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8
# A figure counts only when it has MIN_REPS repetitions that agree:
# (max - min) / median at most MAX_SPREAD.
MIN_REPS = 3
MAX_SPREAD = 0.10


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def fmt_abs(v, unit):
    if unit == "s/GiB":
        return f"{v:.1f} s/GiB"
    if unit == "IOPS":
        return f"{v:,.0f} IOPS"
    if unit == "ms":
        if v < 1:
            return f"{v * 1000:.0f} µs"
        return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"
    return f"{v:.1f} {unit}"


def load_raw(raw):
    """The run description and every result of one scripts/bench.sh run."""
    host = json.load(open(os.path.join(raw, "host.json")))
    boots = sorted((d for d in os.listdir(raw) if d.startswith("boot")), key=lambda d: int(d[4:]))
    guest, runs, extra, vms = None, [], {}, []
    for b in boots:
        bdir = os.path.join(raw, b)
        n = int(b[4:])
        info = json.load(open(os.path.join(bdir, "boot.json")))
        log = open(os.path.join(bdir, "vm.log"), errors="replace").read() if os.path.exists(
            os.path.join(bdir, "vm.log")) else ""
        # A failed VM keeps the end of its log (the splat); a good one a few lines.
        info["log_tail"] = log[-12000:] if info["vm_exit_status"] else log[-1500:]
        vms.append(info)
        if guest is None and os.path.exists(os.path.join(bdir, "guest.json")):
            guest = json.load(open(os.path.join(bdir, "guest.json")))
        if os.path.exists(os.path.join(bdir, "runs.jsonl")):
            for l in open(os.path.join(bdir, "runs.jsonl")):
                if l.strip():
                    r = json.loads(l)
                    r["boot"] = n
                    if "fio" in r:
                        r["fio"] = f"{b}/{r['fio']}"
                        r["fio_json"] = json.load(open(os.path.join(bdir, "raw", r["fio"].split("/", 1)[1])))
                    runs.append(r)
        rawdir = os.path.join(bdir, "raw")
        for d in sorted(os.listdir(rawdir)) if os.path.isdir(rawdir) else []:
            files = {}
            for f in sorted(os.listdir(os.path.join(rawdir, d))):
                if not f.endswith(".json"):
                    files[f] = open(os.path.join(rawdir, d, f), errors="replace").read()
            extra[f"{b}/{d}"] = files
    return {"host": host, "guest": guest, "vms": vms, "runs": runs, "setup": extra}


def merge(docs):
    """Several runs as one: their VM boots numbered on (every ratio stays
    within one boot), each run's host description kept under "parts"."""
    out = {"host": dict(docs[0]["host"]), "guest": docs[0]["guest"], "vms": [], "runs": [],
           "setup": {}, "parts": []}
    base = 0
    for d in docs:
        h = d.get("parts") or [d["host"]]
        out["parts"] += h
        for v in d["vms"]:
            out["vms"].append(dict(v, boot=v["boot"] + base))
        for r in d["runs"]:
            out["runs"].append(dict(r, boot=r["boot"] + base))
        for k, v in d["setup"].items():
            b, rest = k.split("/", 1)
            out["setup"][f"boot{int(b[4:]) + base}/{rest}"] = v
        base += max([v["boot"] for v in d["vms"]] or [0])
    hs = out["parts"]
    out["host"].update(
        timestamp=max(h["timestamp"] for h in hs),
        git_dirty=any(h["git_dirty"] for h in hs),
        load_before=", ".join(h["load_before"] for h in hs),
        load_after=", ".join(h["load_after"] for h in hs),
        qemu_processes_before=max(h["qemu_processes_before"] for h in hs))
    # Scripts may differ between the runs; the kernel and module may not.
    if (len({h["kernel_build"] for h in hs}) > 1
            or len({d["guest"]["module"]["sha256"] for d in docs}) > 1):
        sys.exit("bench-report: the runs to merge differ in kernel or module")
    out["host"]["git_commit"] = " + ".join(dict.fromkeys(h["git_commit"][:7] for h in hs))
    return out


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--merge":
        prefix = sys.argv[2]
        doc = merge([json.load(open(f)) for f in sys.argv[3:]])
    elif len(sys.argv) == 3:
        prefix = sys.argv[2]
        doc = load_raw(sys.argv[1])
    else:
        sys.exit(__doc__)
    with open(prefix + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    render(doc, prefix)


def render(doc, prefix):
    host, guest, vms, runs = doc["host"], doc["guest"], doc["vms"], doc["runs"]
    parts = doc.get("parts", [host])
    rtts = sorted({r["rtt_ms"] for r in runs})
    systems = [s for s, _ in SYSTEMS if any(r["system"] == s for r in runs)]

    def reps(sysname, rtt, wl, field, boot=None):
        """The repetitions of a figure (rows with a value), and why none."""
        rs = [r for r in runs if r["system"] == sysname and r["rtt_ms"] == rtt
              and r.get("workload", wl) == wl and (boot is None or r["boot"] == boot)]
        if not rs:
            return [], "not run"
        good = [r for r in rs if "error" not in r and r.get(field)]
        if not good:
            err = next((r["error"] for r in rs if "error" in r), None)
            return [], "not measured: " + err if err else "not measured: no value"
        return good, None

    def spread(sysname, rtt, wl, field):
        """(max - min) / median of the repetitions, and their number."""
        good, _ = reps(sysname, rtt, wl, field)
        if not good:
            return None, 0
        vs = [r[field] for r in good]
        m = median(vs)
        return ((max(vs) - min(vs)) / m if m else None), len(vs)

    def value(sysname, rtt, wl, field):
        """(median of the repetitions, its ratio to local's median in the
        same VM, why not)"""
        good, why = reps(sysname, rtt, wl, field)
        if not good:
            return None, None, why
        v = median([r[field] for r in good])
        base, _ = reps("local", rtt, wl, field, boot=good[0]["boot"])
        b = median([r[field] for r in base]) if base else None
        return v, (v / b if b else None), None

    ts = host["timestamp"]
    md = [f"# Benchmark {ts}", ""]
    load = (f"host load {host['load_before']} before, {host['load_after']} after; "
            f"{host['qemu_processes_before']} qemu processes of other users running at the start")
    if len(parts) > 1:
        load = (f"made of {len(parts)} `make bench` runs ({', '.join(p['timestamp'] for p in parts)}; "
                f"RTTs split between them) of the same commit and kernel; " + load)
    md += [
        f"Release kernel {host['kernel_release']} under TCG, {host['vm']['cpus']} vCPUs, "
        f"{host['vm']['memory']}; scripts at commit {host['git_commit'][:15]}"
        f"{' (dirty tree)' if host['git_dirty'] else ''}, module {host.get('module_path', 'of that tree')} "
        f"(sha256 {guest['module']['sha256'][:12]}); "
        f"{'QUICK pass, ' if guest['quick'] else ''}fio {guest['runtime_s']} s per run after "
        f"{guest['ramp_s']} s ramp, --direct=1, libaio; {guest['device_mb']} MiB memory-backed null_blk "
        f"devices, fresh per system; veth with netem RTT/2 on each end. {load}.",
        "",
        "Each cell: the figure as a ratio to local dm-linear at the same RTT (latency and CPU: "
        "lower is better; throughput: higher is better), then the absolute value: the median "
        "of the repetitions, with their spread ((max - min) / median). CPU is the guest's busy "
        "time on all vCPUs (both hosts, the link and fio share them) during fio's measured "
        "part, per GiB written. Absolute "
        "figures under TCG mean little; ratios within this one run are what counts. Latency is "
        "fio's `lat` (submission plus completion: dm-linear over null_blk completes inside "
        "the submission).",
        "",
    ]
    if len(vms) > len(rtts):
        md += [f"{len(vms)} VM boots: one per RTT, plus one after each guest that died; every "
               "ratio is to local dm-linear measured in the same boot.", ""]
    else:
        md += ["One VM boot per RTT; every ratio is to local dm-linear measured in the same boot.", ""]
    if host["qemu_processes_before"]:
        md += ["**Other VMs were running on this 2-core host during the run: the figures are "
               "indicative only.**", ""]
    notes = {}
    for key, wl, field, title, unit, scale, _ in FIGURES:
        if not any(field in r for r in runs):
            continue
        md += [f"## {title}", "", "| system | " + " | ".join(f"RTT {t} ms" for t in rtts) + " |",
               "|---|" + "---|" * len(rtts)]
        for s in systems:
            cells = []
            for t in rtts:
                v, ratio, why = value(s, t, wl, field)
                sp, n = spread(s, t, wl, field)
                rep_note = f", ±{sp * 100:.0f}% over {n}" if n > 1 and sp is not None else ""
                if v is None:
                    cells.append(why if len(why) < 60 else why.split(":")[0] + " (see note)")
                    if len(why) >= 60:
                        notes[(s, why)] = True
                elif ratio is not None:
                    cells.append(f"{ratio:.2f} ({fmt_abs(v * scale, unit)}{rep_note})")
                else:
                    cells.append(f"- ({fmt_abs(v * scale, unit)}{rep_note})")
            md.append(f"| {NAMES[s]} | " + " | ".join(cells) + " |")
        md.append("")

    heads = []

    def not_counted(sps):
        """Why figures with these (spread, repetitions) do not count against
        a target (None: they count): fewer than MIN_REPS repetitions, or
        repetitions more than MAX_SPREAD apart."""
        fewest = min(n for _, n in sps)
        if fewest < MIN_REPS:
            return f"{fewest} repetition{'s' if fewest > 1 else ''}"
        if any(sp is None or sp > MAX_SPREAD for sp, _ in sps):
            return f"repetitions {max(sp or 0 for sp, _ in sps) * 100:.0f}% apart"
        return None

    link = rate_bytes(guest.get("link_rate"))
    if link:
        # The link-bound runs: how much of the physical limit each system
        # used. fio's rate can exceed it (completion async: the ring
        # absorbs writes, or the source runs degraded and resyncs later);
        # the bytes on the link cannot.
        md += [f"## Share of the link rate (netem rate {guest['link_rate']}, {link / 1e6:.1f} MB/s)", "",
               "Bytes per second the primary put on its end of the link (1M writes, QD8), over the link rate; "
               "in brackets fio's write rate over the link rate.", "",
               "| system | " + " | ".join(f"RTT {t} ms" for t in rtts) + " |", "|---|" + "---|" * len(rtts)]
        for s_ in systems:
            cells = []
            for t in rtts:
                v, _, _ = value(s_, t, "seq", "link_bytes_s")
                w, _, _ = value(s_, t, "seq", "bw_bytes")
                sp, n = spread(s_, t, "seq", "link_bytes_s")
                if v is None:
                    cells.append("-" if w is None else f"- (fio {w / link:.2f})")
                else:
                    cells.append(f"{v / link:.2f} (fio {w / link:.2f}; ±{(sp or 0) * 100:.0f}% over {n})")
            md.append(f"| {NAMES[s_]} | " + " | ".join(cells) + " |")
        md.append("")
        for t in rtts:
            v, _, _ = value("spec-async", t, "seq", "link_bytes_s")
            if v is not None:
                sp, n = spread("spec-async", t, "seq", "link_bytes_s")
                ok = "met" if v / link >= 0.9 else "not met"
                counts = " (does not count)" if not_counted([(sp, n)]) else ""
                heads.append(f"RTT {t} ms: spec async share of the {guest['link_rate']} link >= 0.9: "
                             f"{v / link:.2f} {ok}{counts} [spec-async ±{(sp or 0) * 100:.0f}%]")

    def check(label, num, den, wl, field, op, limit, min_rtt=0, headline=True):
        cells = []
        for t in rtts:
            if t < min_rtt:
                cells.append("-")
                continue
            a, _, _ = value(num, t, wl, field)
            b, _, _ = value(den, t, wl, field)
            if a is None or b is None:
                cells.append("not measured")
            else:
                r = a / b
                ok = r >= limit if op == ">=" else r <= limit
                sps = [spread(x, t, wl, field) for x in (num, den)]
                apart = ", ".join(f"{x} ±{sp * 100:.0f}%" for x, (sp, _) in zip((num, den), sps)
                                  if sp is not None)
                why = not_counted(sps)
                if link and not why:
                    # The targets are for runs without a rate limit: at
                    # the link rate a source that pulls ahead (degraded
                    # mode) writes faster than one that blocks.
                    why = f"a {guest['link_rate']} link-rate run"
                if why:
                    cells.append(f"{r:.2f} (does not count: {why})")
                else:
                    cells.append(f"{r:.2f} {'met' if ok else '**not met**'}")
                if headline:
                    heads.append(f"RTT {t} ms: {label}: {cells[-1].replace('**', '')} [{apart}]")
                    continue
            if headline:
                heads.append(f"RTT {t} ms: {label}: {cells[-1]}")
        md.append(f"| {label} | " + " | ".join(cells) + " |")

    # Issue 20's targets: medians of the repetitions, each counting only
    # if both systems' repetitions agree within MAX_SPREAD.
    md += ["## Targets of issue 20", "",
           f"Ratios of medians; a ratio counts only if both systems have at least {MIN_REPS} "
           f"repetitions and they agree within {MAX_SPREAD * 100:.0f}%.", "",
           "| target | " + " | ".join(f"RTT {t} ms" for t in rtts) + " |", "|---|" + "---|" * len(rtts)]
    check("spec async / DRBD A, QD32 IOPS >= 1", "spec-async", "drbd-A", "qd32", "iops", ">=", 1.0)
    check("spec async / DRBD A, 1M MB/s >= 1", "spec-async", "drbd-A", "seq", "bw_bytes", ">=", 1.0)
    check("spec async / DRBD A, CPU per GiB at QD32 <= 1", "spec-async", "drbd-A", "qd32", "cpu_s_per_gib", "<=",
          1.0)
    check("spec async / DRBD A, CPU per GiB at 1M <= 1", "spec-async", "drbd-A", "seq", "cpu_s_per_gib", "<=", 1.0)
    check("spec sync / DRBD C, QD1 mean latency <= 1.0", "spec-sync", "drbd-C", "qd1", "lat_mean_ns", "<=", 1.0)
    check("spec sync / lock-sync, QD1 mean latency <= 0.55 (RTT >= 1 ms)", "spec-sync", "lock-sync", "qd1",
          "lat_mean_ns", "<=", 0.55, min_rtt=1)
    check("spec async / DRBD A, QD1 mean latency <= 0.5", "spec-async", "drbd-A", "qd1", "lat_mean_ns", "<=", 0.5)
    md.append("")

    # Issue 6's targets.
    md += ["## Targets of issue 6", "", "| target | " + " | ".join(f"RTT {t} ms" for t in rtts) + " |",
           "|---|" + "---|" * len(rtts)]

    check("spec async / local, QD32 IOPS >= 0.9", "spec-async", "local", "qd32", "iops", ">=", 0.9)
    check("spec async / local, 1M MB/s >= 0.9", "spec-async", "local", "seq", "bw_bytes", ">=", 0.9, headline=False)
    check("spec async / DRBD A, QD32 IOPS >= 1", "spec-async", "drbd-A", "qd32", "iops", ">=", 1.0, headline=False)
    check("spec async / DRBD A, 1M MB/s >= 1", "spec-async", "drbd-A", "seq", "bw_bytes", ">=", 1.0, headline=False)
    check("spec sync / DRBD C, QD1 mean latency <= 1.1", "spec-sync", "drbd-C", "qd1", "lat_mean_ns", "<=", 1.1, headline=False)
    check("spec sync / lock-sync, QD1 mean latency <= 0.6", "spec-sync", "lock-sync", "qd1", "lat_mean_ns", "<=", 0.6, headline=False)
    md.append("")
    died = [v for v in vms if v["vm_exit_status"]]
    if died:
        md += ["## VMs that failed", ""]
        for v in died:
            lines = v["log_tail"].splitlines()
            at = next((i for i, l in enumerate(lines) if SPLAT.search(l)), None)
            if at is None:
                first = "no splat in the log"
            else:
                more = [re.sub(r"^\[[ 0-9.]+\] ", "", l.strip()) for l in lines[at:at + 40]
                        if re.search(r"Comm:|RIP: 0010", l)][:2]
                first = " / ".join([re.sub(r"^\[[ 0-9.]+\] ", "", lines[at].strip())] + more)
            errs = [r["error"] for r in runs if r["boot"] == v["boot"] and "error" in r and "crashed" in r["error"]]
            md.append(f"- VM {v['boot']} (RTT {v['rtt_ms']} ms, {v['systems']}): exit status "
                      f"{v['vm_exit_status']}; {errs[0] if errs else 'it finished its runs'}; "
                      f"first report: `{first[:400]}`")
        md.append("")
    if notes:
        md += ["## Not measured", ""]
        for s, why in notes:
            md.append(f"- {NAMES[s]}: {why}")
        md.append("")
    profiles = [(k, f, t) for k, files in sorted(doc.get("setup", {}).items())
                for f, t in sorted(files.items()) if f.endswith(".perf.txt")]
    if profiles:
        md += ["## Where the CPU goes (DMSM_BENCH_PERF)", "",
               "perf, software clock at 499 Hz on every vCPU, over each run's measured part; the top "
               "entries of a flat profile. Idle shows as `pv_native_safe_halt`; time with interrupts off "
               "is charged to the point where they come back on (`_raw_spin_unlock_irqrestore`).", ""]
        for k, f, t in profiles:
            md += [f"`{k}/{f.split('.json')[0]}`:", "", "```"] + t.splitlines()[:8] + ["```", ""]
    base = os.path.basename(prefix)
    md += [f"![latency vs RTT]({base}-latency.png)", "", f"![throughput vs RTT]({base}-throughput.png)", "",
           f"Raw fio results, versions and set-up lines: [{base}.json]({base}.json).", ""]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(md))

    plots(prefix, rtts, systems, value, ts, guest["quick"])
    print("\n".join(md))
    print(f"bench: wrote {prefix}.json, {prefix}.md, {prefix}-latency.png, {prefix}-throughput.png",
          file=sys.stderr)
    # The headline ratios last, where a terminal leaves them in view.
    sys.stderr.flush()
    print("\nHeadline (issue 20's targets; ratios of medians; [spread of each system's repetitions]):")
    print("\n".join("  " + h for h in heads))


def plots(prefix, rtts, systems, value, ts, quick):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = list(range(len(rtts)))
    styles = {"local": "k--o", "spec-async": "C0-o", "spec-sync": "C1-o", "lock-sync": "C2-s",
              "drbd-A": "C3-^", "drbd-C": "C4-v", "dm-mirror": "C5-d"}
    sub = f"{ts}{' (QUICK)' if quick else ''}, release kernel under TCG: compare within the run only"

    def panel(ax, wl, field, scale, ylabel, title):
        for s in systems:
            pts = [(i, value(s, t, wl, field)[0]) for i, t in enumerate(rtts)]
            pts = [(i, v * scale) for i, v in pts if v]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[s], label=NAMES[s])
        ax.set_xticks(x, [str(t) for t in rtts])
        ax.set_xlabel("netem RTT (ms)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)

    def figure(path, title, panels):
        fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.8))
        for ax, args in zip(axes, panels):
            panel(ax, *args)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{title}; {sub}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

    figure(prefix + "-latency.png", "Write latency vs RTT", [
        ("qd1", "lat_mean_ns", 1e-6, "mean latency (ms)", "4k random write, QD1: mean"),
        ("qd1", "lat_p99_ns", 1e-6, "p99 latency (ms)", "4k random write, QD1: p99")])
    figure(prefix + "-throughput.png", "Write throughput vs RTT", [
        ("qd32", "iops", 1, "IOPS", "4k random write, QD32"),
        ("seq", "bw_bytes", 1e-6, "MB/s", "1M sequential write, QD8")])


if __name__ == "__main__":
    main()

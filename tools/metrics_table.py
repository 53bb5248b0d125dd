#!/usr/bin/env python3
"""A run's metrics.csv as README's markdown table, plus time-to-accuracy.

    python3 tools/metrics_table.py runs/NAME/metrics.csv [--targets 0.7,0.8,0.85,0.874]

Columns: epoch, lr at the epoch's last step, train loss/acc, test loss/acc, the EMA's
test accuracy when the run kept one, and the elapsed minutes at the end of the epoch
(the sum of the `seconds` column: training and evaluation, not the start-up or the
final evaluation). Time-to-accuracy: the first epoch whose plain test accuracy (and,
separately, EMA test accuracy) reached each target.
"""

import argparse
import csv


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics")
    p.add_argument("--targets", default="0.7,0.8,0.85,0.874")
    a = p.parse_args()
    rows = list(csv.DictReader(open(a.metrics)))
    if not rows:
        raise SystemExit(f"error: {a.metrics}: no epochs")
    ema = bool(rows[0].get("ema_test_acc"))
    head = "| epoch | lr (last step) | train loss | train acc | test loss | test acc |"
    head += " EMA test acc |" if ema else ""
    head += " elapsed min |"
    print(head)
    print("|" + "---:|" * (head.count("|") - 1))
    elapsed = 0.0
    reached = {}
    targets = [float(t) for t in a.targets.split(",")]
    for r in rows:
        elapsed += float(r["seconds"])
        line = (f"| {r['epoch']} | {float(r['lr']):.4f} | {float(r['train_loss']):.4f} | "
                f"{float(r['train_acc']):.4f} | {float(r['test_loss']):.4f} | {float(r['test_acc']):.4f} |")
        if ema:
            line += f" {float(r['ema_test_acc']):.4f} |"
        print(line + f" {elapsed / 60:.1f} |")
        for kind in ["test_acc", "ema_test_acc"] if ema else ["test_acc"]:
            for t in targets:
                if (kind, t) not in reached and float(r[kind]) >= t:
                    reached[kind, t] = (int(r["epoch"]), elapsed / 60)
    print()
    for kind in ["test_acc", "ema_test_acc"] if ema else ["test_acc"]:
        parts = []
        for t in targets:
            got = reached.get((kind, t))
            parts.append(f"{t}: epoch {got[0]} ({got[1]:.1f} min)" if got else f"{t}: not reached")
        print(f"{kind}: " + "; ".join(parts))


if __name__ == "__main__":
    main()

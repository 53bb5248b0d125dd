//! `metrics.md`: the per-epoch log as a Markdown table with the elapsed
//! time, and when the test accuracy first reached each milestone — the
//! table a run's results are quoted with (README, docs/recipes.md), made by
//! the run itself instead of by hand.
//!
//! Elapsed time is the running sum of the epochs' own wall times (each
//! includes its evaluations), so a resumed run's pause is not counted.
//! Columns of evaluations no epoch has (validation without `--val-split`,
//! EMA without an average) are left out.

use std::fmt::Write as _;

use super::EpochRecord;

/// The test accuracies whose first epoch [`metrics_markdown`] reports; the
/// last is the tutorial's fine-tuned accuracy, the from-scratch goal.
pub const MILESTONES: [f64; 5] = [0.5, 0.7, 0.8, 0.85, 0.874];

/// How a record gives one of its accuracies (`None`: not evaluated).
type Accuracy = fn(&EpochRecord) -> Option<f64>;

/// One column: its header and how a record, with the minutes elapsed at its
/// end, fills it (`None`: no value).
struct Column {
    header: &'static str,
    cell: fn(&EpochRecord, f64) -> Option<String>,
}

fn loss(v: Option<f64>) -> Option<String> {
    // Losses of diverged or moving-statistics-mismatched epochs reach the
    // hundreds or more: fewer decimals there keep the column narrow.
    v.map(|v| {
        if v.abs() < 100.0 {
            format!("{v:.4}")
        } else {
            format!("{v:.1}")
        }
    })
}

fn acc(v: Option<f64>) -> Option<String> {
    v.map(|v| format!("{v:.4}"))
}

fn lr(v: f64) -> String {
    if v == 0.0 || v.abs() >= 1e-3 {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

const COLUMNS: [Column; 10] = [
    Column {
        header: "lr (last step)",
        cell: |r, _| Some(lr(r.lr)),
    },
    Column {
        header: "train loss",
        cell: |r, _| loss(Some(r.train_loss)),
    },
    Column {
        header: "train acc",
        cell: |r, _| acc(Some(r.train_acc)),
    },
    Column {
        header: "val loss",
        cell: |r, _| loss(r.val_loss),
    },
    Column {
        header: "val acc",
        cell: |r, _| acc(r.val_acc),
    },
    Column {
        header: "test loss",
        cell: |r, _| loss(r.test_loss),
    },
    Column {
        header: "test acc",
        cell: |r, _| acc(r.test_acc),
    },
    Column {
        header: "EMA val acc",
        cell: |r, _| acc(r.ema_val_acc),
    },
    Column {
        header: "EMA test acc",
        cell: |r, _| acc(r.ema_test_acc),
    },
    Column {
        header: "elapsed min",
        cell: |_, minutes| Some(format!("{minutes:.1}")),
    },
];

/// The Markdown of `records`: the table, then one line per accuracy kept
/// (test, EMA test) on when it first reached each of [`MILESTONES`].
pub fn metrics_markdown(records: &[EpochRecord]) -> String {
    let elapsed_min: Vec<f64> = records
        .iter()
        .scan(0.0, |t, r| {
            *t += r.seconds;
            Some(*t / 60.0)
        })
        .collect();
    let shown: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| records.iter().any(|r| (c.cell)(r, 0.0).is_some()))
        .collect();
    let mut s = String::from("| epoch |");
    for c in &shown {
        let _ = write!(s, " {} |", c.header);
    }
    s += "\n|---:|";
    s += &"---:|".repeat(shown.len());
    s += "\n";
    for (r, &minutes) in records.iter().zip(&elapsed_min) {
        let _ = write!(s, "| {} |", r.epoch);
        for c in &shown {
            let cell = (c.cell)(r, minutes);
            let _ = write!(s, " {} |", cell.as_deref().unwrap_or("-"));
        }
        s += "\n";
    }
    let accuracies: [(&str, Accuracy); 2] = [
        ("Test accuracy", |r| r.test_acc),
        ("EMA test accuracy", |r| r.ema_test_acc),
    ];
    for (what, get) in accuracies {
        if records.iter().any(|r| get(r).is_some()) {
            s += "\n";
            s += &milestones_line(what, records, &elapsed_min, get);
        }
    }
    s
}

/// "Test accuracy first reached 0.5 at epoch 5 (10.9 min), ...; 0.874 not
/// reached (best 0.8274 at epoch 33)."
fn milestones_line(
    what: &str,
    records: &[EpochRecord],
    elapsed_min: &[f64],
    get: Accuracy,
) -> String {
    let (mut reached, mut missed) = (Vec::new(), Vec::new());
    for m in MILESTONES {
        match records.iter().position(|r| get(r).is_some_and(|a| a >= m)) {
            Some(i) => reached.push(format!(
                "{m} at epoch {} ({:.1} min)",
                records[i].epoch, elapsed_min[i]
            )),
            None => missed.push(m.to_string()),
        }
    }
    let best = records
        .iter()
        .filter_map(|r| get(r).map(|a| (a, r.epoch)))
        .fold((f64::NEG_INFINITY, 0), |b, x| if x.0 > b.0 { x } else { b });
    let best = format!("best {:.4} at epoch {}", best.0, best.1);
    match (reached.is_empty(), missed.is_empty()) {
        (true, _) => format!("{what} reached none of {} ({best}).\n", missed.join(", ")),
        (false, true) => format!("{what} first reached {}.\n", reached.join(", ")),
        (false, false) => format!(
            "{what} first reached {}; {} not reached ({best}).\n",
            reached.join(", "),
            missed.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn table_of_the_columns_recorded_and_milestones() {
        let log = sample();
        assert_eq!(
            metrics_markdown(&log.records),
            "| epoch | lr (last step) | train loss | train acc | val loss | val acc | test loss | test acc | elapsed min |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | 1 | 1.00e-4 | 1.2500 | 0.5500 | 1.0000 | 0.6000 | 0.9000 | 0.7000 | 0.2 |\n\
             | 2 | 5.00e-5 | 0.7500 | 0.8000 | - | - | - | - | 0.4 |\n\
             \n\
             Test accuracy first reached 0.5 at epoch 1 (0.2 min), 0.7 at epoch 1 (0.2 min); \
             0.8, 0.85, 0.874 not reached (best 0.7000 at epoch 1).\n"
        );
    }

    #[test]
    fn ema_columns_milestones_and_large_losses() {
        let mut log = sample();
        log.records[0].test_loss = Some(289.57);
        log.records[0].ema_test_acc = Some(0.81);
        log.records[1].ema_test_acc = Some(0.9);
        log.records[1].test_acc = Some(0.875);
        let md = metrics_markdown(&log.records);
        assert!(
            md.contains("| test acc | EMA test acc | elapsed min |\n"),
            "{md}"
        );
        assert!(!md.contains("EMA val acc"), "{md}");
        assert!(md.contains("| 289.6 |"), "{md}");
        assert!(
            md.contains(
                "\nTest accuracy first reached 0.5 at epoch 1 (0.2 min), 0.7 at epoch 1 (0.2 min), \
                 0.8 at epoch 2 (0.4 min), 0.85 at epoch 2 (0.4 min), 0.874 at epoch 2 (0.4 min).\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "\nEMA test accuracy first reached 0.5 at epoch 1 (0.2 min), 0.7 at epoch 1 (0.2 min), \
                 0.8 at epoch 1 (0.2 min), 0.85 at epoch 2 (0.4 min), 0.874 at epoch 2 (0.4 min).\n"
            ),
            "{md}"
        );
    }

    #[test]
    fn no_evaluation_no_milestones() {
        let mut log = sample();
        for r in &mut log.records {
            (r.val_loss, r.val_acc, r.test_loss, r.test_acc) = (None, None, None, None);
            r.train_acc = 0.1;
        }
        let md = metrics_markdown(&log.records);
        assert!(!md.contains("reached"), "{md}");
        assert!(
            md.starts_with("| epoch | lr (last step) | train loss | train acc | elapsed min |\n"),
            "{md}"
        );
        assert_eq!(metrics_markdown(&[]).lines().count(), 2);

        log.records[1].test_acc = Some(0.3);
        assert!(metrics_markdown(&log.records).ends_with(
            "\nTest accuracy reached none of 0.5, 0.7, 0.8, 0.85, 0.874 (best 0.3000 at epoch 2).\n"
        ));
    }
}

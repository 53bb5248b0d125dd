//! Per-epoch records written as `metrics.csv`, `metrics.json`, a
//! learning-curve SVG and `metrics.md`.
//!
//! Why four files: CSV for spreadsheets and quick `column -t`, JSON for
//! scripts and for resuming a run (the log is read back and extended), an
//! SVG picture that any browser shows without a plotting stack, and a
//! Markdown table with elapsed times and time-to-accuracy, for quoting. All are
//! rewritten atomically after every epoch, so a killed run leaves a complete
//! log of the epochs it finished.

mod markdown;
mod svg;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use nn::checkpoint::write_atomic;

pub use markdown::{metrics_markdown, MILESTONES};
pub use svg::learning_curves_svg;

/// File names written by [`MetricsLog::write_all`].
pub const CSV_FILE: &str = "metrics.csv";
pub const JSON_FILE: &str = "metrics.json";
pub const SVG_FILE: &str = "learning_curves.svg";
pub const MARKDOWN_FILE: &str = "metrics.md";

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a metrics log: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// JSON has no NaN/inf: serde_json writes them as `null`; read `null` back
/// as NaN so a diverged epoch does not make the log unreadable.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Metrics of one finished epoch. Accuracies are fractions in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_acc: f64,
    /// On the images held out of training (`--val-split`); `None` without a
    /// validation split (and in logs written before there was one).
    #[serde(default)]
    pub val_loss: Option<f64>,
    #[serde(default)]
    pub val_acc: Option<f64>,
    /// `None` when the epoch was not evaluated.
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// The same evaluations of the moving average of the weights
    /// ([`crate::ema`]); `None` when the run keeps none. Left out of the
    /// JSON when `None`, so the logs of runs without an average are what
    /// they were (and older logs load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_val_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_test_acc: Option<f64>,
}

impl EpochRecord {
    /// Whether any evaluation of the moving average is recorded.
    pub fn has_ema(&self) -> bool {
        [
            self.ema_val_loss,
            self.ema_val_acc,
            self.ema_test_loss,
            self.ema_test_acc,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// The log of all epochs of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsLog {
    pub records: Vec<EpochRecord>,
}

fn num(v: f64) -> String {
    format!("{v}")
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

impl MetricsLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record, replacing any existing record of the same epoch
    /// (a run resumed from an earlier checkpoint redoes those epochs).
    pub fn push(&mut self, record: EpochRecord) {
        self.records.retain(|r| r.epoch < record.epoch);
        self.records.push(record);
    }

    /// The CSV; the columns of the moving average's evaluations
    /// (`ema_val_loss,ema_val_acc,ema_test_loss,ema_test_acc`) are appended
    /// after `seconds` only when some record has them, so the file of a run
    /// without an average is what it was and readers by position keep
    /// working.
    pub fn to_csv(&self) -> String {
        let ema = self.records.iter().any(EpochRecord::has_ema);
        let mut s = String::from(
            "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds",
        );
        if ema {
            s += ",ema_val_loss,ema_val_acc,ema_test_loss,ema_test_acc";
        }
        s += "\n";
        for r in &self.records {
            let _ = write!(
                s,
                "{},{},{},{},{},{},{},{},{}",
                r.epoch,
                num(r.lr),
                num(r.train_loss),
                num(r.train_acc),
                opt(r.val_loss),
                opt(r.val_acc),
                opt(r.test_loss),
                opt(r.test_acc),
                num(r.seconds)
            );
            if ema {
                let _ = write!(
                    s,
                    ",{},{},{},{}",
                    opt(r.ema_val_loss),
                    opt(r.ema_val_acc),
                    opt(r.ema_test_loss),
                    opt(r.ema_test_acc)
                );
            }
            s += "\n";
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("metrics serialize") + "\n"
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Self, ReportError> {
        serde_json::from_str(text).map_err(|e| ReportError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Reads `dir/metrics.json` (to continue the log of a resumed run);
    /// an empty log if the file does not exist.
    pub fn read_dir(dir: &Path) -> Result<Self, ReportError> {
        let path = dir.join(JSON_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::from_json(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::new()),
            Err(source) => Err(ReportError::Io { path, source }),
        }
    }

    /// Writes `metrics.csv`, `metrics.json`, `learning_curves.svg` and
    /// `metrics.md` into `dir` (created if needed), each atomically.
    pub fn write_all(&self, dir: &Path) -> Result<(), ReportError> {
        let files = [
            (CSV_FILE, self.to_csv()),
            (JSON_FILE, self.to_json()),
            (SVG_FILE, learning_curves_svg(&self.records)),
            (MARKDOWN_FILE, metrics_markdown(&self.records)),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            write_atomic(&path, content.as_bytes())
                .map_err(|source| ReportError::Io { path, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> MetricsLog {
        let mut log = MetricsLog::new();
        log.push(EpochRecord {
            epoch: 1,
            lr: 1e-4,
            train_loss: 1.25,
            train_acc: 0.55,
            val_loss: Some(1.0),
            val_acc: Some(0.6),
            test_loss: Some(0.9),
            test_acc: Some(0.7),
            seconds: 12.5,
            ema_val_loss: None,
            ema_val_acc: None,
            ema_test_loss: None,
            ema_test_acc: None,
        });
        log.push(EpochRecord {
            epoch: 2,
            lr: 5e-5,
            train_loss: 0.75,
            train_acc: 0.8,
            val_loss: None,
            val_acc: None,
            test_loss: None,
            test_acc: None,
            seconds: 11.0,
            ema_val_loss: None,
            ema_val_acc: None,
            ema_test_loss: None,
            ema_test_acc: None,
        });
        log
    }

    #[test]
    fn csv_content() {
        assert_eq!(
            sample().to_csv(),
            "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds\n\
             1,0.0001,1.25,0.55,1,0.6,0.9,0.7,12.5\n\
             2,0.00005,0.75,0.8,,,,,11\n"
        );
    }

    #[test]
    fn json_content_and_round_trip() {
        let log = sample();
        let json = log.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["records"][0]["epoch"], 1);
        assert_eq!(v["records"][0]["test_acc"], 0.7);
        assert_eq!(v["records"][1]["test_loss"], serde_json::Value::Null);
        assert_eq!(
            MetricsLog::from_json(&json, Path::new("m.json")).unwrap(),
            log
        );

        // A diverged epoch (NaN loss) still round-trips (as NaN).
        let mut bad = log.clone();
        bad.records[1].train_loss = f64::NAN;
        let back = MetricsLog::from_json(&bad.to_json(), Path::new("m.json")).unwrap();
        assert!(back.records[1].train_loss.is_nan());

        // A log written before the validation columns existed still loads.
        let old = r#"{"records": [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.1,
            "test_loss": 1.5, "test_acc": 0.2, "seconds": 3.0}]}"#;
        let old = MetricsLog::from_json(old, Path::new("m.json")).unwrap();
        assert_eq!(old.records[0].val_loss, None);
        assert_eq!(old.records[0].test_loss, Some(1.5));
        assert_eq!(old.records[0].ema_test_acc, None);
        assert!(!old.records[0].has_ema());

        let e = MetricsLog::from_json("{\"records\": 3}", Path::new("/r/metrics.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/r/metrics.json"), "{e}");
    }

    #[test]
    fn the_ema_columns_appear_only_when_recorded_and_round_trip() {
        let plain = sample();
        assert!(!plain.to_json().contains("ema_"), "{}", plain.to_json());
        let mut log = plain.clone();
        log.records[0].ema_val_loss = Some(0.95);
        log.records[0].ema_val_acc = Some(0.65);
        log.records[0].ema_test_loss = Some(0.85);
        log.records[0].ema_test_acc = Some(0.75);
        log.records[1].ema_test_acc = Some(0.5);
        assert_eq!(
            log.to_csv(),
            "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds,\
             ema_val_loss,ema_val_acc,ema_test_loss,ema_test_acc\n\
             1,0.0001,1.25,0.55,1,0.6,0.9,0.7,12.5,0.95,0.65,0.85,0.75\n\
             2,0.00005,0.75,0.8,,,,,11,,,,0.5\n"
        );
        let json = log.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["records"][0]["ema_test_acc"], 0.75);
        assert!(v["records"][1].get("ema_val_loss").is_none());
        assert_eq!(
            MetricsLog::from_json(&json, Path::new("m.json")).unwrap(),
            log
        );
    }

    #[test]
    fn push_replaces_redone_epochs() {
        let mut log = sample();
        let mut r = log.records[0].clone();
        r.train_loss = 9.0;
        log.push(r);
        assert_eq!(log.records.len(), 1);
        assert_eq!(log.records[0].train_loss, 9.0);
    }

    #[test]
    fn write_all_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        assert_eq!(MetricsLog::read_dir(&dir).unwrap(), MetricsLog::new());
        let log = sample();
        log.write_all(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(CSV_FILE)).unwrap(),
            log.to_csv()
        );
        assert!(fs::read_to_string(dir.join(SVG_FILE))
            .unwrap()
            .starts_with("<svg"));
        assert_eq!(
            fs::read_to_string(dir.join(MARKDOWN_FILE)).unwrap(),
            metrics_markdown(&log.records)
        );
        assert_eq!(MetricsLog::read_dir(&dir).unwrap(), log);
    }
}

//! Running training metrics and the confusion matrix.
//!
//! Why weighted running means: the last batch of an epoch is usually
//! smaller, so averaging per-batch means would over-weight it; [`RunningMean`]
//! weights each batch by its size so the epoch value equals the per-sample
//! mean. Why a confusion matrix: on CIFAR-10 overall accuracy hides which
//! classes are confused (cat/dog, automobile/truck), which is what tells a
//! preprocessing or label-order bug from a weak model.

use std::fmt::Write as _;

/// Weighted running mean (e.g. loss per sample over an epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningMean {
    sum: f64,
    weight: f64,
}

impl RunningMean {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` (e.g. a batch's mean loss) with `weight` (its size).
    pub fn add(&mut self, value: f64, weight: f64) {
        self.sum += value * weight;
        self.weight += weight;
    }

    /// The mean so far; NaN before anything was added.
    pub fn mean(&self) -> f64 {
        if self.weight == 0.0 {
            f64::NAN
        } else {
            self.sum / self.weight
        }
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// How many rows of `scores` (`labels.len() x classes`, row-major) have
/// their maximum at the true label.
pub fn count_correct(scores: &[f32], labels: &[usize]) -> usize {
    let n = labels.len();
    assert!(
        n > 0 && scores.len().is_multiple_of(n),
        "scores must be labels.len() x classes"
    );
    let k = scores.len() / n;
    scores
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &l)| argmax(row) == l)
        .count()
}

/// Loss and accuracy of one epoch, accumulated batch by batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Meter {
    loss: RunningMean,
    correct: u64,
    total: u64,
}

impl Meter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch: its mean loss, its logits or probabilities
    /// (`labels.len() x num_classes`, row-major) and true labels.
    /// Returns the batch accuracy.
    pub fn update(&mut self, batch_mean_loss: f64, scores: &[f32], labels: &[usize]) -> f64 {
        let correct = count_correct(scores, labels);
        self.add_counts(batch_mean_loss, correct, labels.len());
        correct as f64 / labels.len() as f64
    }

    /// Adds a batch of `n` samples already scored: its mean loss and how
    /// many were classified correctly.
    pub fn add_counts(&mut self, batch_mean_loss: f64, correct: usize, n: usize) {
        self.loss.add(batch_mean_loss, n as f64);
        self.correct += correct as u64;
        self.total += n as u64;
    }

    /// Mean loss per sample (NaN if empty).
    pub fn loss(&self) -> f64 {
        self.loss.mean()
    }

    /// Fraction correct (NaN if empty).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    pub fn count(&self) -> u64 {
        self.total
    }
}

/// `classes x classes` counts; rows are true classes, columns predictions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: Vec<String>,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: &[String]) -> Self {
        Self {
            classes: classes.to_vec(),
            counts: vec![0; classes.len() * classes.len()],
        }
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        let k = self.num_classes();
        assert!(truth < k && predicted < k, "class index out of range");
        self.counts[truth * k + predicted] += 1;
    }

    /// Adds a batch of scores (`labels.len() x classes`) and true labels.
    pub fn add_batch(&mut self, scores: &[f32], labels: &[usize]) {
        let k = self.num_classes();
        assert_eq!(
            scores.len(),
            labels.len() * k,
            "scores must be labels.len() x classes"
        );
        for (row, &l) in scores.chunks_exact(k).zip(labels) {
            self.add(l, argmax(row));
        }
    }

    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.num_classes() + predicted]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..self.num_classes()).map(|i| self.get(i, i)).sum()
    }

    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total() as f64
    }

    /// Per true class: correct / seen (`None` for a class never seen).
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        let k = self.num_classes();
        (0..k)
            .map(|i| {
                let row: u64 = self.counts[i * k..(i + 1) * k].iter().sum();
                (row > 0).then(|| self.get(i, i) as f64 / row as f64)
            })
            .collect()
    }

    /// Text table of the matrix followed by per-class accuracy.
    pub fn render(&self) -> String {
        let k = self.num_classes();
        let name_w = self
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let max = self.counts.iter().copied().max().unwrap_or(0);
        let cell_w = max.to_string().len().max(5) + 1;
        let mut s = String::new();
        let _ = writeln!(s, "Confusion matrix (rows: true class, columns: predicted)");
        let _ = write!(s, "{:name_w$}", "");
        for c in &self.classes {
            let short: String = c.chars().take(cell_w - 1).collect();
            let _ = write!(s, "{short:>cell_w$}");
        }
        s.push('\n');
        for i in 0..k {
            let _ = write!(s, "{:<name_w$}", self.classes[i]);
            for j in 0..k {
                let _ = write!(s, "{:>cell_w$}", self.get(i, j));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "Per-class accuracy:");
        let k_total = self.counts.chunks(k.max(1));
        for ((name, acc), row) in self
            .classes
            .iter()
            .zip(self.per_class_accuracy())
            .zip(k_total)
        {
            let seen: u64 = row.iter().sum();
            match acc {
                Some(a) => {
                    let correct = (a * seen as f64).round() as u64;
                    let _ = writeln!(
                        s,
                        "  {name:<name_w$} {:>7.2}%  ({correct}/{seen})",
                        a * 100.0
                    );
                }
                None => {
                    let _ = writeln!(s, "  {name:<name_w$}        -   (0/0)");
                }
            }
        }
        let _ = writeln!(
            s,
            "  {:<name_w$} {:>7.2}%  ({}/{})",
            "overall",
            self.accuracy() * 100.0,
            self.correct(),
            self.total()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_mean_is_weighted() {
        let mut m = RunningMean::new();
        assert!(m.mean().is_nan());
        m.add(1.0, 32.0);
        m.add(4.0, 16.0);
        assert!((m.mean() - 2.0).abs() < 1e-12);
        assert_eq!(m.weight(), 48.0);
    }

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.1]), 1);
        assert_eq!(argmax(&[0.5, f32::NAN, 0.9]), 2);
        assert_eq!(argmax(&[-3.0]), 0);
    }

    #[test]
    fn meter_accumulates_loss_and_accuracy() {
        let mut m = Meter::new();
        // Batch 1: 2 samples, 3 classes; predictions 2 and 0; labels 2, 1.
        let acc = m.update(0.5, &[0.1, 0.2, 0.7, 0.9, 0.05, 0.05], &[2, 1]);
        assert_eq!(acc, 0.5);
        // Batch 2: 1 sample, correct.
        m.update(2.0, &[0.0, 1.0, 0.0], &[1]);
        assert_eq!(m.count(), 3);
        assert!((m.accuracy() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.loss() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn confusion_matrix_counts_and_renders() {
        let classes: Vec<String> = ["airplane", "cat", "dog"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut cm = ConfusionMatrix::new(&classes);
        // Truth: airplane x2 (both right), cat x3 (one as dog), dog x1 (as cat).
        let scores = [
            0.9, 0.1, 0.0, //
            0.8, 0.1, 0.1, //
            0.0, 0.9, 0.1, //
            0.0, 0.6, 0.4, //
            0.0, 0.2, 0.8, //
            0.1, 0.5, 0.4, //
        ];
        cm.add_batch(&scores, &[0, 0, 1, 1, 1, 2]);
        assert_eq!(cm.total(), 6);
        assert_eq!(cm.correct(), 4);
        assert_eq!(cm.get(1, 2), 1);
        assert_eq!(cm.get(2, 1), 1);
        assert_eq!(
            cm.per_class_accuracy(),
            [Some(1.0), Some(2.0 / 3.0), Some(0.0)]
        );
        let text = cm.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("airpl") && lines[1].contains("cat"),
            "{text}"
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["cat", "0", "2", "1"]
        );
        assert!(text.contains("airplane  100.00%  (2/2)"), "{text}");
        assert!(text.contains("66.67%  (2/3)"), "{text}");
        assert!(text.contains("overall    66.67%  (4/6)"), "{text}");

        let mut empty = ConfusionMatrix::new(&classes);
        empty.add(0, 0);
        assert_eq!(empty.per_class_accuracy()[1], None);
        assert!(empty.render().contains("(0/0)"));
    }
}

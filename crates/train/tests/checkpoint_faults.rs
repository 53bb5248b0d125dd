//! The checkpoint protocol (`train::run_state`) under fault injection: a
//! kill or a full disk at every write boundary of every save, two and three
//! failures in a row, a failure during the very first save, an interrupted
//! mid-epoch save that fails, corrupt units, leftovers, and run directories
//! of the old layout. After each, a fresh resume must succeed from the
//! newest complete unit with no completed epoch lost, and the resumed run
//! must end bit-identical to an uninterrupted one.
//!
//! Faults come from `run_state::fault`: boundary `k` (counted from when it
//! is armed) fails as a kill (no clean-up runs) or with an I/O error.
//!
//! A run that keeps a moving average of its weights (`train::ema`) saves
//! one more file per unit (`ema.safetensors`): the kill test is repeated
//! with it, comparing the average bit for bit too.

mod common;

use anyhow::Result;
use autograd::ParamStore;
use nn::checkpoint::{self, Metadata};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use train::data::Dataset;
use train::ema::EmaConfig;
use train::fit::{fit, Callback, Checkpoint, FitConfig, FitData, FitSummary, MetricsFiles, Start};
use train::model_spec::{ModelSpec, ResNetVersion};
use train::optim::{Adam, AdamConfig, LrSchedule};
use train::report::{EpochRecord, MetricsLog};
use train::run_state::fault::{self, Fault};
use train::run_state::{self, unit, Progress, EMA_FILE, MODEL_FILE, STATE_FILE};
use train::trainer::Trainer;

const EPOCHS: usize = 3;
/// Write boundaries of one save without a moving average: creating the
/// unit's temporary directory, its three files, the manifest, the commit
/// rename, the refresh of the top-level model, the removal of old units.
const BOUNDARIES: usize = 8;
/// The commit: a fault at this boundary or before leaves the save undone.
const COMMIT: usize = 5;

/// Whether (and how) the runs keep a moving average of their weights.
type Averaging = Option<EmaConfig>;
const NO_EMA: Averaging = None;
/// Every second step: the interrupted runs stop between updates.
const WITH_EMA: Averaging = Some(EmaConfig {
    decay: 0.9,
    every: 2,
});

/// Write boundaries of one save: one more with `ema.safetensors`.
fn boundaries(ema: Averaging) -> usize {
    BOUNDARIES + usize::from(ema.is_some())
}

/// The commit boundary: the average is written before the manifest.
fn commit(ema: Averaging) -> usize {
    COMMIT + usize::from(ema.is_some())
}

const FULL: Fault = Fault::Io(ErrorKind::StorageFull);

fn tiny_trainer(seed: u64) -> Trainer {
    trainer_for(NO_EMA, seed)
}

fn trainer_for(ema: Averaging, seed: u64) -> Trainer {
    let spec = ModelSpec {
        version: ResNetVersion::V1,
        stem_filters: 4,
        depths: vec![1, 1, 1, 1],
        widths: vec![4, 4, 8, 8],
        num_classes: Some(4),
        unbiased_moving_variance: false,
        bn_momentum: nn::layers::batch_norm::KERAS_MOMENTUM,
    };
    let (model, store) = nn::ResNet::new(spec.config(32, seed)).unwrap();
    let mut t = Trainer::new(
        Box::new(model),
        store,
        Box::new(Adam::new(AdamConfig::default())),
        LrSchedule::constant(1e-3),
    );
    if let Some(c) = ema {
        t.enable_ema(c).unwrap();
    }
    t
}

fn data() -> Dataset {
    common::dataset(24, 4, 5) // batch 8: 3 steps per epoch
}

fn config() -> FitConfig {
    FitConfig {
        epochs: EPOCHS,
        batch_size: 8,
        eval_batch_size: 24,
        seed: 2,
        ..FitConfig::default()
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint_faults")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Bits = Vec<(String, Vec<u32>)>;

fn store_bits(store: &ParamStore) -> Bits {
    store
        .iter()
        .map(|(_, p)| {
            let v = p.value.data().iter().map(|v| v.to_bits()).collect();
            (p.name.clone(), v)
        })
        .collect()
}

/// The parameters, and the average (names prefixed `ema:`) if kept.
fn bits(t: &Trainer) -> Bits {
    let mut b = store_bits(&t.store);
    if let Some(ema) = t.ema_store() {
        b.extend(
            store_bits(ema)
                .into_iter()
                .map(|(n, v)| (format!("ema:{n}"), v)),
        );
    }
    b
}

/// A record without its wall-clock time, which no two runs share.
fn timeless(records: &[EpochRecord]) -> Vec<EpochRecord> {
    records
        .iter()
        .map(|r| EpochRecord {
            seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

/// Asks to stop once the run has taken `at` steps in all.
struct StopAt(Option<u64>, bool);

impl Callback for StopAt {
    fn on_train_batch_end(&mut self, t: &mut Trainer, _: &train::fit::BatchLogs) -> Result<()> {
        self.1 = self.0.is_some_and(|at| t.global_step >= at);
        Ok(())
    }
    fn should_stop(&self) -> bool {
        self.1
    }
}

/// The parameters and history of an uninterrupted run.
fn straight(ema: Averaging) -> (Bits, Vec<EpochRecord>) {
    let mut t = trainer_for(ema, 7);
    let data = data();
    let d = FitData {
        train: &data,
        val: None,
        test: Some(&data),
    };
    let s = fit(
        &mut t,
        &d,
        &config(),
        Start::fresh(),
        &mut [],
        &AtomicBool::new(false),
    )
    .unwrap();
    (bits(&t), timeless(&s.history))
}

/// One process's attempt at the run in `dir`: fresh, or resumed from its
/// checkpoint, with `fault` armed after the resume and the run asked to
/// stop after `stop_at` steps. The trainer is seeded differently when
/// resuming, so every parameter must come from the checkpoint.
fn attempt(
    ema: Averaging,
    dir: &Path,
    resume: bool,
    fault: Option<(usize, Fault)>,
    stop_at: Option<u64>,
) -> (Result<FitSummary>, Trainer) {
    let mut t = trainer_for(ema, if resume { 99 } else { 7 });
    let start = if resume {
        Start::resume(dir, &mut t).unwrap()
    } else {
        Start::fresh()
    };
    match fault {
        Some((k, f)) => fault::arm(k, f),
        None => fault::reset(),
    }
    let data = data();
    let d = FitData {
        train: &data,
        val: None,
        test: Some(&data),
    };
    let mut metrics = MetricsFiles::new(dir);
    let mut stop = StopAt(stop_at, false);
    let mut ckpt = Checkpoint::new(dir);
    let result = fit(
        &mut t,
        &d,
        &config(),
        start,
        &mut [&mut metrics, &mut stop, &mut ckpt],
        &AtomicBool::new(false),
    );
    if fault.is_some() {
        assert!(!fault::pending(), "the armed fault never fired");
    }
    fault::reset();
    (result, t)
}

/// Where `dir`'s checkpoint is now, as seen by a new process.
fn resumable(dir: &Path) -> Result<run_state::Resumed> {
    resumable_with(NO_EMA, dir)
}

fn resumable_with(ema: Averaging, dir: &Path) -> Result<run_state::Resumed> {
    run_state::resume_run(dir, &mut trainer_for(ema, 99))
}

/// Leftovers of interrupted saves in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join(unit::CHECKPOINTS_DIR)] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || (name.starts_with('.') && name.ends_with(".tmp")) {
                found.push(d.join(name).display().to_string());
            }
        }
    }
    found
}

/// The epochs after which the attempt starting at `start_epoch` saves, in
/// order (0: the save a fresh run makes before its first step).
fn saves(start_epoch: Option<usize>) -> Vec<usize> {
    match start_epoch {
        None | Some(0) => (0..=EPOCHS).collect(),
        Some(e) => (e + 1..=EPOCHS).collect(),
    }
}

/// The epoch a resume should start at after an attempt from `start_epoch`
/// (`None`: fresh) failed at boundary `k`: that of the last save committed
/// before the fault, else where the attempt started.
fn expected_after(ema: Averaging, start_epoch: Option<usize>, k: usize) -> Option<usize> {
    let committed = saves(start_epoch)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| k > i * boundaries(ema) + commit(ema))
        .map(|(_, e)| e)
        .next_back();
    committed.or(start_epoch)
}

/// After a failed attempt: a new process resumes at `expected` (or, with
/// nothing committed, is told to start again) with the epoch history of
/// that checkpoint, and the leftovers are gone.
fn check_resume(ema: Averaging, dir: &Path, expected: Option<usize>, what: &str) {
    match (resumable_with(ema, dir), expected) {
        (Ok(r), Some(epoch)) => {
            assert_eq!(
                (r.progress.epoch, r.progress.step),
                (epoch, 0),
                "{what}: resumed from {}",
                r.source.display()
            );
            let history = r.history.expect("a unit holds its history");
            assert_eq!(history.len(), epoch, "{what}");
            assert!(r.skipped.is_empty(), "{what}: {:?}", r.skipped);
            assert!(
                r.source.starts_with(dir.join(unit::CHECKPOINTS_DIR)),
                "{what}"
            );
        }
        (Err(e), None) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("no complete checkpoint") && msg.contains("without --resume"),
                "{what}: {msg}"
            );
        }
        (r, want) => panic!(
            "{what}: expected a resume at {want:?}, got {:?}",
            r.map(|r| r.progress)
        ),
    }
    assert_eq!(leftovers(dir), Vec::<String>::new(), "{what}: after resume");
}

/// Finishes the run in `dir` (resumed, or started again when nothing was
/// committed) and checks it against the uninterrupted run, and the run
/// directory's final state.
fn finish_and_compare(
    ema: Averaging,
    dir: &Path,
    resume: bool,
    want: &(Bits, Vec<EpochRecord>),
    what: &str,
) {
    let (result, t) = attempt(ema, dir, resume, None, None);
    let summary = result.unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert_eq!(bits(&t), want.0, "{what}: parameters differ");
    assert_eq!(
        timeless(&summary.history),
        want.1,
        "{what}: history differs"
    );
    let log = MetricsLog::read_dir(dir).unwrap();
    assert_eq!(timeless(&log.records), want.1, "{what}: metrics.json");
    // The newest unit is the end of the run, the top-level model is its
    // model, at most two units are kept, nothing is left over.
    let units = unit::list(dir).unwrap();
    assert!(units.len() <= unit::KEEP, "{what}: {units:?}");
    let newest = &units[0].path;
    let manifest = unit::check(newest, true).unwrap();
    assert_eq!(manifest.epoch, EPOCHS, "{what}");
    assert_eq!(
        std::fs::read(dir.join(MODEL_FILE)).unwrap(),
        std::fs::read(newest.join(MODEL_FILE)).unwrap(),
        "{what}: top-level model.safetensors is not the newest unit's"
    );
    assert!(!dir.join(STATE_FILE).exists(), "{what}");
    assert_eq!(leftovers(dir), Vec::<String>::new(), "{what}");
}

/// A fresh run whose `k`-th write boundary fails with `f`, then the resume.
fn one_fault(ema: Averaging, name: &str, k: usize, f: Fault, want: &(Bits, Vec<EpochRecord>)) {
    let dir = tmp_dir(name);
    let what = format!(
        "{f:?} at boundary {k} (save {}, step {})",
        k / boundaries(ema),
        k % boundaries(ema)
    );
    let (result, _) = attempt(ema, &dir, false, Some((k, f)), None);
    let err = format!("{:#}", result.expect_err(&what));
    assert!(
        err.contains("injected fault") || err.contains("killed"),
        "{what}: {err}"
    );
    if f != Fault::Kill {
        // A failure, unlike a kill, cleans up after itself at once.
        assert_eq!(leftovers(&dir), Vec::<String>::new(), "{what}");
    }
    let expected = expected_after(ema, None, k);
    check_resume(ema, &dir, expected, &what);
    finish_and_compare(ema, &dir, expected.is_some(), want, &what);
}

#[test]
fn a_save_has_the_documented_write_boundaries_each_named_in_its_error() {
    let dir = tmp_dir("boundaries");
    let t = tiny_trainer(1);
    fault::reset();
    run_state::save(&dir, &t, Progress::default(), &[]).unwrap();
    assert_eq!(fault::passed(), BOUNDARIES);
    let names = [
        "creating",
        "model.safetensors",
        "train_state.safetensors",
        "history.json",
        "manifest.json",
        "renaming",
        "refreshing",
        "removing old checkpoints",
    ];
    for (k, name) in names.iter().enumerate() {
        fault::arm(k, FULL);
        let err = format!(
            "{:#}",
            run_state::save(&dir, &t, Progress::default(), &[]).unwrap_err()
        );
        assert!(err.contains(name) && err.contains("injected"), "{k}: {err}");
        if k > COMMIT {
            assert!(err.contains("is complete and resumable"), "{k}: {err}");
        }
    }
    fault::reset();
}

#[test]
fn a_save_with_an_average_writes_it_as_one_more_file_at_its_own_boundary() {
    let dir = tmp_dir("boundaries_ema");
    let t = trainer_for(WITH_EMA, 1);
    fault::reset();
    let saved = run_state::save(&dir, &t, Progress::default(), &[]).unwrap();
    assert_eq!(fault::passed(), boundaries(WITH_EMA));
    let manifest = unit::check(&saved, true).unwrap();
    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [MODEL_FILE, STATE_FILE, EMA_FILE, "history.json"]);
    let names = [
        "creating",
        "model.safetensors",
        "train_state.safetensors",
        "ema.safetensors",
        "history.json",
        "manifest.json",
        "renaming",
        "refreshing",
        "removing old checkpoints",
    ];
    for (k, name) in names.iter().enumerate() {
        fault::arm(k, FULL);
        let err = format!(
            "{:#}",
            run_state::save(&dir, &t, Progress::default(), &[]).unwrap_err()
        );
        assert!(err.contains(name) && err.contains("injected"), "{k}: {err}");
        if k > commit(WITH_EMA) {
            assert!(err.contains("is complete and resumable"), "{k}: {err}");
        }
    }
    fault::reset();
}

#[test]
fn a_kill_at_any_write_boundary_of_a_run_with_an_average_loses_nothing() {
    let want = straight(WITH_EMA);
    for k in 0..(EPOCHS + 1) * boundaries(WITH_EMA) {
        one_fault(WITH_EMA, &format!("kill_ema_{k}"), k, Fault::Kill, &want);
    }
}

#[test]
fn the_average_round_trips_through_a_unit_and_a_unit_without_it_is_refused() {
    // Stopped after step 3: the average was updated after step 2 only.
    let dir = tmp_dir("ema_round_trip");
    let (result, t) = attempt(WITH_EMA, &dir, false, None, Some(3));
    assert_eq!(result.unwrap().at.global_step, 3);
    assert_eq!(t.ema.as_ref().unwrap().updates(), 1);
    let mut back = trainer_for(WITH_EMA, 99);
    let r = run_state::resume_run(&dir, &mut back).unwrap();
    assert_eq!(r.progress.global_step, 3);
    assert_eq!(bits(&back), bits(&t), "parameters and average, bit for bit");
    assert_eq!(back.ema.as_ref().unwrap().updates(), 1);
    assert_ne!(
        store_bits(back.ema_store().unwrap()),
        store_bits(&back.store),
        "the average is not the weights"
    );
    // A run without an average resumes from it, ignoring the file.
    let r = resumable(&dir).unwrap();
    assert_eq!(r.progress.global_step, 3);

    // A damaged average makes the unit incomplete, like any of its files.
    let units = unit::list(&dir).unwrap();
    damage(&units[0].path.join(EMA_FILE), None);
    let r = resumable_with(WITH_EMA, &dir).unwrap();
    assert_eq!(r.source, units[1].path);
    assert!(
        r.skipped[0].1.contains("ema.safetensors: md5"),
        "{:?}",
        r.skipped
    );
    // An average of another step (resealed: the unit checks complete) is
    // refused, naming both files.
    std::fs::copy(units[1].path.join(EMA_FILE), units[0].path.join(EMA_FILE)).unwrap();
    unit::reseal(&units[0].path).unwrap();
    let err = format!("{:#}", resumable_with(WITH_EMA, &dir).unwrap_err());
    assert!(
        err.contains(EMA_FILE) && err.contains("is at step 0") && err.contains("at step 3"),
        "{err}"
    );

    // A unit saved without an average cannot resume a run that keeps one.
    let dir = tmp_dir("ema_missing");
    let (result, _) = attempt(NO_EMA, &dir, false, None, Some(3));
    result.unwrap();
    let err = format!("{:#}", resumable_with(WITH_EMA, &dir).unwrap_err());
    let newest = unit::list(&dir).unwrap()[0].path.clone();
    assert!(
        err.contains(&newest.display().to_string())
            && err.contains("no ema.safetensors")
            && err.contains("ema off"),
        "{err}"
    );
    // Nor can a run directory of the old layout.
    let (dir, _, _) = old_run("old_layout_ema");
    let err = format!("{:#}", resumable_with(WITH_EMA, &dir).unwrap_err());
    assert!(
        err.contains("old layout") && err.contains(EMA_FILE),
        "{err}"
    );
}

#[test]
fn a_kill_at_any_write_boundary_of_any_save_loses_no_completed_epoch() {
    let want = straight(NO_EMA);
    for k in 0..(EPOCHS + 1) * BOUNDARIES {
        one_fault(NO_EMA, &format!("kill_{k}"), k, Fault::Kill, &want);
    }
}

#[test]
fn a_full_disk_at_any_write_boundary_of_any_save_loses_no_completed_epoch() {
    let want = straight(NO_EMA);
    for k in 0..(EPOCHS + 1) * BOUNDARIES {
        one_fault(NO_EMA, &format!("full_{k}"), k, FULL, &want);
    }
}

#[test]
fn two_and_three_failures_in_a_row_still_resume() {
    let want = straight(NO_EMA);
    // The same boundary of the epoch-1 save failing again and again (the
    // issue's case: kills between the model and the state writes), and
    // mixtures of kills and full disks.
    let sequences: [&[Fault]; 3] = [
        &[Fault::Kill, Fault::Kill],
        &[Fault::Kill, FULL, Fault::Kill],
        &[FULL, FULL, FULL],
    ];
    for b in 0..BOUNDARIES {
        for (s, faults) in sequences.iter().enumerate() {
            let dir = tmp_dir(&format!("row_{b}_{s}"));
            let mut at: Option<usize> = None;
            for (i, &f) in faults.iter().enumerate() {
                // The first epoch-end save of this attempt.
                let first_epoch_end = usize::from(matches!(at, None | Some(0)));
                let k = first_epoch_end * BOUNDARIES + b;
                let what = format!("{faults:?}: failure {i} ({f:?} at boundary {b})");
                let (result, _) = attempt(NO_EMA, &dir, at.is_some(), Some((k, f)), None);
                assert!(result.is_err(), "{what}");
                let expected = expected_after(NO_EMA, at, k);
                check_resume(NO_EMA, &dir, expected, &what);
                at = expected;
            }
            finish_and_compare(NO_EMA, &dir, true, &want, &format!("{faults:?} at {b}"));
        }
    }
}

#[test]
fn a_failed_save_of_an_interrupted_run_keeps_the_epoch_before() {
    let want = straight(NO_EMA);
    // Stopped after step 4 of 9 (in epoch 2): the save of the interrupted
    // epoch is the third (after the initial one and epoch 1's).
    for f in [Fault::Kill, FULL] {
        for b in 0..BOUNDARIES {
            let dir = tmp_dir(&format!("interrupted_{b}_{f:?}"));
            let what = format!("{f:?} at boundary {b} of the interrupted save");
            let (result, _) = attempt(NO_EMA, &dir, false, Some((2 * BOUNDARIES + b, f)), Some(4));
            assert!(result.is_err(), "{what}");
            let r = resumable(&dir).unwrap();
            let at = (r.progress.epoch, r.progress.step, r.progress.global_step);
            if b > COMMIT {
                assert_eq!(at, (1, 1, 4), "{what}");
                assert_eq!(r.progress.tally.seen, 8, "{what}");
            } else {
                assert_eq!(at, (1, 0, 3), "{what}");
            }
            assert_eq!(r.history.unwrap().len(), 1, "{what}");
            finish_and_compare(NO_EMA, &dir, true, &want, &what);
        }
    }
    // Without a fault the interrupted save resumes mid-epoch.
    let dir = tmp_dir("interrupted_ok");
    let (result, _) = attempt(NO_EMA, &dir, false, None, Some(4));
    assert_eq!(result.unwrap().at.global_step, 4);
    finish_and_compare(NO_EMA, &dir, true, &want, "interrupted without a fault");
}

#[test]
fn leftovers_are_removed_by_the_next_save_and_by_resume() {
    let dir = tmp_dir("leftovers");
    let t = tiny_trainer(1);
    // A kill in the middle of writing the state file leaves a temporary
    // unit with a half-written file.
    fault::arm(2, Fault::Kill);
    run_state::save(&dir, &t, Progress::default(), &[]).unwrap_err();
    fault::reset();
    let left = leftovers(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    // So did older versions' atomic writes, at the top of the run directory.
    let old_tmp = dir.join(".train_state.safetensors.a1B2c3.tmp");
    std::fs::write(&old_tmp, vec![0u8; 1000]).unwrap();
    let unit = run_state::save(&dir, &t, Progress::default(), &[]).unwrap();
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "after the next save");
    assert!(unit::check(&unit, true).is_ok());

    // A kill during the refresh of the top-level model leaves its
    // temporary link; the resume removes it and says so.
    fault::arm(6, Fault::Kill);
    run_state::save(&dir, &t, Progress::default(), &[]).unwrap_err();
    fault::reset();
    assert_eq!(leftovers(&dir).len(), 1, "{:?}", leftovers(&dir));
    let r = resumable(&dir).unwrap();
    assert!(!r.removed.is_empty());
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "after resume");

    // Hidden temporaries that are not the run's own are left alone (`--out`
    // may be a directory holding more than the run).
    let foreign = dir.join(".notes.swp.tmp");
    std::fs::write(&foreign, b"mine").unwrap();
    run_state::save(&dir, &t, Progress::default(), &[]).unwrap();
    resumable(&dir).unwrap();
    assert!(foreign.exists());
}

#[test]
fn metrics_files_agree_with_the_checkpoint_once_resumed() {
    let dir = tmp_dir("metrics_agree");
    // Killed in epoch 2's save, after MetricsFiles wrote epoch 2's record.
    let (result, _) = attempt(
        NO_EMA,
        &dir,
        false,
        Some((2 * BOUNDARIES + 1, Fault::Kill)),
        None,
    );
    assert!(result.is_err());
    assert_eq!(MetricsLog::read_dir(&dir).unwrap().records.len(), 2);
    // The resumed run (here stopped after one step) rewrites the files
    // from the checkpoint's history: epoch 2 is to be trained again.
    let (result, _) = attempt(NO_EMA, &dir, true, None, Some(4));
    assert_eq!(result.unwrap().at.global_step, 4);
    let log = MetricsLog::read_dir(&dir).unwrap();
    assert_eq!(log.records.len(), 1, "{log:?}");
    let csv = std::fs::read_to_string(dir.join(train::report::CSV_FILE)).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
}

/// Flips one byte of `path` (same size) or cuts it to `len`.
fn damage(path: &Path, cut_to: Option<usize>) {
    let mut bytes = std::fs::read(path).unwrap();
    match cut_to {
        Some(len) => bytes.truncate(len),
        None => {
            let i = bytes.len() - 3;
            bytes[i] ^= 0x40;
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn resume_skips_a_damaged_newer_unit_and_says_why() {
    let want = straight(NO_EMA);
    for (name, cut) in [("bitflip", None), ("truncated", Some(100))] {
        let dir = tmp_dir(&format!("damaged_{name}"));
        let (result, _) = attempt(NO_EMA, &dir, false, None, Some(7));
        result.unwrap();
        let units = unit::list(&dir).unwrap();
        assert_eq!(units.len(), 2);
        damage(&units[0].path.join(STATE_FILE), cut);
        let r = resumable(&dir).unwrap();
        assert_eq!(r.source, units[1].path, "{name}: the older complete unit");
        assert_eq!(r.progress.epoch, 2, "{name}");
        assert_eq!(r.skipped.len(), 1, "{name}");
        let (skipped, why) = &r.skipped[0];
        assert_eq!(skipped, &units[0].path);
        let expect = if cut.is_some() { "100 bytes" } else { "md5" };
        assert!(
            why.contains(STATE_FILE) && why.contains(expect),
            "{name}: {why}"
        );
        finish_and_compare(NO_EMA, &dir, true, &want, name);
    }
}

#[test]
fn a_complete_unit_that_does_not_fit_the_model_is_an_error_not_a_fallback() {
    let dir = tmp_dir("does_not_fit");
    let (result, _) = attempt(NO_EMA, &dir, false, None, Some(4));
    result.unwrap();
    // Another network (wider last stage) cannot take these weights: the
    // error names the unit's file and the tensor, and no older unit is
    // tried in its place.
    let spec = ModelSpec {
        version: ResNetVersion::V1,
        stem_filters: 4,
        depths: vec![1, 1, 1, 1],
        widths: vec![4, 4, 8, 16],
        num_classes: Some(4),
        unbiased_moving_variance: false,
        bn_momentum: nn::layers::batch_norm::KERAS_MOMENTUM,
    };
    let (model, store) = nn::ResNet::new(spec.config(32, 1)).unwrap();
    let mut other = Trainer::new(
        Box::new(model),
        store,
        Box::new(Adam::new(AdamConfig::default())),
        LrSchedule::constant(1e-3),
    );
    let err = format!("{:#}", run_state::resume_run(&dir, &mut other).unwrap_err());
    let newest = unit::list(&dir).unwrap()[0].path.clone();
    assert!(
        err.contains(&newest.display().to_string()) && err.contains("has shape"),
        "{err}"
    );
}

// ---- Run directories of the old layout ----

/// Writes `t` at `p` as versions before checkpoint units did: a top-level
/// `model.safetensors` + `train_state.safetensors` pair (or its `.prev`).
fn write_old_pair(dir: &Path, t: &Trainer, p: Progress, suffix: &str) {
    let model_meta = Metadata::from([("global_step".to_string(), p.global_step.to_string())]);
    checkpoint::save(
        &t.store,
        &dir.join(format!("{MODEL_FILE}{suffix}")),
        &model_meta,
    )
    .unwrap();
    let (tensors, mut meta) = t.optimizer.state().encode(&t.store);
    meta.extend([
        ("epoch".to_string(), p.epoch.to_string()),
        ("step".to_string(), p.step.to_string()),
        ("global_step".to_string(), p.global_step.to_string()),
        (
            "epoch_loss_sum".to_string(),
            format!("{:e}", p.tally.loss_sum),
        ),
        ("epoch_correct".to_string(), p.tally.correct.to_string()),
        ("epoch_seen".to_string(), p.tally.seen.to_string()),
    ]);
    checkpoint::write(
        &dir.join(format!("{STATE_FILE}{suffix}")),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &meta,
    )
    .unwrap();
}

/// An old-layout run directory stopped after epoch 1 (history in
/// metrics.json), with the epoch-1 pair also kept as `.prev`.
fn old_run(name: &str) -> (PathBuf, Trainer, Progress) {
    let dir = tmp_dir(name);
    let mut t = tiny_trainer(7);
    let data = data();
    let d = FitData {
        train: &data,
        val: None,
        test: Some(&data),
    };
    let mut metrics = MetricsFiles::new(&dir);
    let cfg = FitConfig {
        epochs: 1,
        ..config()
    };
    let s = fit(
        &mut t,
        &d,
        &cfg,
        Start::fresh(),
        &mut [&mut metrics],
        &AtomicBool::new(false),
    )
    .unwrap();
    write_old_pair(&dir, &t, s.at, "");
    write_old_pair(&dir, &t, s.at, ".prev");
    (dir, t, s.at)
}

#[test]
fn old_run_directories_still_resume_and_move_to_units() {
    let want = straight(NO_EMA);
    let (dir, _, at) = old_run("old_layout");
    let r = resumable(&dir).unwrap();
    assert_eq!(r.progress, at);
    assert_eq!(r.history, None, "the history is in metrics.json");
    assert_eq!(r.source, dir.join(MODEL_FILE));
    finish_and_compare(NO_EMA, &dir, true, &want, "old layout");
    for f in [format!("{MODEL_FILE}.prev"), format!("{STATE_FILE}.prev")] {
        assert!(!dir.join(f).exists(), "the old pair is replaced by units");
    }
}

#[test]
fn an_old_run_killed_between_its_two_writes_falls_back_to_the_previous_pair() {
    let want = straight(NO_EMA);
    let (dir, mut t, at) = old_run("old_half_written");
    // The old save died after writing the model of a later step but
    // before its state.
    t.global_step += 1;
    let meta = Metadata::from([("global_step".to_string(), t.global_step.to_string())]);
    checkpoint::save(&t.store, &dir.join(MODEL_FILE), &meta).unwrap();
    let r = resumable(&dir).unwrap();
    assert_eq!(r.progress, at, "falls back to the pair before");
    assert_eq!(r.source, dir.join(format!("{MODEL_FILE}.prev")));
    finish_and_compare(NO_EMA, &dir, true, &want, "old layout, half written");

    // Without a previous pair the mismatch is an error that says so.
    let (dir, mut t, _) = old_run("old_half_written_no_prev");
    for f in [MODEL_FILE, STATE_FILE] {
        std::fs::remove_file(dir.join(format!("{f}.prev"))).unwrap();
    }
    t.global_step += 1;
    checkpoint::save(&t.store, &dir.join(MODEL_FILE), &meta).unwrap();
    let err = format!("{:#}", resumable(&dir).unwrap_err());
    assert!(err.contains("between the two writes"), "{err}");
}

//! `examples/finetune_folder.rs`, the API a Rust user meets, run on a
//! generated image folder (with a narrow network instead of ResNet50, to
//! keep the test quick).

mod common;

#[path = "../examples/finetune_folder.rs"]
#[allow(dead_code)] // its `main` is not called here
mod finetune_folder;

use std::path::PathBuf;
use train::fit::EndReason;

#[test]
fn the_example_fine_tunes_on_an_image_folder() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("example_folder");
    let _ = std::fs::remove_dir_all(&root);
    common::write_image_folder(&root.join("images"), 3, 40, 10);
    let options = finetune_folder::Options {
        folder: root.join("images"),
        weights: None,
        epochs: 4,
        model: common::narrow_spec(None),
        out: root.join("run"),
    };
    let (summary, test) = finetune_folder::finetune(&options).unwrap();
    assert!(matches!(
        summary.reason,
        EndReason::Completed | EndReason::StoppedEarly
    ));
    // 120 training images, a tenth held out: every epoch was validated.
    assert!(summary.history.iter().all(|r| r.val_loss.is_some()));
    assert!(root.join("run/best.safetensors").exists());
    assert_eq!(test.images, 30);
    assert_eq!(test.confusion.num_classes(), 3);
}

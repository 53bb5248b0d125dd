//! The environment variables, end to end: `RESNET_RS_CACHE`, `KERAS_HOME`,
//! `IMAGENET_WEIGHTS_URL` / `_MD5` and `CIFAR10_URL` / `_MD5` pointed at a
//! local server. One test in its own binary, because it sets process-wide
//! environment variables.

mod local_server;

use std::fs;

use local_server::http::{Reply, Server};
use local_server::{listing, payload};
use train::data::{self, synthetic};
use train::fetch::{self, md5_hex, WeightsOrigin};

#[test]
fn environment_moves_the_cache_and_replaces_urls_and_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("our-cache");
    let weights = payload(40_000, 9);
    let cifar = synthetic::cifar10(2, 1, 9);
    let archive = {
        let p = tmp.path().join("src.tar.gz");
        synthetic::write_binary_tar_gz(&p, &cifar).unwrap();
        fs::read(p).unwrap()
    };
    let server = Server::start(vec![
        ("/w/notop.h5", Reply::Ok(weights.clone())),
        ("/cifar-10-binary.tar.gz", Reply::Ok(archive.clone())),
    ]);
    // Where the cache goes: RESNET_RS_CACHE, else an absolute
    // XDG_CACHE_HOME, else ~/.cache.
    std::env::remove_var("RESNET_RS_CACHE");
    std::env::set_var("HOME", tmp.path().join("home"));
    std::env::set_var("XDG_CACHE_HOME", "relative/is/ignored");
    assert_eq!(fetch::cache_dir(), tmp.path().join("home/.cache/resnet-rs"));
    std::env::set_var("XDG_CACHE_HOME", tmp.path().join("xdg"));
    assert_eq!(fetch::cache_dir(), tmp.path().join("xdg/resnet-rs"));
    std::env::set_var("RESNET_RS_CACHE", &cache);
    std::env::set_var("KERAS_HOME", tmp.path().join("keras-home"));
    std::env::set_var("IMAGENET_WEIGHTS_URL", server.url("/w/notop.h5"));
    std::env::set_var("IMAGENET_WEIGHTS_MD5", md5_hex(&weights));
    std::env::set_var("CIFAR10_URL", server.url("/cifar-10-binary.tar.gz"));
    std::env::set_var("CIFAR10_MD5", md5_hex(&archive));
    assert_eq!(fetch::cache_dir(), cache);

    // ImageNet weights: downloaded into our cache under Keras's name, once.
    let found = fetch::keras_weights("resnet50", false).unwrap();
    let name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5";
    assert_eq!(found.path, cache.join("models").join(name));
    assert!(matches!(found.origin, WeightsOrigin::Downloaded { .. }));
    assert_eq!(fs::read(&found.path).unwrap(), weights);
    let again = fetch::keras_weights("resnet50", false).unwrap();
    assert_eq!(again.origin, WeightsOrigin::OurCache);
    assert_eq!(server.requests(), 1);

    // A Keras cache with the file is preferred.
    let keras_models = tmp.path().join("keras-home/models");
    fs::create_dir_all(&keras_models).unwrap();
    fs::write(keras_models.join(name), &weights).unwrap();
    let keras = fetch::keras_weights("resnet50", false).unwrap();
    assert_eq!(keras.origin, WeightsOrigin::KerasCache);
    assert_eq!(server.requests(), 1);

    // CIFAR-10: the remote comes from the environment...
    let remote = fetch::cifar10_remote().unwrap();
    assert_eq!(remote.url, server.url("/cifar-10-binary.tar.gz"));
    assert_eq!(remote.md5, md5_hex(&archive));

    // ...and `data::load(None, ..)` downloads it when no local copy exists
    // (the search is relative to the current directory, the crate's own
    // during tests, which holds neither data/cifar10 nor ../shared).
    let local = [data::DEFAULT_DATA_DIR, data::SHARED_ARCHIVE]
        .iter()
        .map(|rel| std::env::current_dir().unwrap().join(rel))
        .find(|p| p.exists());
    if let Some(p) = local {
        eprintln!(
            "skipped the download through data::load: a local copy exists at {}",
            p.display()
        );
        return;
    }
    let decoded = tmp.path().join("decoded");
    let (got, report) = data::load(None, Some(&decoded)).unwrap();
    assert_eq!(got, cifar);
    assert!(report.notes[0].contains("downloaded from"), "{report}");
    assert_eq!(
        listing(&cache.join("datasets")),
        [
            "cifar-10-binary.tar.gz",
            "cifar-10-binary.tar.gz.md5-verified"
        ]
    );
    let (_, report) = data::load(None, Some(&decoded)).unwrap();
    assert!(
        report.from_cache && report.notes[0].contains("download cache"),
        "{report}"
    );
    assert_eq!(server.requests(), 2, "one download per file over two runs");

    // A wrong checksum from the environment: refused, nothing cached.
    fs::remove_dir_all(cache.join("datasets")).unwrap();
    std::env::set_var("CIFAR10_MD5", "ffffffffffffffffffffffffffffffff");
    let e = data::load(None, None).unwrap_err().to_string();
    assert!(e.contains("md5 mismatch"), "{e}");
    assert!(listing(&cache.join("datasets")).is_empty());
    std::env::set_var("CIFAR10_MD5", "not-an-md5");
    let e = data::load(None, None).unwrap_err().to_string();
    assert!(e.contains("CIFAR10_MD5") && e.contains("not-an-md5"), "{e}");
}

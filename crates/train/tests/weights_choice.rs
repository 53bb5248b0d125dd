//! `--weights auto|imagenet|none|FILE` resolved as the main job does:
//! Keras's ImageNet weights when they can be had (here from a local server
//! through `IMAGENET_WEIGHTS_URL`), Keras initialization otherwise. One
//! test in its own binary: it sets process-wide environment variables.

mod local_server;

use local_server::http::{refused_url, Reply, Server};
use local_server::payload;
use train::fetch::md5_hex;
use train::model_spec::ModelSpec;
use train::weights_choice::{resolve, WeightsChoice};

#[test]
fn auto_takes_imagenet_weights_when_they_can_be_had_and_falls_back_when_not() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", tmp.path().join("home"));
    std::env::set_var("RESNET_RS_CACHE", tmp.path().join("cache"));
    std::env::set_var("KERAS_HOME", tmp.path().join("keras-home"));
    let resnet50 = ModelSpec::resnet50(Some(10));
    let narrow = ModelSpec {
        widths: vec![8, 8, 16, 16],
        ..ModelSpec::resnet50(Some(10))
    };
    let choice = |s: &str| s.parse::<WeightsChoice>().unwrap();

    // No server: auto falls back to Keras initialization, imagenet refuses.
    std::env::set_var("IMAGENET_WEIGHTS_URL", refused_url("/notop.h5"));
    assert_eq!(resolve(&choice("auto"), &resnet50).unwrap(), None);
    let err = resolve(&choice("imagenet"), &resnet50).unwrap_err();
    assert!(format!("{err:#}").contains("127.0.0.1"), "{err:#}");

    // A modified architecture has no ImageNet weights: auto never looks.
    assert_eq!(resolve(&choice("auto"), &narrow).unwrap(), None);
    let err = resolve(&choice("imagenet"), &narrow).unwrap_err();
    assert!(err.to_string().contains("only"), "{err}");

    // none and a file are taken as they are.
    assert_eq!(resolve(&choice("none"), &resnet50).unwrap(), None);
    let file = tmp.path().join("w.safetensors");
    assert_eq!(
        resolve(&choice(file.to_str().unwrap()), &resnet50).unwrap(),
        Some(file)
    );
    // A relative file is stored absolute (config.json is read from anywhere).
    let relative = resolve(&choice("w.safetensors"), &resnet50).unwrap();
    assert_eq!(
        relative,
        Some(std::env::current_dir().unwrap().join("w.safetensors"))
    );

    // With a mirror: auto downloads, verifies and caches, once.
    let weights = payload(10_000, 3);
    let server = Server::start(vec![("/notop.h5", Reply::Ok(weights.clone()))]);
    std::env::set_var("IMAGENET_WEIGHTS_URL", server.url("/notop.h5"));
    std::env::set_var("IMAGENET_WEIGHTS_MD5", md5_hex(&weights));
    let got = resolve(&choice("auto"), &resnet50).unwrap().unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), weights);
    assert_eq!(resolve(&choice("imagenet"), &resnet50).unwrap(), Some(got));
    assert_eq!(server.requests(), 1);
}

//! The downloader against a server this test starts on 127.0.0.1: a good
//! transfer, a wrong checksum, transfers cut short, servers that refuse, and
//! cache hits that make no request. Every failure must leave nothing in the
//! cache folder that could be taken for the file.

mod local_server;

use std::fs;

use local_server::http::{refused_url, Reply, Server};
use local_server::{listing, payload};
use train::fetch::{self, md5_hex, FetchError, Remote, WeightsOrigin};

fn remote(url: String, body: &[u8], name: &str) -> Remote {
    Remote {
        url,
        md5: md5_hex(body),
        file_name: name.to_string(),
    }
}

#[test]
fn good_transfer_then_cache_hits_make_no_request() {
    let body = payload(700_000, 1);
    let server = Server::start(vec![("/d/file.bin", Reply::Ok(body.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache/datasets");
    let r = remote(server.url("/d/file.bin"), &body, "file.bin");

    let got = fetch::fetch(&r, &dir).unwrap();
    assert!(got.downloaded);
    assert_eq!(got.path, dir.join("file.bin"));
    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert_eq!(server.requests(), 1);
    assert_eq!(
        listing(&dir),
        ["file.bin", "file.bin.md5-verified"],
        "no temporary file left"
    );

    // Present and verified: no request.
    let again = fetch::fetch(&r, &dir).unwrap();
    assert!(!again.downloaded);
    assert_eq!(server.requests(), 1);

    // Without the sidecar the file is hashed again, still no request.
    fs::remove_file(fetch::sidecar_path(&got.path)).unwrap();
    assert!(!fetch::fetch(&r, &dir).unwrap().downloaded);
    assert_eq!(server.requests(), 1);
    assert!(fetch::sidecar_path(&got.path).exists(), "sidecar rewritten");

    // A cache hit does not need the server at all.
    drop(server);
    let offline = Remote {
        url: refused_url("/d/file.bin"),
        ..r
    };
    assert!(!fetch::fetch(&offline, &dir).unwrap().downloaded);
}

#[test]
fn parts_left_by_killed_downloads_are_removed_once_stale() {
    let body = payload(1000, 6);
    let server = Server::start(vec![("/f.bin", Reply::Ok(body.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old = dir.join(".f.bin.abc123.part");
    let fresh = dir.join(".f.bin.def456.part");
    let other = dir.join(".g.bin.abc123.part");
    for p in [&old, &fresh, &other] {
        fs::write(p, b"partial").unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [&old, &other] {
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    let r = remote(server.url("/f.bin"), &body, "f.bin");
    fetch::fetch(&r, dir).unwrap();
    assert_eq!(
        listing(dir),
        [
            ".f.bin.def456.part", // may be a download still running
            ".g.bin.abc123.part", // another file's
            "f.bin",
            "f.bin.md5-verified"
        ]
    );
}

#[test]
fn wrong_checksum_is_refused_and_nothing_is_cached() {
    let body = payload(50_000, 2);
    let server = Server::start(vec![("/f.tar.gz", Reply::Ok(body.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut r = remote(server.url("/f.tar.gz"), &body, "f.tar.gz");
    r.md5 = "0123456789abcdef0123456789abcdef".into();
    let e = fetch::fetch(&r, &dir).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, FetchError::Checksum { bytes: 50_000, .. }),
        "{e:?}"
    );
    for needle in [
        r.url.as_str(),
        r.md5.as_str(),
        &md5_hex(&body),
        "50000 bytes",
    ] {
        assert!(msg.contains(needle), "'{needle}' missing from: {msg}");
    }
    assert!(listing(&dir).is_empty(), "left: {:?}", listing(&dir));
    // A second try downloads again (nothing was cached) and fails the same way.
    assert!(fetch::fetch(&r, &dir).is_err());
    assert_eq!(server.requests(), 2);
    assert!(listing(&dir).is_empty());
}

#[test]
fn transfers_cut_short_leave_nothing() {
    let body = payload(200_000, 3);
    let server = Server::start(vec![
        (
            "/cut",
            Reply::Cut {
                body: body[..80_000].to_vec(),
                declared: body.len(),
            },
        ),
        ("/nolength", Reply::NoLength(body[..80_000].to_vec())),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");

    // Content-Length announced, connection closed early.
    let r = remote(server.url("/cut"), &body, "cut.bin");
    let e = fetch::fetch(&r, &dir).unwrap_err();
    match &e {
        FetchError::Truncated {
            received, expected, ..
        } => {
            assert_eq!(*expected, Some(200_000));
            assert!(*received <= 80_000, "{e}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&r.url) && msg.contains("of 200000"), "{msg}");
    assert!(listing(&dir).is_empty(), "left: {:?}", listing(&dir));

    // No Content-Length: the cut is invisible to HTTP; the md5 catches it.
    let r = remote(server.url("/nolength"), &body, "nolength.bin");
    let e = fetch::fetch(&r, &dir).unwrap_err();
    assert!(
        matches!(e, FetchError::Checksum { bytes: 80_000, .. }),
        "{e:?}"
    );
    assert!(listing(&dir).is_empty(), "left: {:?}", listing(&dir));
}

#[test]
fn servers_that_refuse_give_clear_errors() {
    let server = Server::start(vec![("/broken", Reply::Status(500))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    for (path, status) in [("/missing", 404u16), ("/broken", 500)] {
        let r = remote(server.url(path), b"x", "x.bin");
        let e = fetch::fetch(&r, &dir).unwrap_err();
        assert!(
            matches!(&e, FetchError::Http { status: s, .. } if *s == status),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&r.url) && msg.contains(&status.to_string()),
            "{msg}"
        );
    }
    assert!(listing(&dir).is_empty(), "left: {:?}", listing(&dir));

    let r = remote(refused_url("/x.bin"), b"x", "x.bin");
    let e = fetch::fetch(&r, &dir).unwrap_err();
    assert!(matches!(e, FetchError::Transport { .. }), "{e:?}");
    assert_eq!(
        e.to_string().matches(&r.url).count(),
        1,
        "URL named once: {e}"
    );
    assert!(listing(&dir).is_empty(), "left: {:?}", listing(&dir));
}

#[test]
fn a_wrong_file_in_the_cache_is_replaced_and_a_failed_retry_keeps_it() {
    let body = payload(10_000, 4);
    let server = Server::start(vec![("/good", Reply::Ok(body.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fs::write(dir.join("f.bin"), b"old version").unwrap();

    // The download fails: the old file stays as it was, nothing else appears.
    let bad = remote(server.url("/nothing-here"), &body, "f.bin");
    assert!(fetch::fetch(&bad, &dir).is_err());
    assert_eq!(fs::read(dir.join("f.bin")).unwrap(), b"old version");
    assert!(listing(&dir)
        .iter()
        .all(|n| n == "f.bin" || n == "f.bin.md5-verified"));

    let good = remote(server.url("/good"), &body, "f.bin");
    assert!(fetch::fetch(&good, &dir).unwrap().downloaded);
    assert_eq!(fs::read(dir.join("f.bin")).unwrap(), body);
    assert!(!fetch::fetch(&good, &dir).unwrap().downloaded);
    assert_eq!(server.requests(), 2);
}

#[test]
fn keras_weights_come_from_keras_cache_ours_or_the_network() {
    let weights = payload(30_000, 5);
    let name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5";
    let server = Server::start(vec![("/w.h5", Reply::Ok(weights.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let keras = tmp.path().join("keras/models");
    let ours = tmp.path().join("ours/models");
    let r = fetch::weights_remote_from(
        "resnet50",
        false,
        Some(server.url("/w.h5")),
        Some(md5_hex(&weights)),
    )
    .unwrap();
    assert_eq!(r.file_name, name);

    // Keras's cache holds it: used in place, no request, nothing written there.
    fs::create_dir_all(&keras).unwrap();
    fs::write(keras.join(name), &weights).unwrap();
    let found = fetch::keras_weights_in(&r, Some(&keras), &ours).unwrap();
    assert_eq!(found.origin, WeightsOrigin::KerasCache);
    assert_eq!(found.path, keras.join(name));
    assert_eq!(listing(&keras), [name]);
    assert_eq!(server.requests(), 0);

    // A different file under that name in Keras's cache is ignored: download.
    fs::write(keras.join(name), b"another file").unwrap();
    let found = fetch::keras_weights_in(&r, Some(&keras), &ours).unwrap();
    assert_eq!(
        found.origin,
        WeightsOrigin::Downloaded {
            url: server.url("/w.h5")
        }
    );
    assert_eq!(found.path, ours.join(name));
    assert_eq!(fs::read(&found.path).unwrap(), weights);
    assert!(found.to_string().contains("downloaded from"), "{found}");
    assert_eq!(server.requests(), 1);

    // Then ours is a cache hit.
    let found = fetch::keras_weights_in(&r, None, &ours).unwrap();
    assert_eq!(found.origin, WeightsOrigin::OurCache);
    assert_eq!(server.requests(), 1);
}

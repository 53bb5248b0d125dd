//! The CIFAR-10 data path on generated data: the binary release read
//! extracted and straight from its `.tar.gz`, image folders and their
//! archive, malformed batches, and the download path against a local
//! server. Runs with no copy of CIFAR-10 and no network; the tests on the
//! real copy in `../shared` say when they are skipped.

mod local_server;

use std::fs;
use std::path::PathBuf;

use local_server::http::{refused_url, Reply, Server};
use local_server::listing;
use train::data::{self, synthetic, Cifar10, Dataset, Source, IMAGE_BYTES, RECORD_BYTES};
use train::fetch::{self, md5_hex, Remote};

/// `data` in the order the image-folder reader lists it: by class name,
/// then file name (the generation index).
fn folder_order(d: &Dataset) -> Dataset {
    let mut idx: Vec<usize> = (0..d.len()).collect();
    idx.sort_by_key(|&i| (d.classes[d.labels[i] as usize].clone(), i));
    d.subset(&idx)
}

#[test]
fn synthetic_classes_are_learnable_and_deterministic() {
    let data = synthetic::cifar10(20, 10, 7);
    assert_eq!(data.train.len(), 200);
    assert_eq!(data.test.len(), 100);
    assert_eq!(data.train.class_counts(), vec![20; 10]);
    assert_eq!(data, synthetic::cifar10(20, 10, 7));
    assert_ne!(data, synthetic::cifar10(20, 10, 8));
    assert_ne!(data.train.image(0), data.train.image(10), "images differ");

    // Nearest class mean, learned on train, classifies test well...
    let mut means = vec![vec![0f64; IMAGE_BYTES]; 10];
    for i in 0..data.train.len() {
        for (m, &p) in means[data.train.labels[i] as usize]
            .iter_mut()
            .zip(data.train.image(i))
        {
            *m += p as f64 / 20.0;
        }
    }
    let predict = |img: &[u8]| {
        (0..10)
            .min_by(|&a, &b| {
                let d = |c: usize| {
                    img.iter()
                        .zip(&means[c])
                        .map(|(&p, &m)| (p as f64 - m).powi(2))
                        .sum::<f64>()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap() as u8
    };
    let correct = (0..data.test.len())
        .filter(|&i| predict(data.test.image(i)) == data.test.labels[i])
        .count();
    assert!(correct >= 90, "nearest-mean accuracy {correct}/100");
    // ...but no single pixel gives the class away: noise overlaps classes.
    let first_red: Vec<u8> = (0..10).map(|i| data.train.image(i)[0]).collect();
    assert!(first_red.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn binary_release_reads_the_same_extracted_and_as_tar_gz() {
    // 23 train images: batches of 4 and 5 records, not 10,000.
    let mut data = synthetic::cifar10(3, 2, 1);
    data.train = data.train.subset(&(0..23).collect::<Vec<_>>());
    let tmp = tempfile::tempdir().unwrap();

    synthetic::write_binary_release(&tmp.path().join("rel"), &data).unwrap();
    let source = data::detect(&tmp.path().join("rel")).unwrap();
    assert!(matches!(source, Source::Binary(_)), "{source:?}");
    assert_eq!(data::load_source(&source).unwrap(), data);

    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    synthetic::write_binary_tar_gz(&archive, &data).unwrap();
    let source = data::detect(&archive).unwrap();
    assert_eq!(source, Source::BinaryTarGz(archive.canonicalize().unwrap()));
    assert_eq!(source.kind(), "CIFAR-10 binary release archive");
    assert_eq!(data::load_source(&source).unwrap(), data);

    // A folder holding only that archive is recognized too.
    fs::create_dir_all(tmp.path().join("dl")).unwrap();
    fs::rename(&archive, tmp.path().join("dl/c.tgz")).unwrap();
    let source = data::detect(&tmp.path().join("dl")).unwrap();
    assert!(matches!(source, Source::BinaryTarGz(_)), "{source:?}");

    // And through the decoded-data cache.
    let cache = tmp.path().join("cache");
    let (a, r1) = data::load(Some(&tmp.path().join("dl")), Some(&cache)).unwrap();
    let (b, r2) = data::load(Some(&tmp.path().join("dl")), Some(&cache)).unwrap();
    assert!(!r1.from_cache && r2.from_cache, "{r1}\n{r2}");
    assert_eq!(a, data);
    assert_eq!(b, data);
}

/// The published archive also holds `readme.html` (first, here) and a
/// folder entry; members may come in any order.
#[test]
fn binary_tar_gz_members_in_any_order_with_extra_files() {
    let data = synthetic::cifar10(2, 1, 2);
    let mut members: Vec<(String, Vec<u8>)> = synthetic::release_files(&data)
        .unwrap()
        .into_iter()
        .map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b))
        .collect();
    members.reverse();
    members.insert(
        0,
        (
            "cifar-10-batches-bin/readme.html".into(),
            b"<html/>".to_vec(),
        ),
    );
    members.push((
        "__MACOSX/cifar-10-batches-bin/._test_batch.bin".into(),
        vec![0; 7],
    ));
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.gz");
    synthetic::write_files_tar_gz(&archive, &members).unwrap();
    let source = data::detect(&archive).unwrap();
    assert!(matches!(source, Source::BinaryTarGz(_)), "{source:?}");
    assert_eq!(data::load_source(&source).unwrap(), data);

    // The same batch twice is refused rather than silently picked.
    let batch2 = members
        .iter()
        .find(|(n, _)| n.ends_with("/data_batch_2.bin"))
        .unwrap()
        .1
        .clone();
    members.push(("other/data_batch_2.bin".into(), batch2));
    synthetic::write_files_tar_gz(&archive, &members).unwrap();
    let e = data::load_source(&source).unwrap_err().to_string();
    assert!(e.contains("more than one data_batch_2.bin"), "{e}");
}

#[test]
fn image_folders_read_the_same_extracted_and_as_tar_gz() {
    let data = synthetic::cifar10(2, 1, 3);
    let expected = Cifar10 {
        train: folder_order(&data.train),
        test: folder_order(&data.test),
    };
    let tmp = tempfile::tempdir().unwrap();
    synthetic::write_image_folders(&tmp.path().join("imgs"), &data).unwrap();
    let source = data::detect(&tmp.path().join("imgs")).unwrap();
    assert!(matches!(source, Source::ImageDir(_)));
    assert_eq!(data::load_source(&source).unwrap(), expected);

    synthetic::write_image_tar_gz(&tmp.path().join("imgs.tar.gz"), &data).unwrap();
    let source = data::detect(&tmp.path().join("imgs.tar.gz")).unwrap();
    assert!(matches!(source, Source::TarGz(_)), "{source:?}");
    assert_eq!(data::load_source(&source).unwrap(), expected);
}

#[test]
fn a_partial_record_is_refused_naming_the_file_and_its_size() {
    let data = synthetic::cifar10(1, 1, 4);
    let mut files = synthetic::release_files(&data).unwrap();
    let (name, bytes) = files
        .iter_mut()
        .find(|(n, _)| n == "data_batch_3.bin")
        .unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    let size = bytes.len();
    assert_eq!(size, 2 * RECORD_BYTES + 100);
    let name = name.clone();
    let tmp = tempfile::tempdir().unwrap();

    // Extracted.
    let dir = tmp.path().join("rel");
    fs::create_dir_all(&dir).unwrap();
    for (n, b) in &files {
        fs::write(dir.join(n), b).unwrap();
    }
    let e = data::load_source(&data::detect(&dir).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&name) && e.contains(&format!("size {size} bytes")),
        "{e}"
    );

    // In an archive: the member is named inside the archive's path.
    let archive = tmp.path().join("bad.tar.gz");
    let members: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b.clone()))
        .collect();
    synthetic::write_files_tar_gz(&archive, &members).unwrap();
    let e = data::load_source(&data::detect(&archive).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.tar.gz/cifar-10-batches-bin/data_batch_3.bin")
            && e.contains(&format!("size {size} bytes")),
        "{e}"
    );

    // A missing batch is named too.
    let without: Vec<_> = synthetic::release_files(&data)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "test_batch.bin")
        .map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b))
        .collect();
    synthetic::write_files_tar_gz(&archive, &without).unwrap();
    let e = data::load_source(&data::detect(&archive).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.tar.gz") && e.contains("has no test_batch.bin"),
        "{e}"
    );
}

fn archive_bytes(data: &Cifar10) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.tar.gz");
    synthetic::write_binary_tar_gz(&p, data).unwrap();
    fs::read(p).unwrap()
}

#[test]
fn not_found_locally_is_downloaded_once_then_cached() {
    let data = synthetic::cifar10(2, 1, 5);
    let bytes = archive_bytes(&data);
    let server = Server::start(vec![("/mirror/small.tar.gz", Reply::Ok(bytes.clone()))]);
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = vec![
        tmp.path().join("data/cifar10"),
        tmp.path().join("shared.tar.gz"),
    ];
    let remote = fetch::cifar10_remote_from(
        Some(server.url("/mirror/small.tar.gz")),
        Some(md5_hex(&bytes)),
    )
    .unwrap();
    let dl = tmp.path().join("cache/datasets");

    let got = data::locate_or_fetch_in(&nowhere, &remote, &dl).unwrap();
    assert_eq!(got.source, Source::BinaryTarGz(dl.join("small.tar.gz")));
    assert!(
        got.fetched.as_deref().unwrap().contains("downloaded from"),
        "{got:?}"
    );
    assert_eq!(data::load_source(&got.source).unwrap(), data);
    assert_eq!(server.requests(), 1);

    let again = data::locate_or_fetch_in(&nowhere, &remote, &dl).unwrap();
    assert_eq!(again.source, got.source);
    assert!(again.fetched.as_deref().unwrap().contains("download cache"));
    assert_eq!(server.requests(), 1, "second run makes no request");

    // A local copy wins over the download cache.
    synthetic::write_binary_release(&nowhere[0], &data).unwrap();
    let local = data::locate_or_fetch_in(&nowhere, &remote, &dl).unwrap();
    assert!(matches!(local.source, Source::Binary(_)) && local.fetched.is_none());
}

#[test]
fn a_wrong_checksum_through_the_data_path_caches_nothing() {
    let bytes = archive_bytes(&synthetic::cifar10(1, 1, 6));
    let server = Server::start(vec![("/c.tar.gz", Reply::Ok(bytes))]);
    let tmp = tempfile::tempdir().unwrap();
    let remote = Remote {
        url: server.url("/c.tar.gz"),
        md5: fetch::CIFAR10_DEFAULT_MD5.into(),
        file_name: "c.tar.gz".into(),
    };
    let dl = tmp.path().join("dl");
    let e = data::locate_or_fetch_in(&[], &remote, &dl)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("md5 mismatch") && e.contains(fetch::CIFAR10_DEFAULT_MD5),
        "{e}"
    );
    assert!(listing(&dl).is_empty(), "left: {:?}", listing(&dl));
}

#[test]
fn no_network_gives_one_error_saying_what_was_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let places: Vec<PathBuf> = vec![tmp.path().join("data/cifar10"), tmp.path().join("x.tar.gz")];
    let remote =
        fetch::cifar10_remote_from(Some(refused_url("/cifar-10-binary.tar.gz")), None).unwrap();
    let dl = tmp.path().join("cache/datasets");
    let e = data::locate_or_fetch_in(&places, &remote, &dl)
        .unwrap_err()
        .to_string();
    for p in &places {
        assert!(e.contains(&p.display().to_string()), "{e}");
    }
    for needle in [
        remote.url.as_str(),
        "cannot connect",
        fetch::CIFAR10_DEFAULT_MD5,
        "by hand",
        "CIFAR10_URL",
        "RESNET_RS_CACHE",
        "pass its path explicitly",
        &dl.join("cifar-10-binary.tar.gz").display().to_string(),
    ] {
        assert!(e.contains(needle), "'{needle}' missing from:\n{e}");
    }
    assert!(listing(&dl).is_empty());
}

/// The real copy, found by the default search without any download.
#[test]
fn real_shared_copy_is_found_without_download() {
    let shared = data::workspace_root().join(data::SHARED_ARCHIVE);
    if !shared.exists() {
        eprintln!("skipped: {} not found", shared.display());
        return;
    }
    let remote =
        fetch::cifar10_remote_from(Some(refused_url("/never-asked.tar.gz")), None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = data::locate_or_fetch_in(std::slice::from_ref(&shared), &remote, tmp.path()).unwrap();
    assert_eq!(got.source, Source::TarGz(shared.canonicalize().unwrap()));
    assert!(got.fetched.is_none());
}

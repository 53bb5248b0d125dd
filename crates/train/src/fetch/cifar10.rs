//! Where the CIFAR-10 binary release is downloaded from.
//!
//! The official binary release (not the Python pickles Keras downloads): its
//! format is documented on the same page and read by [`crate::data`] without
//! a pickle parser. `CIFAR10_URL` and `CIFAR10_MD5` in the environment
//! replace the URL and its md5 (a mirror, a local test server); a mirror of
//! the same file needs only the URL.

use super::checksum::parse_md5;
use super::download::Remote;
use super::error::FetchError;
use super::non_empty_env;

/// The official binary release (162 MB).
pub const CIFAR10_DEFAULT_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its md5, as published on <https://www.cs.toronto.edu/~kriz/cifar.html>.
pub const CIFAR10_DEFAULT_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The name it is kept under in the cache when the URL does not give a
/// `.tar.gz` name of its own.
pub const CIFAR10_FILE: &str = "cifar-10-binary.tar.gz";
/// Environment variable replacing the URL.
pub const CIFAR10_URL_ENV: &str = "CIFAR10_URL";
/// Environment variable replacing the md5.
pub const CIFAR10_MD5_ENV: &str = "CIFAR10_MD5";

/// The last path segment of `url` (no query), if it names a `.tar.gz`.
fn archive_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    let ok_chars = last
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    (ok_chars && !last.starts_with('.') && (last.ends_with(".tar.gz") || last.ends_with(".tgz")))
        .then(|| last.to_string())
}

/// The release to download given the two overrides (`None`: not set).
pub fn cifar10_remote_from(url: Option<String>, md5: Option<String>) -> Result<Remote, FetchError> {
    let url = url.unwrap_or_else(|| CIFAR10_DEFAULT_URL.to_string());
    let md5 = match md5 {
        Some(v) => parse_md5(CIFAR10_MD5_ENV, &v)?,
        None => CIFAR10_DEFAULT_MD5.to_string(),
    };
    let file_name = archive_name(&url).unwrap_or_else(|| CIFAR10_FILE.to_string());
    Ok(Remote {
        url,
        md5,
        file_name,
    })
}

/// The release to download: the official one, or what `CIFAR10_URL` /
/// `CIFAR10_MD5` say.
pub fn cifar10_remote() -> Result<Remote, FetchError> {
    cifar10_remote_from(
        non_empty_env(CIFAR10_URL_ENV),
        non_empty_env(CIFAR10_MD5_ENV),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let r = cifar10_remote_from(None, None).unwrap();
        assert_eq!(r.url, CIFAR10_DEFAULT_URL);
        assert_eq!(r.md5, CIFAR10_DEFAULT_MD5);
        assert_eq!(r.file_name, "cifar-10-binary.tar.gz");

        let r =
            cifar10_remote_from(Some("http://127.0.0.1:9/m/small.tgz?x=1".into()), None).unwrap();
        assert_eq!(r.file_name, "small.tgz");
        assert_eq!(r.md5, CIFAR10_DEFAULT_MD5, "a mirror keeps the md5");

        let r = cifar10_remote_from(
            Some("http://mirror/get?id=3".into()),
            Some("C32A1D4AB5D03F1284B67883E8D87531".into()),
        )
        .unwrap();
        assert_eq!(r.file_name, CIFAR10_FILE, "no usable name in the URL");
        assert_eq!(r.md5, "c32a1d4ab5d03f1284b67883e8d87531");

        let e = cifar10_remote_from(None, Some("nope".into())).unwrap_err();
        assert!(e.to_string().contains("CIFAR10_MD5"), "{e}");
        assert_eq!(archive_name("http://h/../.x.tar.gz"), None);
    }
}

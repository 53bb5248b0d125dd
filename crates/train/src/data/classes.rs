//! Class names and the class-index convention.

/// CIFAR-10 class names in the label order of the official release
/// (`batches.meta.txt`). Image-folder datasets whose class folders are these
/// names get these indices, so a model trained on either source agrees.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Decides the class list of an image-folder dataset from the class folders
/// found under `train/`.
///
/// (CIFAR-10's names happen to be alphabetical, so the two rules agree on
/// the official classes; the distinction matters for stray folders.)
///
/// Returns `(classes, is_cifar)`. When every CIFAR-10 class has a folder, the
/// classes are CIFAR-10's in official order and `is_cifar` is true (any other
/// folder is then an error, reported by the caller). Otherwise the classes
/// are the folder names sorted, which is what Keras'
/// `image_dataset_from_directory` does.
pub(crate) fn resolve_classes<'a>(
    train_folders: impl IntoIterator<Item = &'a str>,
) -> (Vec<String>, bool) {
    let mut names: Vec<String> = train_folders.into_iter().map(str::to_string).collect();
    names.sort();
    names.dedup();
    if CIFAR10_CLASSES.iter().all(|c| names.iter().any(|n| n == c)) {
        (
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            true,
        )
    } else {
        (names, false)
    }
}

/// Relabels `data` to a model's class list `classes` (a run's
/// `classes.txt`) by *name*: a data folder whose classes are ordered or
/// numbered differently from the run's would otherwise shift every label
/// silently. A class of the data the model does not know is an error
/// naming it; returns the model's classes the data has no images of.
pub fn remap_to(data: &mut super::Dataset, classes: &[String]) -> Result<Vec<String>, String> {
    let mut index = Vec::with_capacity(data.classes.len());
    for name in &data.classes {
        match classes.iter().position(|c| c == name) {
            Some(i) if i <= usize::from(u8::MAX) => index.push(i as u8),
            _ => {
                return Err(format!(
                    "the data has class '{name}', which the model does not know (its classes: {})",
                    classes.join(", ")
                ))
            }
        }
    }
    let mut present = vec![false; classes.len()];
    for l in data.labels.iter_mut() {
        *l = index[usize::from(*l)];
        present[usize::from(*l)] = true;
    }
    data.classes = classes.to_vec();
    Ok(classes
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(c, _)| c.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapping_follows_names_and_names_strangers() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut data = super::super::Dataset {
            images: vec![0; 3 * super::super::IMAGE_BYTES],
            labels: vec![0, 1, 1],
            classes: names(&["b", "a"]),
        };
        let missing = remap_to(&mut data, &names(&["a", "b", "c"])).unwrap();
        assert_eq!(data.labels, [1, 0, 0]);
        assert_eq!(data.classes, ["a", "b", "c"]);
        assert_eq!(missing, ["c"]);
        let e = remap_to(&mut data, &names(&["a", "c"])).unwrap_err();
        assert!(e.contains("'b'"), "{e}");
    }

    #[test]
    fn cifar_folders_get_official_order_regardless_of_listing_order() {
        let mut shuffled = CIFAR10_CLASSES.to_vec();
        shuffled.reverse();
        let (classes, cifar) = resolve_classes(shuffled);
        assert!(cifar);
        assert_eq!(classes, CIFAR10_CLASSES);
        assert_eq!(classes[0], "airplane");
        assert_eq!(classes[6], "frog");
        // A superset is still CIFAR-10 (the caller rejects the stray folder).
        let mut extra = CIFAR10_CLASSES.to_vec();
        extra.push("aardvark");
        assert_eq!(resolve_classes(extra), (classes, true));
    }

    #[test]
    fn other_folders_are_sorted() {
        let (classes, cifar) = resolve_classes(["zebra", "ant", "mole", "ant"]);
        assert!(!cifar);
        assert_eq!(classes, ["ant", "mole", "zebra"]);
    }
}

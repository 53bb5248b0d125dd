//! The names of the old caffe-named Keras 2 ResNet release (`conv1`,
//! `bn_conv1`, `res2a_branch2a`, `bn2a_branch2a`, `scale2a_branch2a`,
//! `fc1000`), mapped to the modern ones, as `tools/keras_to_safetensors.py`
//! maps them. Block letters count blocks (`res3c` is `conv3_block3`); the
//! ResNet101/152 release numbers them after `b` (`res4b22` is `conv4_block23`);
//! branches `1`, `2a`, `2b`, `2c` are `_0` (projection), `_1`, `_2`, `_3`.

/// What a caffe-named layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Conv,
    Bn,
    /// A caffe `Scale` layer: the `gamma`/`beta` of the batchnorm before it.
    Scale,
    Dense,
}

/// `res2a_branch2a` -> (`conv2_block1_1_conv`, Conv); `None` if `name` is not
/// a caffe-style ResNet layer name.
pub(crate) fn modern_layer(name: &str) -> Option<(String, Kind)> {
    match name {
        "conv1" => return Some(("conv1_conv".into(), Kind::Conv)),
        "bn_conv1" => return Some(("conv1_bn".into(), Kind::Bn)),
        "scale_conv1" => return Some(("conv1_bn".into(), Kind::Scale)),
        "fc1000" => return Some(("predictions".into(), Kind::Dense)),
        _ => {}
    }
    let (kind, rest, suffix) = if let Some(r) = name.strip_prefix("res") {
        (Kind::Conv, r, "conv")
    } else if let Some(r) = name.strip_prefix("bn") {
        (Kind::Bn, r, "bn")
    } else if let Some(r) = name.strip_prefix("scale") {
        (Kind::Scale, r, "bn")
    } else {
        return None;
    };
    let (head, branch) = rest.split_once("_branch")?;
    let branch = match branch {
        "1" => 0,
        "2a" => 1,
        "2b" => 2,
        "2c" => 3,
        _ => return None,
    };
    let mut chars = head.chars();
    let stage = chars.next().filter(char::is_ascii_digit)?;
    let letter = chars.next().filter(char::is_ascii_lowercase)?;
    let number = chars.as_str();
    let block = if number.is_empty() {
        letter as u32 - 'a' as u32 + 1
    } else if letter == 'b' && number.chars().all(|c| c.is_ascii_digit()) {
        number.parse::<u32>().ok()? + 1
    } else {
        return None;
    };
    Some((format!("conv{stage}_block{block}_{branch}_{suffix}"), kind))
}

/// The modern weight name of a caffe-era weight (`W` is `kernel`,
/// `running_var` is `moving_variance`, Keras 1's `res2a_branch2a_W` drops its
/// layer prefix), or an error saying why it has none.
pub(crate) fn modern_weight(kind: Kind, weight: &str, layer: &str) -> Result<&'static str, String> {
    let short = weight
        .strip_prefix(layer)
        .and_then(|w| w.strip_prefix('_'))
        .unwrap_or(weight)
        .to_ascii_lowercase();
    let role = match (kind, short.as_str()) {
        (Kind::Conv | Kind::Dense, "kernel" | "w") => Some("kernel"),
        (Kind::Conv | Kind::Dense, "bias" | "b") => Some("bias"),
        (Kind::Bn | Kind::Scale, "gamma") => Some("gamma"),
        (Kind::Bn | Kind::Scale, "beta") => Some("beta"),
        (Kind::Bn, "moving_mean" | "running_mean") => Some("moving_mean"),
        (Kind::Bn, "moving_variance" | "running_var") => Some("moving_variance"),
        _ => None,
    };
    match (role, short.as_str()) {
        (Some(r), _) => Ok(r),
        (None, "running_std") => Err(format!(
            "'{weight}' is a Keras 1 'running_std' batchnorm statistic; Keras 1 files are not \
             supported (load the model in Keras 2 and save it again)"
        )),
        (None, _) => Err(format!("unknown weight '{weight}' for a {kind:?} layer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_like_the_python_converter() {
        // The cases of tools/test_converter.py::test_caffe_name_mapping.
        let m = modern_layer;
        assert_eq!(
            m("res2a_branch2a"),
            Some(("conv2_block1_1_conv".into(), Kind::Conv))
        );
        assert_eq!(
            m("bn4f_branch2c"),
            Some(("conv4_block6_3_bn".into(), Kind::Bn))
        );
        assert_eq!(
            m("scale3b_branch2b"),
            Some(("conv3_block2_2_bn".into(), Kind::Scale))
        );
        assert_eq!(
            m("res5a_branch1"),
            Some(("conv5_block1_0_conv".into(), Kind::Conv))
        );
        assert_eq!(
            m("res4b22_branch2a"),
            Some(("conv4_block23_1_conv".into(), Kind::Conv))
        );
        assert_eq!(m("fc1000"), Some(("predictions".into(), Kind::Dense)));
        assert_eq!(m("conv1_conv"), None);
        assert_eq!(m("res4c2_branch2a"), None);
        assert_eq!(m("res2a_branch3"), None);
    }

    #[test]
    fn weight_roles() {
        assert_eq!(modern_weight(Kind::Conv, "W", "conv1"), Ok("kernel"));
        assert_eq!(modern_weight(Kind::Conv, "conv1_b", "conv1"), Ok("bias"));
        assert_eq!(
            modern_weight(Kind::Bn, "running_var", "bn_conv1"),
            Ok("moving_variance")
        );
        assert!(modern_weight(Kind::Scale, "moving_mean", "scale_conv1").is_err());
        let e = modern_weight(Kind::Bn, "running_std", "bn_conv1").unwrap_err();
        assert!(e.contains("Keras 1"), "{e}");
    }
}

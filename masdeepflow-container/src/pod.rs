//! Kubernetes pod UIDs as they appear in cgroup names.

use crate::hex::{is_lower_hex, is_lower_hex_of_len};

/// Length of a canonical UUID (`8-4-4-4-12`).
const UUID_LEN: usize = 36;
/// Length of a static (mirror) pod UID: an md5 hash in hex.
const STATIC_UID_LEN: usize = 32;

/// Normalises a pod UID taken from a cgroup name.
///
/// * a 36-char UUID with `-` or `_` separators (systemd slices use `_`) is returned with `-`;
/// * a 32-hex static-pod UID is returned as-is.
///
/// Hex digits must be lowercase (Kubernetes and the kubelet only produce lowercase).
/// Anything else yields `None`.
///
/// ```
/// use masdeepflow_container::normalise_pod_uid;
/// assert_eq!(
///     normalise_pod_uid("55263d4e_9ca4_4f08_ac8e_5df9de111281").as_deref(),
///     Some("55263d4e-9ca4-4f08-ac8e-5df9de111281"),
/// );
/// assert_eq!(
///     normalise_pod_uid("09a70ae9ccc491e651e5c773579b3490").as_deref(),
///     Some("09a70ae9ccc491e651e5c773579b3490"),
/// );
/// assert_eq!(normalise_pod_uid("not-a-uid"), None);
/// ```
#[must_use]
pub fn normalise_pod_uid(s: &str) -> Option<String> {
    if s.len() == STATIC_UID_LEN {
        return is_lower_hex_of_len(s, STATIC_UID_LEN).then(|| s.to_owned());
    }
    if s.len() != UUID_LEN {
        return None;
    }
    let mut out = String::with_capacity(UUID_LEN);
    for (i, b) in s.bytes().enumerate() {
        let c = match i {
            8 | 13 | 18 | 23 if b == b'-' || b == b'_' => '-',
            8 | 13 | 18 | 23 => return None,
            _ if is_lower_hex(b) => char::from(b),
            _ => return None,
        };
        out.push(c);
    }
    Some(out)
}

/// Extracts the pod UID from one cgroup path component, if it is a pod cgroup:
///
/// * cgroupfs driver: `pod<uid>`;
/// * systemd driver: `kubepods[-<qos>]-pod<uid_with_underscores>.slice`.
pub(crate) fn pod_uid_from_component(component: &str) -> Option<String> {
    if let Some(stem) = component.strip_suffix(".slice") {
        if !stem.starts_with("kubepods-") {
            return None;
        }
        let (_, last) = stem.rsplit_once('-')?;
        return normalise_pod_uid(last.strip_prefix("pod")?);
    }
    normalise_pod_uid(component.strip_prefix("pod")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        let want = Some("599a0779-5f40-4779-9d11-82ecce3e6662".to_owned());
        assert_eq!(normalise_pod_uid("599a0779-5f40-4779-9d11-82ecce3e6662"), want);
        assert_eq!(normalise_pod_uid("599a0779_5f40_4779_9d11_82ecce3e6662"), want);
        assert_eq!(normalise_pod_uid("599a0779_5f40-4779_9d11-82ecce3e6662"), want);
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "599a0779-5f40-4779-9d11-82ecce3e666",
            "599a0779-5f40-4779-9d11-82ecce3e66622",
            "599A0779-5f40-4779-9d11-82ecce3e6662",
            "599a07795-f40-4779-9d11-82ecce3e6662",
            "599a0779-5f40-4779-9d11x82ecce3e6662",
            "599a0779-5f40-4779-9d11-82ecce3e666g",
            "09a70ae9ccc491e651e5c773579b349g",
            "09A70AE9CCC491E651E5C773579B3490",
            "09a70ae9-cc491e651e5c773579b3490",
        ] {
            assert_eq!(normalise_pod_uid(bad), None, "{bad}");
        }
    }

    #[test]
    fn components() {
        let uid = Some("55263d4e-9ca4-4f08-ac8e-5df9de111281".to_owned());
        assert_eq!(pod_uid_from_component("kubepods-besteffort-pod55263d4e_9ca4_4f08_ac8e_5df9de111281.slice"), uid);
        assert_eq!(pod_uid_from_component("kubepods-pod55263d4e_9ca4_4f08_ac8e_5df9de111281.slice"), uid);
        assert_eq!(pod_uid_from_component("pod55263d4e-9ca4-4f08-ac8e-5df9de111281"), uid);
        assert_eq!(pod_uid_from_component("podruntime.slice"), None);
        assert_eq!(pod_uid_from_component("kubepods-besteffort.slice"), None);
        assert_eq!(pod_uid_from_component("system-pod55263d4e_9ca4_4f08_ac8e_5df9de111281.slice"), None);
    }
}

//! Container runtimes and the Kubernetes `containerID` status field.

use core::fmt;
use core::str::FromStr;

use crate::hex::{CONTAINER_ID_LEN, is_container_id};

/// The container runtime that created a container, as far as the cgroup path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Runtime {
    /// containerd (CRI plugin: `cri-containerd-<id>.scope`, `...:cri-containerd:<id>`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// Docker / dockershim / cri-dockerd (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// Podman (`libpod-<id>.scope`).
    Podman,
    /// A plain 64-hex cgroup under `kubepods` (cgroupfs driver): the path does not name the runtime.
    Unknown,
}

impl Runtime {
    /// Every variant, in declaration order.
    pub const ALL: [Runtime; 5] = [Runtime::Containerd, Runtime::CriO, Runtime::Docker, Runtime::Podman, Runtime::Unknown];

    /// Stable lowercase name for JSON and logs: `containerd`, `cri-o`, `docker`, `podman`, `unknown`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned by [`Runtime::from_str`] for a name that is not one of [`Runtime::as_str`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownRuntimeName;

impl fmt::Display for UnknownRuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown container runtime name")
    }
}

impl std::error::Error for UnknownRuntimeName {}

impl FromStr for Runtime {
    type Err = UnknownRuntimeName;

    /// Inverse of [`Runtime::as_str`] (exact, case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL.into_iter().find(|r| r.as_str() == s).ok_or(UnknownRuntimeName)
    }
}

/// Scheme used by Kubernetes' `status.containerStatuses[].containerID` (`<scheme>://<id>`).
///
/// Returns `""` for [`Runtime::Unknown`], which has no scheme.
#[must_use]
pub const fn runtime_prefix(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Containerd => "containerd",
        Runtime::CriO => "cri-o",
        Runtime::Docker => "docker",
        Runtime::Podman => "podman",
        Runtime::Unknown => "",
    }
}

/// Parses a Kubernetes `containerID` status field such as `containerd://<64hex>`.
///
/// Accepts the schemes `containerd`, `cri-o`, `docker` and `podman`; the id must be
/// exactly 64 lowercase hex digits. Surrounding ASCII whitespace is ignored.
///
/// ```
/// use masdeepflow_container::{parse_container_id_field, Runtime};
/// let id = "ab".repeat(32);
/// assert_eq!(
///     parse_container_id_field(&format!("cri-o://{id}")),
///     Some((Runtime::CriO, id)),
/// );
/// assert_eq!(parse_container_id_field("containerd://short"), None);
/// ```
#[must_use]
pub fn parse_container_id_field(s: &str) -> Option<(Runtime, String)> {
    // Longest scheme ("containerd") + "://" + id, with slack for whitespace.
    if s.len() > CONTAINER_ID_LEN + 64 {
        return None;
    }
    let (scheme, id) = s.trim().split_once("://")?;
    let runtime = Runtime::ALL.into_iter().find(|r| *r != Runtime::Unknown && runtime_prefix(*r) == scheme)?;
    is_container_id(id).then(|| (runtime, id.to_owned()))
}

/// Maps the runtime word used in cgroup names (`docker-<id>.scope`, `...:cri-containerd:<id>`).
pub(crate) fn runtime_from_cgroup_word(word: &str) -> Option<Runtime> {
    match word {
        "docker" => Some(Runtime::Docker),
        "cri-containerd" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb";

    #[test]
    fn names_round_trip() {
        for r in Runtime::ALL {
            assert_eq!(r.as_str().parse::<Runtime>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!("Docker".parse::<Runtime>(), Err(UnknownRuntimeName));
        assert_eq!(Runtime::CriO.as_str(), "cri-o");
        assert_eq!(Runtime::Unknown.as_str(), "unknown");
    }

    #[test]
    fn prefixes() {
        assert_eq!(runtime_prefix(Runtime::Containerd), "containerd");
        assert_eq!(runtime_prefix(Runtime::CriO), "cri-o");
        assert_eq!(runtime_prefix(Runtime::Docker), "docker");
        assert_eq!(runtime_prefix(Runtime::Podman), "podman");
        assert_eq!(runtime_prefix(Runtime::Unknown), "");
    }

    #[test]
    fn container_id_field_ok() {
        for (scheme, rt) in
            [("containerd", Runtime::Containerd), ("cri-o", Runtime::CriO), ("docker", Runtime::Docker), ("podman", Runtime::Podman)]
        {
            let field = format!("{scheme}://{ID}");
            assert_eq!(parse_container_id_field(&field), Some((rt, ID.to_owned())));
        }
        assert_eq!(parse_container_id_field(&format!("  containerd://{ID}\n")), Some((Runtime::Containerd, ID.to_owned())));
    }

    #[test]
    fn container_id_field_rejects() {
        for bad in [
            String::new(),
            ID.to_owned(),
            format!("://{ID}"),
            format!("unknown://{ID}"),
            format!("crio://{ID}"),
            format!("CONTAINERD://{ID}"),
            format!("containerd:/{ID}"),
            format!("containerd://{}", ID.to_uppercase()),
            format!("containerd://{ID}0"),
            format!("containerd://{}", &ID[1..]),
            format!("containerd://x{ID}"),
            format!("containerd://{ID}/"),
            "containerd://".repeat(100_000),
        ] {
            assert_eq!(parse_container_id_field(&bad), None, "{bad:.80}");
        }
    }
}

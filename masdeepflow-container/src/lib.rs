//! Container identity from cgroup paths, for the masdeepflow eBPF agent.
//!
//! Pure functions: no I/O, no globals, no panics, and work bounded by input caps
//! ([`MAX_PATH_LEN`], [`MAX_PROC_LINES`]). Feed them a line of `/proc/<pid>/cgroup`, the whole
//! file, or a bare cgroup path, and get back the 64-hex container id, the runtime and,
//! under Kubernetes, the pod UID.
//!
//! ```
//! use masdeepflow_container::{parse_cgroup_path, Runtime};
//! let c = parse_cgroup_path(
//!     "6:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod55263d4e_9ca4_4f08_ac8e_5df9de111281.slice/cri-containerd-de8109b1bb55c08b50a9d4d3c17cffe3fc7b85b1c25b0b41dbe45e1d386bc6ba.scope",
//! ).unwrap();
//! assert_eq!(c.runtime, Runtime::Containerd);
//! assert_eq!(c.pod_uid.as_deref(), Some("55263d4e-9ca4-4f08-ac8e-5df9de111281"));
//! assert_eq!(c.container_id_field().as_deref(), Some(format!("containerd://{}", c.id).as_str()));
//! ```

mod hex;
mod path;
mod pod;
mod proc;
mod runtime;

#[cfg(test)]
mod layout_tests;

pub use hex::{CONTAINER_ID_LEN, is_container_id};
pub use path::{MAX_PATH_LEN, parse_cgroup_path};
pub use pod::normalise_pod_uid;
pub use proc::{MAX_PROC_LINES, parse_proc_cgroup};
pub use runtime::{Runtime, UnknownRuntimeName, parse_container_id_field, runtime_prefix};

/// A container found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Container id: exactly 64 lowercase hex digits.
    pub id: String,
    /// Runtime named by the path, or [`Runtime::Unknown`].
    pub runtime: Runtime,
    /// Kubernetes pod UID: a `-`-separated UUID, or a 32-hex static-pod UID; `None` outside Kubernetes.
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    /// The Kubernetes `containerID` status string (`<scheme>://<id>`); `None` for [`Runtime::Unknown`].
    #[must_use]
    pub fn container_id_field(&self) -> Option<String> {
        match self.runtime {
            Runtime::Unknown => None,
            r => Some(format!("{}://{}", runtime_prefix(r), self.id)),
        }
    }

    /// `true` when a Kubernetes `containerID` status string names this container. An
    /// [`Runtime::Unknown`] ref matches on the id alone; otherwise the runtime must agree.
    #[must_use]
    pub fn matches_container_id_field(&self, field: &str) -> bool {
        parse_container_id_field(field)
            .is_some_and(|(runtime, id)| id == self.id && (self.runtime == Runtime::Unknown || self.runtime == runtime))
    }
}

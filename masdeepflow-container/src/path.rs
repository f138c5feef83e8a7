//! Bare cgroup paths and single `/proc/<pid>/cgroup` lines.

use crate::ContainerRef;
use crate::hex::is_container_id;
use crate::pod::pod_uid_from_component;
use crate::proc::split_proc_line;
use crate::runtime::{Runtime, runtime_from_cgroup_word};

/// Inputs longer than this (bytes) are rejected outright; cgroup paths are bounded by `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 8192;

/// Parses one `/proc/<pid>/cgroup` line (`hierarchy-id:controllers:path`) or a bare, absolute
/// cgroup path (as the kernel prints it, or under `/sys/fs/cgroup/...`, optionally ending in
/// `/cgroup.procs`). Surrounding ASCII whitespace (e.g. the line's `\n`) is ignored.
///
/// Recognised container cgroups, innermost first:
/// * `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
///   (the `.scope` suffix is optional);
/// * `<pod slice>:<runtime>:<id>` (containerd with the systemd driver, cgroup v1);
/// * a bare `<id>` below a `kubepods*` component (runtime [`Runtime::Unknown`]) or directly
///   below `docker` (docker's cgroupfs driver).
///
/// `<id>` must be exactly 64 lowercase hex digits. The pod UID is taken from the container's
/// parent cgroup (`pod<uid>` or `kubepods-…-pod<uid>.slice`). Scanning stops at the innermost
/// pod or `kubepods` cgroup, so a process in a pod-level cgroup of a nested (kind) node is not
/// attributed to the node's own container. Paths containing `.`, `..`, empty components or
/// control characters are rejected.
///
/// ```
/// use masdeepflow_container::{parse_cgroup_path, Runtime};
/// let c = parse_cgroup_path(
///     "0::/machine.slice/libpod-89e89703fbd1e88b72d279d951ce389d3742874205196d73f96e0dcbc0da0659.scope/container",
/// ).unwrap();
/// assert_eq!(c.runtime, Runtime::Podman);
/// assert_eq!(c.pod_uid, None);
/// ```
#[must_use]
pub fn parse_cgroup_path(input: &str) -> Option<ContainerRef> {
    if input.len() > MAX_PATH_LEN {
        return None;
    }
    let s = input.trim();
    if s.starts_with('/') {
        return parse_bare_path(s);
    }
    // Anything else must be a well-formed proc line; relative paths are not accepted, so a
    // garbled line header can never be mistaken for part of a path.
    split_proc_line(s).and_then(|line| parse_bare_path(line.path))
}

/// What one path component says about the container.
enum Component {
    /// A container cgroup naming its runtime; the pod UID when the component carries it.
    Container(Runtime, String, Option<String>),
    /// A bare 64-hex component: needs context from its ancestors.
    BareId(String),
    /// A `kubepods*` or pod cgroup: nothing above it belongs to this pod's containers.
    KubeBoundary,
    Other,
}

fn classify(c: &str) -> Component {
    if is_container_id(c) {
        return Component::BareId(c.to_owned());
    }
    if let Some(found) = colon_form(c).or_else(|| scope_form(c)) {
        return found;
    }
    if is_kubepods(c) || pod_uid_from_component(c).is_some() {
        return Component::KubeBoundary;
    }
    Component::Other
}

/// `<prefix>-<id>[.scope]`.
fn scope_form(c: &str) -> Option<Component> {
    let stem = c.strip_suffix(".scope").unwrap_or(c);
    let (word, id) = stem.rsplit_once('-')?;
    let runtime = runtime_from_cgroup_word(word)?;
    is_container_id(id).then(|| Component::Container(runtime, id.to_owned(), None))
}

/// `<pod slice>:<runtime>:<id>`.
fn colon_form(c: &str) -> Option<Component> {
    let mut parts = c.split(':');
    let (slice, word, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let runtime = runtime_from_cgroup_word(word)?;
    if !is_container_id(id) {
        return None;
    }
    Some(Component::Container(runtime, id.to_owned(), pod_uid_from_component(slice)))
}

fn is_kubepods(c: &str) -> bool {
    c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-")
}

fn is_junk(c: &str) -> bool {
    c.is_empty() || c == "." || c == ".." || c.chars().any(char::is_control)
}

/// Parses a path without a `hierarchy:controllers:` prefix.
pub(crate) fn parse_bare_path(path: &str) -> Option<ContainerRef> {
    if path.len() > MAX_PATH_LEN {
        return None;
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    let comps: Vec<&str> = path.split('/').collect();
    if comps.iter().any(|c| is_junk(c)) {
        return None;
    }
    let first_kubepods = comps.iter().position(|c| is_kubepods(c));
    for (i, c) in comps.iter().enumerate().rev() {
        let parent = i.checked_sub(1).and_then(|p| comps.get(p)).copied();
        let parent_pod = || parent.and_then(pod_uid_from_component);
        match classify(c) {
            Component::Container(runtime, id, pod) => {
                let pod_uid = pod.or_else(parent_pod);
                return Some(ContainerRef { id, runtime, pod_uid });
            }
            Component::BareId(id) if first_kubepods.is_some_and(|k| k < i) => {
                let pod_uid = parent_pod();
                return Some(ContainerRef { id, runtime: Runtime::Unknown, pod_uid });
            }
            Component::BareId(id) if parent == Some("docker") => {
                return Some(ContainerRef { id, runtime: Runtime::Docker, pod_uid: None });
            }
            Component::KubeBoundary => return None,
            Component::BareId(_) | Component::Other => {}
        }
    }
    None
}

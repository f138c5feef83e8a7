//! Property tests: arbitrary input never panics, and any id returned is 64 lowercase hex.

use masdeepflow_container::{
    ContainerRef, is_container_id, normalise_pod_uid, parse_cgroup_path, parse_container_id_field, parse_proc_cgroup,
};
use proptest::prelude::*;

fn check(c: &ContainerRef) {
    assert!(is_container_id(&c.id), "{:?}", c.id);
    assert_eq!(c.id.len(), 64);
    assert!(c.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if let Some(uid) = &c.pod_uid {
        assert!(uid.len() == 36 || uid.len() == 32, "{uid:?}");
        assert_eq!(normalise_pod_uid(uid).as_deref(), Some(uid.as_str()));
    }
}

/// Strings built from the pieces real cgroup paths are made of, so matches are actually hit.
fn cgroupish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(":".to_owned()),
        Just("0::".to_owned()),
        Just("4:pids:".to_owned()),
        Just("\n".to_owned()),
        Just("kubepods".to_owned()),
        Just("kubepods.slice".to_owned()),
        Just("kubepods-besteffort-pod".to_owned()),
        Just("pod".to_owned()),
        Just(".slice".to_owned()),
        Just(".scope".to_owned()),
        Just("docker-".to_owned()),
        Just("docker".to_owned()),
        Just("cri-containerd".to_owned()),
        Just("crio-".to_owned()),
        Just("libpod-".to_owned()),
        Just("..".to_owned()),
        "[0-9a-f]{64}",
        "[0-9a-fA-G]{63,65}",
        "[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}",
        "[0-9a-f]{32}",
        ".{0,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Some(c) = parse_cgroup_path(&s) { check(&c); }
        if let Some(c) = parse_proc_cgroup(&s) { check(&c); }
        if let Some(uid) = normalise_pod_uid(&s) { prop_assert!(uid.len() == 36 || uid.len() == 32); }
        if let Some((_, id)) = parse_container_id_field(&s) { prop_assert!(is_container_id(&id)); }
    }

    #[test]
    fn cgroupish_strings_never_panic(s in cgroupish()) {
        if let Some(c) = parse_cgroup_path(&s) { check(&c); }
        if let Some(c) = parse_proc_cgroup(&s) { check(&c); }
    }

    #[test]
    fn generated_scope_paths_round_trip(
        id in "[0-9a-f]{64}",
        uid in "[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}",
        word_idx in 0usize..4,
    ) {
        let words = ["docker", "cri-containerd", "crio", "libpod"];
        let word = words[word_idx];
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/{word}-{id}.scope"
        );
        let c = parse_cgroup_path(&line).expect("generated path parses");
        prop_assert_eq!(&c.id, &id);
        prop_assert_eq!(c.pod_uid, Some(uid.replace('_', "-")));
        let field = format!("{}://{}", masdeepflow_container::runtime_prefix(c.runtime), id);
        prop_assert_eq!(parse_container_id_field(&field), Some((c.runtime, id)));
    }
}

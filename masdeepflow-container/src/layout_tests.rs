//! One test per known cgroup layout, with the exact line and expected result.

use crate::{ContainerRef, Runtime, parse_cgroup_path, parse_proc_cgroup};

fn expect(line: &str, id: &str, runtime: Runtime, pod_uid: Option<&str>) {
    let want = ContainerRef { id: id.to_owned(), runtime, pod_uid: pod_uid.map(str::to_owned) };
    assert_eq!(parse_cgroup_path(line), Some(want.clone()), "{line}");
    // A one-line file behaves the same; so does the line with a trailing newline.
    assert_eq!(parse_proc_cgroup(&format!("{line}\n")), Some(want), "{line}");
}

#[test]
fn v1_cgroupfs_burstable() {
    expect(
        "5:devices:/kubepods/burstable/pod599a0779-5f40-4779-9d11-82ecce3e6662/3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb",
        "3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb",
        Runtime::Unknown,
        Some("599a0779-5f40-4779-9d11-82ecce3e6662"),
    );
}

#[test]
fn v1_cgroupfs_besteffort() {
    expect(
        "6:pids:/kubepods/besteffort/pod26ab26cd-6409-443f-a13c-fd6c231207c8/ae7a1981e064c217035e0b23979c8defd51c850d1af26fbcf148187e5b0da61c",
        "ae7a1981e064c217035e0b23979c8defd51c850d1af26fbcf148187e5b0da61c",
        Runtime::Unknown,
        Some("26ab26cd-6409-443f-a13c-fd6c231207c8"),
    );
}

#[test]
fn sysfs_cgroupfs_guaranteed_cgroup_procs() {
    let line = "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod8dbc5577-d0e2-4706-8787-57d52c03ddf2/14011c7d92a9e513dfd69211da0413dbf319a5e45a02b354ba6e98e10272542d/cgroup.procs";
    let want = ContainerRef {
        id: "14011c7d92a9e513dfd69211da0413dbf319a5e45a02b354ba6e98e10272542d".to_owned(),
        runtime: Runtime::Unknown,
        pod_uid: Some("8dbc5577-d0e2-4706-8787-57d52c03ddf2".to_owned()),
    };
    assert_eq!(parse_cgroup_path(line), Some(want));
    // A bare path is not a /proc/<pid>/cgroup line.
    assert_eq!(parse_proc_cgroup(line), None);
}

#[test]
fn v1_systemd_cri_containerd_scope() {
    expect(
        "6:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod55263d4e_9ca4_4f08_ac8e_5df9de111281.slice/cri-containerd-de8109b1bb55c08b50a9d4d3c17cffe3fc7b85b1c25b0b41dbe45e1d386bc6ba.scope",
        "de8109b1bb55c08b50a9d4d3c17cffe3fc7b85b1c25b0b41dbe45e1d386bc6ba",
        Runtime::Containerd,
        Some("55263d4e-9ca4-4f08-ac8e-5df9de111281"),
    );
}

#[test]
fn v1_containerd_service_colon_form() {
    expect(
        "4:pids:/podruntime.slice/containerd.service/kubepods-burstable-pod29349498_197c_4919_b13f_9a928e7d001b.slice:cri-containerd:0ca2b3cd20e5f55a2bbe8d4aa3f811cf7963b40f0542ad147054b0fcb60fc400",
        "0ca2b3cd20e5f55a2bbe8d4aa3f811cf7963b40f0542ad147054b0fcb60fc400",
        Runtime::Containerd,
        Some("29349498-197c-4919-b13f-9a928e7d001b"),
    );
}

#[test]
fn sysfs_containerd_service_colon_form_cgroup_procs() {
    let line = "/sys/fs/cgroup/cpu,cpuacct/system.slice/containerd.service/kubepods-besteffort-pod1544eb37_e4f7_49eb_8cc4_3d01c41be77b.slice:cri-containerd:8618d3540ce713dd59ed0549719643a71dd482c40c21685773e7ac1291b004f5/cgroup.procs";
    let want = ContainerRef {
        id: "8618d3540ce713dd59ed0549719643a71dd482c40c21685773e7ac1291b004f5".to_owned(),
        runtime: Runtime::Containerd,
        pod_uid: Some("1544eb37-e4f7-49eb-8cc4-3d01c41be77b".to_owned()),
    };
    assert_eq!(parse_cgroup_path(line), Some(want));
}

#[test]
fn v1_systemd_docker_scope() {
    expect(
        "4:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podeb052b63_ea96_4728_ab4a_64ab3babccd7.slice/docker-5694f82f44168cc048e014ae14d1b0c8ef673bec49f329dc169911ea638f63c2.scope",
        "5694f82f44168cc048e014ae14d1b0c8ef673bec49f329dc169911ea638f63c2",
        Runtime::Docker,
        Some("eb052b63-ea96-4728-ab4a-64ab3babccd7"),
    );
}

#[test]
fn sysfs_systemd_crio_scope_cgroup_procs() {
    let line = "/sys/fs/cgroup/cpu,cpuacct/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9b7969b2_aad0_47d4_b11c_4acfd1ce018e.slice/crio-9b9ccc15d288aa0f7d3bf7b583993921bf261edfeff3467765ab81e687c6a889.scope/cgroup.procs";
    let want = ContainerRef {
        id: "9b9ccc15d288aa0f7d3bf7b583993921bf261edfeff3467765ab81e687c6a889".to_owned(),
        runtime: Runtime::CriO,
        pod_uid: Some("9b7969b2-aad0-47d4-b11c-4acfd1ce018e".to_owned()),
    };
    assert_eq!(parse_cgroup_path(line), Some(want));
}

#[test]
fn v2_cgroupfs_besteffort() {
    expect(
        "0::/kubepods/besteffort/pod13cb8437-00ed-40e4-99d8-e17193a58086/a5a6a3af5d51ad95b915ca948710b90a94abc279e84963b9d22a39f342ce67d9",
        "a5a6a3af5d51ad95b915ca948710b90a94abc279e84963b9d22a39f342ce67d9",
        Runtime::Unknown,
        Some("13cb8437-00ed-40e4-99d8-e17193a58086"),
    );
}

#[test]
fn v2_kind_nested_systemd_reports_inner_container() {
    expect(
        "0::/system.slice/docker-1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07.scope/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podeb653d22_2525_47ca_9fc4_3762497ae1d2.slice/docker-84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4.scope",
        "84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4",
        Runtime::Docker,
        Some("eb653d22-2525-47ca-9fc4-3762497ae1d2"),
    );
}

#[test]
fn v2_kind_nested_cgroupfs_static_pod() {
    expect(
        "0::/system.slice/docker-c1146e7ccca9ab4436abd69923c07d097b37b762ed21cc3f24584c2f84e77c57.scope/kubelet/kubepods/burstable/pod09a70ae9ccc491e651e5c773579b3490/b0e6aa50e847c3d3b1880e307ec7996040275c8063832cffc9274defce2cb655",
        "b0e6aa50e847c3d3b1880e307ec7996040275c8063832cffc9274defce2cb655",
        Runtime::Unknown,
        Some("09a70ae9ccc491e651e5c773579b3490"),
    );
}

#[test]
fn v2_podman_libpod_scope_container_subgroup() {
    expect(
        "0::/machine.slice/libpod-89e89703fbd1e88b72d279d951ce389d3742874205196d73f96e0dcbc0da0659.scope/container",
        "89e89703fbd1e88b72d279d951ce389d3742874205196d73f96e0dcbc0da0659",
        Runtime::Podman,
        None,
    );
}

#[test]
fn v2_plain_docker_outside_kubernetes() {
    expect(
        "0::/system.slice/docker-1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07.scope",
        "1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07",
        Runtime::Docker,
        None,
    );
}

#[test]
fn v1_docker_cgroupfs_driver() {
    expect(
        "11:memory:/docker/1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07",
        "1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07",
        Runtime::Docker,
        None,
    );
}

#[test]
fn must_not_match() {
    const ID: &str = "3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb";
    let pod = "pod599a0779-5f40-4779-9d11-82ecce3e6662";
    let cases = [
        "6:devices:/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxsystem.slice/containerd.service".to_owned(),
        "0::/libpod_parent/conmon".to_owned(),
        "0::/user.slice/user-0.slice/session-1.scope".to_owned(),
        "0::/".to_owned(),
        String::new(),
        "   \n".to_owned(),
        "/".to_owned(),
        // Not exactly 64 lowercase hex.
        format!("0::/kubepods/besteffort/{pod}/{}", &ID[1..]),
        format!("0::/kubepods/besteffort/{pod}/{ID}0"),
        format!("0::/kubepods/besteffort/{pod}/{}", ID.to_uppercase()),
        format!("0::/system.slice/docker-{}.scope", &ID[..63]),
        format!("0::/system.slice/docker-{}.scope", ID.replace('b', "g")),
        // 64 hex embedded in a longer token.
        format!("0::/kubepods/besteffort/{pod}/x{ID}"),
        format!("0::/kubepods/besteffort/{pod}/{ID}.scope"),
        format!("0::/system.slice/docker-{ID}x.scope"),
        format!("0::/system.slice/xdocker-{ID}.scope"),
        format!("0::/system.slice/docker-{ID}.scope.bak"),
        format!("0::/system.slice/docker{ID}.scope"),
        format!("0::/a.slice:cri-containerd:{ID}:extra"),
        format!("0::/a.slice:cri-containerd:{ID}x"),
        format!("0::/a.slice:runc:{ID}"),
        // Unknown runtime word / conmon sibling.
        format!("0::/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope", "599a0779_5f40_4779_9d11_82ecce3e6662"),
        // Bare hex outside kubepods/docker context.
        format!("0::/system.slice/{ID}"),
        format!("0::/{ID}"),
        format!("0::/{ID}/kubepods"),
        // Path traversal and other junk.
        format!("0::/kubepods/besteffort/{pod}/../{ID}"),
        format!("0::/kubepods/besteffort/{pod}/{ID}/.."),
        format!("0::/kubepods/besteffort/{pod}/./{ID}"),
        format!("0::/kubepods//besteffort/{pod}/{ID}"),
        format!("0::/kubepods/besteffort/{pod}/{ID}\0"),
        format!("0::/system.slice/docker-{ID}.scope/\u{7}"),
        // Pod-level cgroup of a kind node: not the node container.
        format!("0::/system.slice/docker-{ID}.scope/kubelet/kubepods/burstable/{pod}"),
        format!("0::/system.slice/docker-{ID}.scope/kubepods.slice/kubepods-besteffort.slice"),
        // Malformed proc line headers.
        format!("x:pids:/system.slice/docker-{ID}.scope"),
    ];
    for c in &cases {
        assert_eq!(parse_cgroup_path(c), None, "{c:?}");
        assert_eq!(parse_proc_cgroup(c), None, "{c:?}");
    }
}

#[test]
fn proc_file_prefers_unified_line() {
    let v1 = "3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb";
    let v2 = "a5a6a3af5d51ad95b915ca948710b90a94abc279e84963b9d22a39f342ce67d9";
    let file = format!(
        "12:pids:/kubepods/burstable/pod599a0779-5f40-4779-9d11-82ecce3e6662/{v1}\n\
         1:name=systemd:/kubepods/burstable/pod599a0779-5f40-4779-9d11-82ecce3e6662/{v1}\n\
         0::/kubepods/besteffort/pod13cb8437-00ed-40e4-99d8-e17193a58086/{v2}\n"
    );
    assert_eq!(parse_proc_cgroup(&file).map(|c| c.id), Some(v2.to_owned()));
}

#[test]
fn proc_file_falls_back_to_v1_on_hybrid_host() {
    let id = "5694f82f44168cc048e014ae14d1b0c8ef673bec49f329dc169911ea638f63c2";
    let file = format!(
        "13:rdma:/\n\
         12:cpuset:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podeb052b63_ea96_4728_ab4a_64ab3babccd7.slice/docker-{id}.scope\n\
         1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podeb052b63_ea96_4728_ab4a_64ab3babccd7.slice/docker-{id}.scope\n\
         0::/\n"
    );
    let c = parse_proc_cgroup(&file).unwrap();
    assert_eq!(c.id, id);
    assert_eq!(c.runtime, Runtime::Docker);
    assert_eq!(c.pod_uid.as_deref(), Some("eb052b63-ea96-4728-ab4a-64ab3babccd7"));
}

#[test]
fn proc_file_without_container() {
    let file = "12:pids:/user.slice\n0::/user.slice/user-0.slice/session-1.scope\n";
    assert_eq!(parse_proc_cgroup(file), None);
    assert_eq!(parse_proc_cgroup(""), None);
}

#[test]
fn huge_inputs_are_fast_and_none() {
    let start = std::time::Instant::now();
    let id = "3386444dafd452389a80af5e5c1dc92fda06e4064770d945ea0eb3d242642bbb";
    let mb = 1 << 20;
    let inputs = [
        "a".repeat(mb),
        "/".repeat(mb),
        "/kubepods".repeat(mb / 9),
        format!("0::/docker/{}", "x/".repeat(mb / 2)),
        format!("0::/{}/docker/{id}", "kubepods/".repeat(mb / 9)),
        "0::/\n".repeat(mb / 5),
        format!("{}0::/docker/{id}\n", "\n".repeat(mb)),
        ":".repeat(mb),
    ];
    for s in &inputs {
        assert_eq!(parse_cgroup_path(s), None);
        assert_eq!(parse_proc_cgroup(s), None);
        assert_eq!(crate::normalise_pod_uid(s), None);
        assert_eq!(crate::parse_container_id_field(s), None);
    }
    // Deep but within the cap still works.
    let deep = format!("0::/{}docker/{id}", "a/".repeat(2000));
    assert_eq!(parse_cgroup_path(&deep).map(|c| c.runtime), Some(Runtime::Docker));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn container_id_field_helpers() {
    let c = parse_cgroup_path("0::/system.slice/docker-1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07.scope").unwrap();
    let field = c.container_id_field().unwrap();
    assert_eq!(field, format!("docker://{}", c.id));
    assert!(c.matches_container_id_field(&field));
    assert!(!c.matches_container_id_field(&format!("containerd://{}", c.id)));
    let unknown = ContainerRef { runtime: Runtime::Unknown, ..c.clone() };
    assert_eq!(unknown.container_id_field(), None);
    assert!(unknown.matches_container_id_field(&format!("cri-o://{}", c.id)));
    assert!(!unknown.matches_container_id_field(&format!("cri-o://{}", "0".repeat(64))));
}

#[test]
fn relative_paths_are_rejected() {
    let id = "1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07";
    assert_eq!(parse_cgroup_path(&format!("system.slice/docker-{id}.scope")), None);
    assert!(parse_cgroup_path(&format!("/system.slice/docker-{id}.scope")).is_some());
    assert!(parse_cgroup_path(&format!("  1:name=systemd:/system.slice/docker-{id}.scope\r\n")).is_some());
}

//! Checks the Kubernetes manifests in `deploy/kubernetes/` against each other
//! and against `docs/kubernetes.md`: RBAC is read-only on pods, the binding
//! targets the DaemonSet's ServiceAccount, and the DaemonSet's capabilities
//! and host mounts are exactly the ones the doc's tables list.
//!
//! Runs without a cluster, a kernel feature or root: it only reads files.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::manifests::{manifests, one, repo_root};

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} should be a string, is {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("{what} should be a list, is {v}"))
}

fn string_set(v: &Value, what: &str) -> BTreeSet<String> {
    let items = arr(v, what);
    let set: BTreeSet<String> = items.iter().map(|x| str_of(x, what).to_string()).collect();
    assert_eq!(set.len(), items.len(), "{what} has duplicates: {v}");
    set
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// First cells of the table rows under the `## <heading>` section of docs/kubernetes.md,
/// without backticks, keeping only those that `keep` accepts (so the header row drops out).
fn doc_table_keys(heading: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let path = repo_root().join("docs/kubernetes.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("## {heading}"));
    assert!(lines.next().is_some(), "docs/kubernetes.md has no `## {heading}` section");
    let mut keys = BTreeSet::new();
    for line in lines.take_while(|l| !l.starts_with('#')) {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let cell = row.split('|').next().unwrap_or("").trim().trim_matches('`').trim();
        if keep(cell) {
            assert!(keys.insert(cell.to_string()), "docs/kubernetes.md `{heading}` lists {cell} twice");
        }
    }
    assert!(!keys.is_empty(), "docs/kubernetes.md `{heading}` table has no rows");
    keys
}

fn documented_capabilities() -> BTreeSet<String> {
    doc_table_keys("Capabilities", |c| c.starts_with("CAP_"))
}

fn documented_host_mounts() -> BTreeSet<String> {
    doc_table_keys("Host mounts", |c| c.starts_with('/'))
}

fn daemonset_pod_spec(docs: &[(String, Value)]) -> Value {
    one(docs, "DaemonSet")["spec"]["template"]["spec"].clone()
}

/// The agent's container: the only one in the pod.
fn agent_container(pod: &Value) -> Value {
    let containers = arr(&pod["containers"], "DaemonSet containers");
    assert_eq!(containers.len(), 1, "the DaemonSet should run exactly one container");
    containers[0].clone()
}

#[test]
fn cluster_role_reads_pods_only() {
    let docs = manifests();
    let role = one(&docs, "ClusterRole");
    assert!(role.get("aggregationRule").is_none(), "the ClusterRole must not aggregate other roles");
    let rules = arr(&role["rules"], "ClusterRole rules");
    let mut grants = BTreeSet::new();
    for rule in rules {
        let keys: BTreeSet<&str> = rule.as_object().expect("a rule is a mapping").keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["apiGroups", "resources", "verbs"].into_iter().collect(),
            "rule {rule} should only have apiGroups, resources and verbs (no resourceNames, no nonResourceURLs)"
        );
        for g in string_set(&rule["apiGroups"], "apiGroups") {
            for r in string_set(&rule["resources"], "resources") {
                for v in string_set(&rule["verbs"], "verbs") {
                    grants.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> =
        ["get", "list", "watch"].iter().map(|v| (String::new(), "pods".to_string(), v.to_string())).collect();
    assert_eq!(grants, expected, "the ClusterRole must grant exactly get/list/watch on core pods");
    assert!(docs.iter().all(|(_, d)| d["kind"] != "Role"), "no namespaced Role expected");
}

#[test]
fn binding_ties_role_to_the_daemonsets_service_account() {
    let docs = manifests();
    let role = one(&docs, "ClusterRole");
    let binding = one(&docs, "ClusterRoleBinding");
    let ds = one(&docs, "DaemonSet");
    let sa = one(&docs, "ServiceAccount");
    let ns = one(&docs, "Namespace");

    let ds_ns = str_of(&ds["metadata"]["namespace"], "DaemonSet namespace");
    assert_eq!(ds_ns, "masdeepflow");
    assert_eq!(ns["metadata"]["name"], ds_ns, "namespace.yaml should create the DaemonSet's namespace");

    let sa_name = str_of(&ds["spec"]["template"]["spec"]["serviceAccountName"], "DaemonSet serviceAccountName");
    assert_eq!(sa["metadata"]["name"], sa_name, "the ServiceAccount should be the one the DaemonSet uses");
    assert_eq!(sa["metadata"]["namespace"], ds_ns, "the ServiceAccount should live in the DaemonSet's namespace");

    let role_ref = &binding["roleRef"];
    assert_eq!(role_ref["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(role_ref["kind"], "ClusterRole");
    assert_eq!(role_ref["name"], role["metadata"]["name"], "the binding should refer to the ClusterRole");

    let subjects = arr(&binding["subjects"], "ClusterRoleBinding subjects");
    assert_eq!(subjects.len(), 1, "the binding should have the ServiceAccount as its only subject");
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], sa_name);
    assert_eq!(subjects[0]["namespace"], ds_ns);
}

#[test]
fn daemonset_pod_shape() {
    let docs = manifests();
    let ds = one(&docs, "DaemonSet");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "the selector must match the pod template's labels"
    );
    let pod = daemonset_pod_spec(&docs);
    assert_eq!(pod["hostPID"], true, "hostPID must be true");
    assert_ne!(pod["hostNetwork"], true, "hostNetwork must not be true");
    assert_ne!(pod["hostIPC"], true, "hostIPC must not be true");
    let tolerations = arr(&pod["tolerations"], "tolerations");
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none() && t.get("effect").is_none()),
        "a bare `operator: Exists` toleration is needed to run on every node"
    );

    let c = agent_container(&pod);
    assert_eq!(c["command"], json!(["/usr/local/bin/masdeepflow"]));
    // The image `cargo xtask image` builds (deploy/Dockerfile puts the binary at the command's path).
    assert_eq!(c["image"], format!("localhost/masdeepflow:{}", env!("CARGO_PKG_VERSION")));
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/masdeepflow\"]"), "deploy/Dockerfile's entrypoint is the command");
    let args: Vec<&str> = arr(&c["args"], "args").iter().map(|a| str_of(a, "arg")).collect();
    let pos = args.iter().position(|a| *a == "--node-name").expect("args should pass --node-name");
    assert_eq!(args.get(pos + 1), Some(&"$(NODE_NAME)"), "--node-name should be followed by $(NODE_NAME)");

    let env = arr(&c["env"], "env");
    let node: Vec<&Value> = env.iter().filter(|e| e["name"] == "NODE_NAME").collect();
    assert_eq!(node.len(), 1, "exactly one NODE_NAME env var");
    assert!(node[0].get("value").is_none(), "NODE_NAME must come from the downward API, not a literal");
    assert_eq!(node[0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r} should be set");
        }
    }
}

#[test]
fn capabilities_match_the_doc() {
    let docs = manifests();
    let pod = daemonset_pod_spec(&docs);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            assert_ne!(c["securityContext"]["privileged"], true, "{list}/{} must not be privileged", c["name"]);
        }
    }
    let sc = &agent_container(&pod)["securityContext"];
    assert_eq!(sc["privileged"], false, "privileged: false should be explicit");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "capabilities should drop ALL");

    let added = string_set(&sc["capabilities"]["add"], "capabilities.add");
    for cap in &added {
        assert!(!cap.starts_with("CAP_"), "Kubernetes capability names go without CAP_: {cap}");
    }
    let documented: BTreeSet<String> = documented_capabilities().iter().map(|c| c.strip_prefix("CAP_").unwrap().to_string()).collect();
    assert_eq!(added, documented, "capabilities.add in daemonset.yaml and the Capabilities table of docs/kubernetes.md differ");
    assert_eq!(
        added,
        set(&["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH"]),
        "the agent's capability set changed: update this test, the manifest and the doc together"
    );
}

#[test]
fn host_mounts_match_the_doc_and_are_read_only() {
    let docs = manifests();
    let pod = daemonset_pod_spec(&docs);
    let c = agent_container(&pod);
    let volumes = arr(&pod["volumes"], "volumes");
    let mounts = arr(&c["volumeMounts"], "volumeMounts");

    let mut host_paths = BTreeSet::new();
    for v in volumes.iter().filter(|v| v.get("hostPath").is_some()) {
        let name = str_of(&v["name"], "volume name");
        let path = str_of(&v["hostPath"]["path"], "hostPath.path");
        assert_eq!(v["hostPath"]["type"], "Directory", "hostPath {path} should have type Directory");
        let used: Vec<&Value> = mounts.iter().filter(|m| m["name"] == name).collect();
        assert_eq!(used.len(), 1, "hostPath volume {name} should be mounted exactly once");
        assert_eq!(used[0]["mountPath"], path, "hostPath {path} should be mounted at the same path");
        assert_eq!(used[0]["readOnly"], true, "hostPath {path} must be mounted readOnly");
        assert!(used[0].get("subPath").is_none(), "hostPath {path}: no subPath");
        assert!(host_paths.insert(path.to_string()), "hostPath {path} appears twice");
    }
    assert_eq!(
        host_paths,
        documented_host_mounts(),
        "hostPath volumes in daemonset.yaml and the Host mounts table of docs/kubernetes.md differ"
    );
    assert_eq!(
        host_paths,
        set(&["/sys/kernel/tracing", "/sys/kernel/btf", "/sys/fs/cgroup"]),
        "the agent's host mounts changed: update this test, the manifest and the doc together"
    );
}

#[test]
fn daemonset_serves_metrics_on_a_named_port_with_scrape_annotations() {
    let docs = manifests();
    let ds = one(&docs, "DaemonSet");
    let c = agent_container(&daemonset_pod_spec(&docs));
    let args: Vec<&str> = arr(&c["args"], "args").iter().map(|a| str_of(a, "arg")).collect();
    let pos = args.iter().position(|a| *a == "--metrics-listen").expect("args should pass --metrics-listen");
    let listen: std::net::SocketAddr = args[pos + 1].parse().expect("--metrics-listen ADDR:PORT");
    assert!(listen.ip().is_unspecified(), "the pod's IP, not loopback, so Prometheus can reach it: {listen}");
    let ports = arr(&c["ports"], "ports");
    let metrics: Vec<&Value> = ports.iter().filter(|p| p["name"] == "metrics").collect();
    assert_eq!(metrics.len(), 1, "one port named metrics: {ports:?}");
    assert_eq!(metrics[0]["containerPort"], json!(listen.port()));
    assert_eq!(metrics[0]["protocol"], "TCP");
    let a = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(a["prometheus.io/scrape"], "true");
    assert_eq!(a["prometheus.io/port"], listen.port().to_string());
    assert_eq!(a["prometheus.io/path"], "/metrics");
    assert_ne!(daemonset_pod_spec(&docs)["hostNetwork"], true, "the port is the pod's, not the node's");
}

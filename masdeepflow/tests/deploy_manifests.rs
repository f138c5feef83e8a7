//! Checks the Kubernetes manifests in `deploy/kubernetes/` against each other
//! and against `docs/kubernetes.md`: RBAC is read-only on pods, the binding
//! targets the DaemonSet's ServiceAccount, and the DaemonSet's capabilities
//! and host mounts are exactly the ones the doc's tables list.
//!
//! Runs without a cluster, a kernel feature or root: it only reads files.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate lives inside the repository").to_path_buf()
}

/// yaml-rust2's tree, as a serde_json value (keys must be scalars).
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(s) => s.parse::<f64>().map(|f| json!(f)).unwrap_or_else(|_| Value::String(s.clone())),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("unsupported YAML mapping key {other:?}"),
                };
                assert!(m.insert(key.clone(), to_json(v)).is_none(), "duplicate YAML key {key:?}");
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => panic!("YAML aliases are not used in the manifests"),
        Yaml::BadValue => panic!("bad YAML value"),
    }
}

/// Every non-empty YAML document of every `deploy/kubernetes/*.yaml`, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: invalid YAML: {e}"));
        for doc in parsed.iter().map(to_json).filter(|d| !d.is_null()) {
            assert!(doc["apiVersion"].is_string() && doc["kind"].is_string(), "{name}: a document without apiVersion/kind");
            docs.push((name.clone(), doc));
        }
    }
    docs
}

/// The one object of this kind.
fn one(docs: &[(String, Value)], kind: &str) -> Value {
    let found: Vec<&Value> = docs.iter().filter(|(_, d)| d["kind"] == kind).map(|(_, d)| d).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} in deploy/kubernetes, found {}", found.len());
    found[0].clone()
}

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

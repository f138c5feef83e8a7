//! The Kubernetes manifests of `deploy/kubernetes/`, read as JSON values.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate lives inside the repository").to_path_buf()
}

/// yaml-rust2's tree, as a serde_json value (keys must be scalars).
pub fn to_json(y: &Yaml) -> Value {
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
pub fn manifests() -> Vec<(String, Value)> {
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
pub fn one(docs: &[(String, Value)], kind: &str) -> Value {
    let found: Vec<&Value> = docs.iter().filter(|(_, d)| d["kind"] == kind).map(|(_, d)| d).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} in deploy/kubernetes, found {}", found.len());
    found[0].clone()
}

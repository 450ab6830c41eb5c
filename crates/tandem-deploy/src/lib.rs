//! Helpers shared by the checks of `deploy/` (see `tests/`): where the
//! repository is, whether a tool is installed, and YAML documents as JSON
//! values (Kustomize's output, workflows).

use std::path::{Path, PathBuf};

/// The repository's root (this crate sits at `crates/tandem-deploy`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `deploy/<rel>` under the repository's root.
pub fn deploy(rel: &str) -> PathBuf {
    repo_root().join("deploy").join(rel)
}

/// The path of `name` on the `PATH`, if it is installed.
pub fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `kubectl kustomize deploy/kubernetes/overlays/<overlay>` (offline: no
/// cluster is needed) as JSON values, one per object. An error says what
/// failed: kubectl missing, Kustomize's own error, or YAML.
pub fn render_overlay(overlay: &str) -> Result<Vec<serde_json::Value>, String> {
    let kubectl = tool("kubectl").ok_or(
        "kubectl is not installed: the manifests are rendered with `kubectl kustomize` \
         (offline, no cluster needed); install kubectl (>= 1.27)",
    )?;
    let dir = deploy(&format!("kubernetes/overlays/{overlay}"));
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .map_err(|e| format!("run kubectl kustomize: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| format!("{overlay}: not UTF-8"))?;
    let docs = yaml_docs(&text).map_err(|e| format!("{overlay}: {e}"))?;
    if docs.is_empty() {
        return Err(format!("{overlay} renders nothing"));
    }
    Ok(docs)
}

/// Every YAML document of `text` as a JSON value (mappings with string,
/// number or boolean keys; tags are ignored). An error names the first
/// document that does not parse.
pub fn yaml_docs(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| format!("YAML: {e}"))?;
    docs.iter().map(to_json).collect()
}

fn to_json(y: &yaml_rust2::Yaml) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null | Yaml::BadValue => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(r.clone())),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    other => return Err(format!("unsupported YAML key {other:?}")),
                };
                m.insert(key, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not used here".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_become_json() {
        let docs = yaml_docs("a: 1\nb: [x, true]\n---\nc: {d: 2.5}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["a"], 1);
        assert_eq!(docs[0]["b"][1], true);
        assert_eq!(docs[1]["c"]["d"], 2.5);
    }

    #[test]
    fn the_repository_root_holds_the_workspace() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(deploy("node/tandem-node.toml").is_file());
    }
}

//! The part of a kubeconfig file the Kubernetes actuator needs: for one
//! context, its cluster's API server and CA, its user's credentials and
//! its namespace. What `kubectl` reads, restricted to what a controller
//! can use without running anything:
//!
//! - `clusters[].cluster`: `server` (https only), and
//!   `certificate-authority-data` (base64 PEM) or `certificate-authority`
//!   (a file, relative to the kubeconfig's directory); neither: the
//!   system's roots. `insecure-skip-tls-verify: true` and `proxy-url` are
//!   refused.
//! - `users[].user`: `token` or `tokenFile`, or `exec` (a credential
//!   plugin, run as `kubectl` runs it: `exec_credential`), and/or
//!   `client-certificate-data` + `client-key-data` (or the file forms
//!   `client-certificate` + `client-key`). `auth-provider` (the plugins
//!   built into old `kubectl`s) and basic authentication are refused.
//!
//! Every refusal names the file and the field.

use std::path::{Path, PathBuf};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use yaml_rust2::{Yaml, YamlLoader};

use crate::exec_credential::{ExecPlugin, API_VERSIONS};
use crate::https::{ClientAuth, Roots};

/// Largest kubeconfig read.
const MAX_BYTES: u64 = 4 << 20;

/// A refused kubeconfig: the file, the field (`contexts[prod].context.user`)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kubeconfig {file}: {field}: {message}")]
pub struct KubeconfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

/// One context, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Context {
    pub name: String,
    /// `https://host[:port]`.
    pub server: String,
    pub roots: Roots,
    /// Where the CA came from, for errors (`clusters[aks].cluster.certificate-authority-data`).
    pub roots_field: String,
    pub token: Option<String>,
    /// A credential plugin giving the token instead (`users[].user.exec`).
    pub exec: Option<ExecPlugin>,
    pub client: Option<ClientAuth>,
    /// The user's field, for errors about the client certificate.
    pub user_field: String,
    /// The context's namespace, if it names one.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the key.
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("roots", &self.roots_field)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("exec", &self.exec)
            .field("client_cert", &self.client.is_some())
            .field("namespace", &self.namespace)
            .finish()
    }
}

struct Reader<'a> {
    file: String,
    dir: &'a Path,
}

impl Reader<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> KubeconfigError {
        KubeconfigError {
            file: self.file.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The item of the list `list` whose `name` is `name`, and its
    /// `inner` mapping.
    fn named<'y>(
        &self,
        doc: &'y Yaml,
        list: &str,
        name: &str,
        inner: &str,
    ) -> Result<(&'y Yaml, String), KubeconfigError> {
        let items = match &doc[list] {
            Yaml::Array(a) => a,
            Yaml::BadValue | Yaml::Null => {
                return Err(self.err(list, "missing (a list of named entries)"))
            }
            _ => return Err(self.err(list, "not a list")),
        };
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(n) = item["name"].as_str() else {
                return Err(self.err(&format!("{list}[{i}].name"), "missing or not a string"));
            };
            if n == name {
                let field = format!("{list}[{name}].{inner}");
                return match &item[inner] {
                    y @ Yaml::Hash(_) => Ok((y, field)),
                    _ => Err(self.err(&field, "missing or not a mapping")),
                };
            }
            names.push(n.to_owned());
        }
        let has = if names.is_empty() {
            "the file has none".to_owned()
        } else {
            format!("the file has: {}", names.join(", "))
        };
        Err(self.err(list, format!("no entry named {name:?} ({has})")))
    }

    fn string(&self, map: &Yaml, base: &str, key: &str) -> Result<Option<String>, KubeconfigError> {
        match &map[key] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::String(s) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Yaml::String(_) => Err(self.err(&format!("{base}.{key}"), "empty")),
            _ => Err(self.err(&format!("{base}.{key}"), "not a string")),
        }
    }

    fn data(&self, map: &Yaml, base: &str, key: &str) -> Result<Option<Vec<u8>>, KubeconfigError> {
        let Some(s) = self.string(map, base, key)? else {
            return Ok(None);
        };
        let clean: String = s.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .map(Some)
            .map_err(|e| self.err(&format!("{base}.{key}"), format!("not base64: {e}")))
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn file_bytes(
        &self,
        map: &Yaml,
        base: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, KubeconfigError> {
        let Some(p) = self.string(map, base, key)? else {
            return Ok(None);
        };
        let path = self.path(&p);
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| self.err(&format!("{base}.{key}"), format!("{}: {e}", path.display())))
    }

    fn refuse(&self, map: &Yaml, base: &str, key: &str, why: &str) -> Result<(), KubeconfigError> {
        match &map[key] {
            Yaml::BadValue | Yaml::Null | Yaml::Boolean(false) => Ok(()),
            _ => Err(self.err(&format!("{base}.{key}"), why)),
        }
    }
}

/// Reads `context` from the kubeconfig at `path`.
pub fn load(path: &Path, context: &str) -> Result<Context, KubeconfigError> {
    let file = path.display().to_string();
    let fail = |message: String| KubeconfigError {
        file: file.clone(),
        field: "(file)".into(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_BYTES {
        return Err(fail(format!("larger than {MAX_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, dir, context)
}

/// Reads `context` from kubeconfig text; `file` names it in errors and
/// `dir` is where its relative paths start.
pub fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    context: &str,
) -> Result<Context, KubeconfigError> {
    let r = Reader {
        file: file.to_owned(),
        dir,
    };
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| r.err("(file)", format!("not YAML: {e}")))?;
    let doc = match docs.as_slice() {
        [d @ Yaml::Hash(_)] => d,
        [_] => return Err(r.err("(file)", "not a mapping")),
        _ => return Err(r.err("(file)", "not exactly one YAML document")),
    };
    let (ctx, cf) = r.named(doc, "contexts", context, "context")?;
    let cluster = r
        .string(ctx, &cf, "cluster")?
        .ok_or_else(|| r.err(&format!("{cf}.cluster"), "missing"))?;
    let user = r
        .string(ctx, &cf, "user")?
        .ok_or_else(|| r.err(&format!("{cf}.user"), "missing"))?;
    let namespace = r.string(ctx, &cf, "namespace")?;

    let (cl, clf) = r.named(doc, "clusters", &cluster, "cluster")?;
    let server = r
        .string(cl, &clf, "server")?
        .ok_or_else(|| r.err(&format!("{clf}.server"), "missing"))?;
    let host = server.trim_end_matches('/').strip_prefix("https://");
    if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', ' ', '@'])) {
        return Err(r.err(
            &format!("{clf}.server"),
            format!("{server:?} is not https://host[:port]"),
        ));
    }
    r.refuse(
        cl,
        &clf,
        "insecure-skip-tls-verify",
        "refused: the API server's certificate is always verified",
    )?;
    r.refuse(
        cl,
        &clf,
        "proxy-url",
        "not supported: the controller connects directly",
    )?;
    r.refuse(
        cl,
        &clf,
        "tls-server-name",
        "not supported: the server's certificate must name the host of `server`",
    )?;
    let (roots, roots_field) = if let Some(pem) = r.data(cl, &clf, "certificate-authority-data")? {
        let field = format!("{clf}.certificate-authority-data");
        check_certs(&r, &field, &pem)?;
        (Roots::Pem(pem), field)
    } else if let Some(pem) = r.file_bytes(cl, &clf, "certificate-authority")? {
        let field = format!("{clf}.certificate-authority");
        check_certs(&r, &field, &pem)?;
        (Roots::Pem(pem), field)
    } else {
        (Roots::System, format!("{clf} (system roots)"))
    };

    let (u, uf) = r.named(doc, "users", &user, "user")?;
    r.refuse(
        u,
        &uf,
        "auth-provider",
        "not supported (the plugins built into old kubectl versions): use `exec` (for example `gke-gcloud-auth-plugin`, `kubelogin`), a token or a client certificate",
    )?;
    for key in ["username", "password"] {
        r.refuse(
            u,
            &uf,
            key,
            "basic authentication is not supported: give a token or a client certificate",
        )?;
    }
    let token = match (
        r.string(u, &uf, "token")?,
        r.file_bytes(u, &uf, "tokenFile")?,
    ) {
        (Some(t), _) => Some(t),
        (None, Some(bytes)) => {
            let t = String::from_utf8(bytes)
                .map_err(|_| r.err(&format!("{uf}.tokenFile"), "not UTF-8"))?
                .trim()
                .to_owned();
            if t.is_empty() {
                return Err(r.err(&format!("{uf}.tokenFile"), "the file is empty"));
            }
            Some(t)
        }
        (None, None) => None,
    };
    if let Some(t) = &token {
        if http::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
            return Err(r.err(&format!("{uf}.token"), "not a valid header value"));
        }
    }
    let cert = match r.data(u, &uf, "client-certificate-data")? {
        Some(c) => Some((c, format!("{uf}.client-certificate-data"))),
        None => r
            .file_bytes(u, &uf, "client-certificate")?
            .map(|c| (c, format!("{uf}.client-certificate"))),
    };
    let key = match r.data(u, &uf, "client-key-data")? {
        Some(k) => Some((k, format!("{uf}.client-key-data"))),
        None => r
            .file_bytes(u, &uf, "client-key")?
            .map(|k| (k, format!("{uf}.client-key"))),
    };
    let client = match (cert, key) {
        (None, None) => None,
        (Some((c, cfield)), Some((k, kfield))) => {
            check_certs(&r, &cfield, &c)?;
            PrivateKeyDer::from_pem_slice(&k)
                .map_err(|e| r.err(&kfield, format!("no usable PEM private key: {e}")))?;
            Some(ClientAuth {
                cert_pem: c,
                key_pem: k,
            })
        }
        (Some((_, f)), None) | (None, Some((_, f))) => {
            return Err(r.err(
                &f,
                "a client certificate and its key go together: give both or neither",
            ))
        }
    };
    let exec = match &u["exec"] {
        Yaml::BadValue | Yaml::Null => None,
        e @ Yaml::Hash(_) => {
            let field = format!("{uf}.exec");
            if token.is_some() {
                return Err(r.err(
                    &field,
                    "give either a token (token, tokenFile) or a credential plugin (exec), not both",
                ));
            }
            let ca = match &roots {
                Roots::Pem(pem) => Some(base64::engine::general_purpose::STANDARD.encode(pem)),
                _ => None,
            };
            let cluster = (server.trim_end_matches('/').to_owned(), ca);
            Some(exec_plugin(&r, e, field, cluster)?)
        }
        _ => return Err(r.err(&format!("{uf}.exec"), "not a mapping")),
    };
    if token.is_none() && exec.is_none() && client.is_none() {
        return Err(r.err(
            &uf,
            "no credentials: give token, tokenFile, exec or client-certificate-data with client-key-data",
        ));
    }
    Ok(Context {
        name: context.to_owned(),
        server: server.trim_end_matches('/').to_owned(),
        roots,
        roots_field,
        token,
        exec,
        client,
        user_field: uf,
        namespace,
    })
}

/// A user's `exec` mapping, checked; `cluster`: the server and its CA
/// (base64 PEM), passed to the plugin when it asks (`provideClusterInfo`).
fn exec_plugin(
    r: &Reader<'_>,
    e: &Yaml,
    field: String,
    cluster: (String, Option<String>),
) -> Result<ExecPlugin, KubeconfigError> {
    let f = |key: &str| format!("{field}.{key}");
    let api_version = r
        .string(e, &field, "apiVersion")?
        .ok_or_else(|| r.err(&f("apiVersion"), "missing"))?;
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(r.err(
            &f("apiVersion"),
            format!("{api_version:?} is not one of {}", API_VERSIONS.join(", ")),
        ));
    }
    let command = r
        .string(e, &field, "command")?
        .ok_or_else(|| r.err(&f("command"), "missing"))?;
    // As kubectl: a path with a separator is relative to the kubeconfig's
    // directory; a bare name is looked up on PATH when it is run.
    let program = if command.contains('/') {
        r.path(&command)
    } else {
        PathBuf::from(&command)
    };
    let strings = |key: &str| -> Result<Vec<String>, KubeconfigError> {
        match &e[key] {
            Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
            Yaml::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Yaml::String(s) => Ok(s.clone()),
                    _ => Err(r.err(&format!("{field}.{key}[{i}]"), "not a string")),
                })
                .collect(),
            _ => Err(r.err(&f(key), "not a list")),
        }
    };
    let args = strings("args")?;
    let env = match &e["env"] {
        Yaml::BadValue | Yaml::Null => Vec::new(),
        Yaml::Array(items) => {
            let mut env = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let base = format!("{field}.env[{i}]");
                let name = r
                    .string(item, &base, "name")?
                    .ok_or_else(|| r.err(&format!("{base}.name"), "missing"))?;
                if name.contains(['=', '\0']) {
                    return Err(r.err(&format!("{base}.name"), "not a variable name"));
                }
                let value = match &item["value"] {
                    Yaml::String(v) => v.clone(),
                    Yaml::BadValue | Yaml::Null => String::new(),
                    _ => return Err(r.err(&format!("{base}.value"), "not a string")),
                };
                env.push((name, value));
            }
            env
        }
        _ => return Err(r.err(&f("env"), "not a list")),
    };
    let install_hint = r.string(e, &field, "installHint")?;
    let provide = match &e["provideClusterInfo"] {
        Yaml::BadValue | Yaml::Null => false,
        Yaml::Boolean(b) => *b,
        _ => return Err(r.err(&f("provideClusterInfo"), "not true or false")),
    };
    match r.string(e, &field, "interactiveMode")?.as_deref() {
        None | Some("Never" | "IfAvailable") => {}
        Some("Always") => {
            return Err(r.err(
                &f("interactiveMode"),
                "\"Always\" is refused: the controller runs plugins without a terminal; use \"Never\" or \"IfAvailable\" and log in beforehand",
            ))
        }
        Some(other) => {
            return Err(r.err(
                &f("interactiveMode"),
                format!("{other:?} is not Never, IfAvailable or Always"),
            ))
        }
    }
    Ok(ExecPlugin {
        api_version,
        command,
        program,
        args,
        env,
        install_hint,
        cluster: provide.then_some(cluster),
        field,
    })
}

fn check_certs(r: &Reader<'_>, field: &str, pem: &[u8]) -> Result<(), KubeconfigError> {
    let n = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| r.err(field, format!("not PEM certificates: {e}")))?
        .len();
    if n == 0 {
        return Err(r.err(field, "no PEM certificate in it"));
    }
    Ok(())
}

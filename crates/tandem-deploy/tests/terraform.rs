//! Checks of `deploy/terraform` (issue 13) with what runs on these machines.
//!
//! `terraform fmt` is the real tool. `terraform init` and `validate` cannot
//! run here (providers and registry modules cannot be downloaded), so every
//! `.tf` file is parsed with a real HCL parser (hcl-rs) and the checks
//! `validate` would make without a provider schema are made on the parsed
//! bodies, per module directory: every `var.X`, `local.X`, `module.X.Y` and
//! `TYPE.NAME` reference resolves; every module call's source is a local
//! directory (whose required variables are all passed, and nothing else)
//! or a registry address with a valid version constraint; every provider
//! has a source and a valid constraint, and every resource type belongs to
//! one of them; sensitive variables have no default; no literal looks like
//! a secret. Then the values that must agree with the rest of the
//! repository: the GKE module is the source's, the Kafka topic's settings
//! are `tandem_kafka::production_topic_settings`, and the Worker is the one
//! of `deploy/cloudflare`.
//!
//! References are found by walking the parsed expressions (hcl-rs keeps
//! templates as their raw text; each is parsed with `Template::from_expr`
//! and its interpolations and directives walked too), not by scanning
//! text. What only a real cloud can check (the providers' schemas, the
//! registry modules' inputs, quotas, whether an apply succeeds) is not
//! checked here; deploy/terraform/README.md says so.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use hcl::expr::{Expression, ObjectKey, Operation, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, Body, Structure};

// ---------------------------------------------------------------------------
// Loading

fn tf_root() -> PathBuf {
    tandem_deploy::deploy("terraform")
}

/// One directory of `.tf` files: a Terraform module (a root or a child).
struct Module {
    dir: PathBuf,
    files: Vec<(PathBuf, String, Body)>,
}

impl Module {
    fn bodies(&self) -> impl Iterator<Item = &Body> {
        self.files.iter().map(|(_, _, b)| b)
    }

    fn blocks<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.bodies()
            .flat_map(|b| b.blocks())
            .filter(move |b| b.identifier() == kind)
    }

    /// `variable "NAME"` blocks by name.
    fn variables(&self) -> BTreeMap<String, &Block> {
        self.blocks("variable")
            .filter_map(|b| Some((label(b, 0)?.to_owned(), b)))
            .collect()
    }

    fn outputs(&self) -> BTreeSet<String> {
        self.blocks("output")
            .filter_map(|b| label(b, 0).map(str::to_owned))
            .collect()
    }

    fn locals(&self) -> BTreeSet<String> {
        self.blocks("locals")
            .flat_map(|b| b.body().attributes())
            .map(|a| a.key.to_string())
            .collect()
    }

    fn rel(&self) -> String {
        rel(&self.dir)
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(tandem_deploy::repo_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn label(b: &Block, i: usize) -> Option<&str> {
    b.labels().get(i).map(|l| l.as_str())
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

fn string_attr<'a>(body: &'a Body, key: &str) -> Option<&'a str> {
    match attr(body, key)? {
        Expression::String(s) => Some(s),
        _ => None,
    }
}

/// Every `.tf` file under `root` (skipping `.terraform`), parsed, grouped
/// by directory. Panics naming every file that does not parse.
fn load_modules(root: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    collect_files(root, "tf", &mut files);
    assert!(!files.is_empty(), "no .tf file under {}", rel(root));
    let mut by_dir: BTreeMap<PathBuf, Vec<(PathBuf, String, Body)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read .tf file");
        match hcl::parse(&text) {
            Ok(body) => by_dir
                .entry(f.parent().expect("a file has a directory").to_owned())
                .or_default()
                .push((f, text, body)),
            Err(e) => errors.push(format!("{}: {e}", rel(&f))),
        }
    }
    assert!(
        errors.is_empty(),
        "HCL that does not parse:\n{}",
        errors.join("\n")
    );
    by_dir
        .into_iter()
        .map(|(dir, files)| Module { dir, files })
        .collect()
}

fn collect_files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == ".terraform") {
                continue;
            }
            collect_files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

fn modules() -> Vec<Module> {
    load_modules(&tf_root())
}

fn module_at(mods: &[Module], rel_dir: &str) -> usize {
    let want = tf_root().join(rel_dir);
    mods.iter()
        .position(|m| m.dir == want)
        .unwrap_or_else(|| panic!("no module directory deploy/terraform/{rel_dir}"))
}

// ---------------------------------------------------------------------------
// Walking expressions

/// Calls `f` on every expression of `body`, nested ones included: inside
/// blocks, collections, function calls, operators, conditionals, for
/// expressions, traversal indexes, and template interpolations and
/// directives (each template parsed with hcl-rs's template parser).
fn walk_body(body: &Body, f: &mut dyn FnMut(&Expression)) {
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => walk_expr(&a.expr, f),
            Structure::Block(b) => walk_body(b.body(), f),
        }
    }
}

fn walk_expr(e: &Expression, f: &mut dyn FnMut(&Expression)) {
    f(e);
    match e {
        Expression::Array(items) => items.iter().for_each(|i| walk_expr(i, f)),
        Expression::Object(o) => {
            for (k, v) in o.iter() {
                if let ObjectKey::Expression(k) = k {
                    walk_expr(k, f);
                }
                walk_expr(v, f);
            }
        }
        Expression::TemplateExpr(t) => walk_template(&parse_template(t), f),
        Expression::Traversal(t) => {
            walk_expr(&t.expr, f);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    walk_expr(i, f);
                }
            }
        }
        Expression::FuncCall(c) => c.args.iter().for_each(|a| walk_expr(a, f)),
        Expression::Parenthesis(p) => walk_expr(p, f),
        Expression::Conditional(c) => {
            walk_expr(&c.cond_expr, f);
            walk_expr(&c.true_expr, f);
            walk_expr(&c.false_expr, f);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => walk_expr(&u.expr, f),
            Operation::Binary(b) => {
                walk_expr(&b.lhs_expr, f);
                walk_expr(&b.rhs_expr, f);
            }
        },
        Expression::ForExpr(fe) => {
            walk_expr(&fe.collection_expr, f);
            if let Some(k) = &fe.key_expr {
                walk_expr(k, f);
            }
            walk_expr(&fe.value_expr, f);
            if let Some(c) = &fe.cond_expr {
                walk_expr(c, f);
            }
        }
        // Literals and bare variables hold no further expression.
        _ => {}
    }
}

fn parse_template(t: &TemplateExpr) -> Template {
    Template::from_expr(t).unwrap_or_else(|e| panic!("template {t:?} does not parse: {e}"))
}

fn walk_template(t: &Template, f: &mut dyn FnMut(&Expression)) {
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => walk_expr(&i.expr, f),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    walk_expr(&d.cond_expr, f);
                    walk_template(&d.true_template, f);
                    if let Some(t) = &d.false_template {
                        walk_template(t, f);
                    }
                }
                Directive::For(d) => {
                    walk_expr(&d.collection_expr, f);
                    walk_template(&d.template, f);
                }
            },
        }
    }
}

/// A reference `ROOT.a.b...`: the root name and the leading attribute
/// names (`x["k"]` counts as `.k`), as far as they are static.
fn reference(e: &Expression) -> Option<(String, Vec<String>)> {
    let t = match e {
        // A bare name: a for expression's iterator, or an attribute name
        // in lifecycle.ignore_changes.
        Expression::Variable(v) => return Some((v.to_string(), Vec::new())),
        Expression::Traversal(t) => t,
        _ => return None,
    };
    let Expression::Variable(root) = &t.expr else {
        return None;
    };
    let mut path = Vec::new();
    for op in &t.operators {
        match op {
            TraversalOperator::GetAttr(name) => path.push(name.to_string()),
            TraversalOperator::Index(Expression::String(s)) => path.push(s.clone()),
            _ => break,
        }
    }
    Some((root.to_string(), path))
}

/// Every static reference in `body`.
fn references(body: &Body) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    walk_body(body, &mut |e| out.extend(reference(e)));
    out
}

/// Every string literal of `body` (quoted strings, and the literal parts
/// of templates and heredocs) with the attribute it sits under.
fn string_literals(body: &Body) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in body.attributes() {
        let key = a.key.to_string();
        walk_expr(&a.expr, &mut |e| match e {
            Expression::String(s) => out.push((key.clone(), s.clone())),
            Expression::TemplateExpr(t) => {
                for el in parse_template(t).elements() {
                    if let Element::Literal(s) = el {
                        out.push((key.clone(), s.clone()));
                    }
                }
            }
            _ => {}
        });
    }
    for b in body.blocks() {
        out.extend(string_literals(b.body()));
    }
    out
}

// ---------------------------------------------------------------------------
// Version constraints (Terraform's syntax)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `~>`: only the rightmost given part may grow.
    Pessimistic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    /// One to three numeric parts, as written.
    parts: Vec<u64>,
    pre: Option<String>,
}

impl Version {
    fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    fn cmp_to(&self, other: &Version) -> Ordering {
        (0..3)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => cmp_pre(a, b),
            })
    }
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        return match (x.next(), y.next()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o.is_eq() {
                    continue;
                }
                o
            }
        };
    }
}

fn parse_version(s: &str) -> Result<Version, String> {
    let (nums, pre) = match s.split_once('-') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    let parts = nums
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(format!("{s:?}: {p:?} is not a number"))
            } else {
                p.parse::<u64>().map_err(|e| format!("{s:?}: {e}"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("{s:?}: a version has one to three numeric parts"));
    }
    if let Some(p) = pre {
        let ok = p
            .split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            return Err(format!("{s:?}: bad pre-release {p:?}"));
        }
    }
    Ok(Version {
        parts,
        pre: pre.map(str::to_owned),
    })
}

/// Parses a Terraform version constraint: comma-separated `op version`
/// terms, `op` one of `=`, `!=`, `>`, `>=`, `<`, `<=`, `~>` (none means
/// `=`), the version numeric and dotted with an optional pre-release.
fn parse_constraint(s: &str) -> Result<Vec<(Op, Version)>, String> {
    if s.trim().is_empty() {
        return Err("empty constraint".into());
    }
    s.split(',')
        .map(|term| {
            let t = term.trim();
            let (op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("!=", Op::Ne),
                ("~>", Op::Pessimistic),
                ("=", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
            ]
            .iter()
            .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or((Op::Eq, t));
            let v = rest.trim();
            if v.is_empty() {
                return Err(format!("{s:?}: term {t:?} has no version"));
            }
            Ok((op, parse_version(v).map_err(|e| format!("{s:?}: {e}"))?))
        })
        .collect()
}

/// Whether release version `v` satisfies every term.
fn satisfies(terms: &[(Op, Version)], v: &Version) -> bool {
    terms.iter().all(|(op, c)| {
        let o = v.cmp_to(c);
        match op {
            Op::Eq => o.is_eq(),
            Op::Ne => o.is_ne(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Pessimistic => {
                // ~> 1.2.3: >= 1.2.3, < 1.3.0; ~> 1.2 and ~> 1: < 2.0.0.
                let bump = c.parts.len().saturating_sub(2);
                let mut upper: Vec<u64> = c.parts[..=bump].to_vec();
                upper[bump] += 1;
                let upper = Version {
                    parts: upper,
                    pre: None,
                };
                o.is_ge() && v.cmp_to(&upper).is_lt()
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Addresses and secrets

/// A registry module address: `[host/]namespace/name/provider[//subdir]`.
fn check_registry_source(s: &str) -> Result<(), String> {
    let (addr, subdir) = match s.split_once("//") {
        Some((a, d)) => (a, Some(d)),
        None => (s, None),
    };
    let parts: Vec<&str> = addr.split('/').collect();
    let parts = match parts.len() {
        3 => &parts[..],
        4 if parts[0].contains('.') => &parts[1..],
        _ => {
            return Err(format!(
                "{s:?}: not a registry address (namespace/name/provider[//subdir])"
            ))
        }
    };
    let ident = |p: &str| {
        p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ident(parts[0]) || !ident(parts[1]) {
        return Err(format!("{s:?}: bad namespace or name"));
    }
    if parts[2].is_empty()
        || !parts[2]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!("{s:?}: bad provider {:?}", parts[2]));
    }
    if let Some(d) = subdir {
        if d.is_empty() || d.starts_with('/') || d.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(format!("{s:?}: bad subdirectory {d:?}"));
        }
    }
    Ok(())
}

/// Why `s` looks like a secret, if it does: known credential formats, and
/// long random-looking tokens (mixed case and digits, high entropy).
fn looks_like_secret(s: &str) -> Option<String> {
    if s.contains("-----BEGIN") && s.contains("PRIVATE KEY") {
        return Some("a PEM private key".into());
    }
    let tokens = s.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)));
    for t in tokens {
        let known = [
            ("AKIA", "an AWS access key id"),
            ("ASIA", "an AWS temporary access key id"),
            ("ghp_", "a GitHub token"),
            ("gho_", "a GitHub token"),
            ("ghs_", "a GitHub token"),
            ("github_pat_", "a GitHub token"),
            ("xoxb-", "a Slack token"),
            ("xoxp-", "a Slack token"),
            ("sk_live_", "a Stripe key"),
        ];
        for (prefix, what) in known {
            if t.starts_with(prefix) && t.len() >= prefix.len() + 16 {
                return Some(format!("{what} ({t})"));
            }
        }
        let mixed = t.bytes().any(|b| b.is_ascii_uppercase())
            && t.bytes().any(|b| b.is_ascii_lowercase())
            && t.bytes().any(|b| b.is_ascii_digit());
        if t.len() >= 24 && mixed && entropy_bits_per_char(t) >= 4.0 {
            return Some(format!("a random-looking token ({t})"));
        }
    }
    None
}

fn entropy_bits_per_char(s: &str) -> f64 {
    let mut counts = BTreeMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0u32) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&k| {
            let p = f64::from(k) / n;
            -p * p.log2()
        })
        .sum()
}

/// Attribute names that hold credentials: they must come from variables,
/// never from literals.
fn is_secret_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "api_key", "private_key"]
        .iter()
        .any(|s| k.contains(s))
}

// ---------------------------------------------------------------------------
// The checks of one module directory

const ROOTS_NOT_RESOURCES: [&str; 9] = [
    "var",
    "local",
    "module",
    "data",
    "path",
    "each",
    "count",
    "self",
    "terraform",
];

/// Whether a reference's root names a resource type (`aws_vpc`): not one
/// of Terraform's own roots, and lowercase with an underscore (no iterator
/// name of a for expression in deploy/terraform contains one).
fn is_resource_type(root: &str) -> bool {
    !ROOTS_NOT_RESOURCES.contains(&root)
        && root.contains('_')
        && root
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Everything wrong with `m`, given all module directories (for local
/// module calls). Empty when all is well.
fn problems(m: &Module, all: &[Module]) -> Vec<String> {
    let mut out = Vec::new();
    let here = m.rel();
    let vars = m.variables();
    let locals = m.locals();
    let module_calls: BTreeMap<String, &Block> = m
        .blocks("module")
        .filter_map(|b| Some((label(b, 0)?.to_owned(), b)))
        .collect();
    let resources: BTreeSet<(String, String)> = m
        .blocks("resource")
        .filter_map(|b| Some((label(b, 0)?.to_owned(), label(b, 1)?.to_owned())))
        .collect();
    let data: BTreeSet<(String, String)> = m
        .blocks("data")
        .filter_map(|b| Some((label(b, 0)?.to_owned(), label(b, 1)?.to_owned())))
        .collect();

    // References.
    let mut used_vars = BTreeSet::new();
    for (file, _, body) in &m.files {
        let f = rel(file);
        for (root, path) in references(body) {
            // Bare names (iterators, and the root of each traversal, seen
            // again on its own) refer to nothing to check.
            let Some(first) = path.first().cloned() else {
                continue;
            };
            match root.as_str() {
                "var" => {
                    if !vars.contains_key(&first) {
                        out.push(format!("{f}: var.{first} is not declared in {here}"));
                    }
                    used_vars.insert(first);
                }
                "local" if !locals.contains(&first) => {
                    out.push(format!("{f}: local.{first} is not defined in {here}"));
                }
                "module" => match module_calls.get(&first) {
                    None => out.push(format!("{f}: module.{first} is not called in {here}")),
                    Some(call) => {
                        // A local module's outputs are known: check the name.
                        if let (Some(dir), Some(output)) = (local_source_dir(m, call), path.get(1))
                        {
                            if let Some(child) = all.iter().find(|c| c.dir == dir) {
                                if !child.outputs().contains(output) {
                                    out.push(format!(
                                        "{f}: module.{first}.{output}: {} has no such output",
                                        child.rel()
                                    ));
                                }
                            }
                        }
                    }
                },
                "data" => {
                    let key = (first.clone(), path.get(1).cloned().unwrap_or_default());
                    if !data.contains(&key) {
                        out.push(format!("{f}: data.{}.{} is not declared", key.0, key.1));
                    }
                }
                // TYPE.NAME: a resource of this module.
                r if is_resource_type(r) && !resources.contains(&(r.to_owned(), first.clone())) => {
                    out.push(format!("{f}: {r}.{first} is not a resource of {here}"));
                }
                _ => {}
            }
        }
    }
    for name in vars.keys() {
        if !used_vars.contains(name) {
            out.push(format!(
                "{here}: variable {name:?} is declared but never used"
            ));
        }
    }

    // Variables: sensitive ones have no default.
    for (name, b) in &vars {
        let sensitive = matches!(attr(b.body(), "sensitive"), Some(Expression::Bool(true)));
        if sensitive && attr(b.body(), "default").is_some() {
            out.push(format!("{here}: sensitive variable {name:?} has a default"));
        }
    }

    // Module calls.
    for (name, call) in &module_calls {
        let body = call.body();
        let Some(source) = string_attr(body, "source") else {
            out.push(format!("{here}: module {name:?} has no literal source"));
            continue;
        };
        let version = attr(body, "version");
        if source.starts_with("./") || source.starts_with("../") {
            if version.is_some() {
                out.push(format!(
                    "{here}: module {name:?}: a local source takes no version"
                ));
            }
            let dir = local_source_dir(m, call).expect("a local source");
            let Some(child) = all.iter().find(|c| c.dir == dir) else {
                out.push(format!(
                    "{here}: module {name:?}: {source} is not a directory of .tf files"
                ));
                continue;
            };
            let child_vars = child.variables();
            let meta = [
                "source",
                "version",
                "count",
                "for_each",
                "providers",
                "depends_on",
            ];
            let passed: BTreeSet<String> = body
                .attributes()
                .map(|a| a.key.to_string())
                .filter(|k| !meta.contains(&k.as_str()))
                .collect();
            for p in &passed {
                if !child_vars.contains_key(p) {
                    out.push(format!(
                        "{here}: module {name:?} passes {p:?}, which {} does not declare",
                        child.rel()
                    ));
                }
            }
            for (v, b) in &child_vars {
                if attr(b.body(), "default").is_none() && !passed.contains(v) {
                    out.push(format!(
                        "{here}: module {name:?} does not pass {v:?}, required by {}",
                        child.rel()
                    ));
                }
            }
        } else {
            if let Err(e) = check_registry_source(source) {
                out.push(format!("{here}: module {name:?}: {e}"));
            }
            match version {
                Some(Expression::String(v)) => {
                    if let Err(e) = parse_constraint(v) {
                        out.push(format!("{here}: module {name:?}: version {e}"));
                    }
                }
                _ => out.push(format!(
                    "{here}: module {name:?}: a registry source needs a literal version constraint"
                )),
            }
        }
    }

    // required_version and required_providers.
    let mut providers = BTreeSet::new();
    for tf in m.blocks("terraform") {
        match string_attr(tf.body(), "required_version") {
            Some(v) => {
                if let Err(e) = parse_constraint(v) {
                    out.push(format!("{here}: required_version {e}"));
                }
            }
            None => out.push(format!("{here}: no literal required_version")),
        }
        for rp in tf
            .body()
            .blocks()
            .filter(|b| b.identifier() == "required_providers")
        {
            for a in rp.body().attributes() {
                let name = a.key.to_string();
                providers.insert(name.clone());
                let Expression::Object(o) = &a.expr else {
                    out.push(format!(
                        "{here}: provider {name:?} is not {{ source, version }}"
                    ));
                    continue;
                };
                let field = |k: &str| {
                    o.iter().find_map(|(key, v)| {
                        let key = match key {
                            ObjectKey::Identifier(i) => i.to_string(),
                            ObjectKey::Expression(Expression::String(s)) => s.clone(),
                            _ => return None,
                        };
                        match v {
                            Expression::String(s) if key == k => Some(s.clone()),
                            _ => None,
                        }
                    })
                };
                match field("source") {
                    Some(s) => {
                        let parts: Vec<&str> = s.split('/').collect();
                        let ok = (parts.len() == 2 || parts.len() == 3)
                            && parts.iter().all(|p| !p.is_empty())
                            && parts.last() == Some(&name.as_str());
                        if !ok {
                            out.push(format!(
                                "{here}: provider {name:?}: source {s:?} is not [host/]namespace/{name}"
                            ));
                        }
                    }
                    None => out.push(format!("{here}: provider {name:?} has no source")),
                }
                match field("version") {
                    Some(v) => {
                        if let Err(e) = parse_constraint(&v) {
                            out.push(format!("{here}: provider {name:?}: version {e}"));
                        }
                    }
                    None => out.push(format!("{here}: provider {name:?} has no version")),
                }
            }
        }
    }
    if m.blocks("terraform").next().is_none() {
        out.push(format!(
            "{here}: no terraform block (required_version, required_providers)"
        ));
    }
    // Every resource and data source belongs to a declared provider (an
    // undeclared one would be looked up as hashicorp/<name>).
    for kind in ["resource", "data"] {
        for b in m.blocks(kind) {
            let ty = label(b, 0).unwrap_or_default();
            let owner = providers
                .iter()
                .filter(|p| ty == p.as_str() || ty.starts_with(&format!("{p}_")))
                .max_by_key(|p| p.len());
            if owner.is_none() {
                out.push(format!(
                    "{here}: {kind} {ty:?} belongs to no provider of required_providers"
                ));
            }
        }
    }

    // Secrets.
    for (file, text, body) in &m.files {
        let f = rel(file);
        for (key, lit) in string_literals(body) {
            if let Some(why) = looks_like_secret(&lit) {
                out.push(format!("{f}: {key} = {lit:?} looks like {why}"));
            }
            if is_secret_name(&key) && !lit.trim().is_empty() {
                out.push(format!("{f}: {key} is a credential given as a literal"));
            }
        }
        // Comments too (they are not in the parsed body).
        for line in text.lines() {
            if let Some(why) = looks_like_secret(line) {
                out.push(format!("{f}: {line:?} looks like {why}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The directory a module call's local source names.
fn local_source_dir(m: &Module, call: &Block) -> Option<PathBuf> {
    let s = string_attr(call.body(), "source")?;
    if !(s.starts_with("./") || s.starts_with("../")) {
        return None;
    }
    Some(normalize(&m.dir.join(s)))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Tests: the tool

fn terraform() -> PathBuf {
    tandem_deploy::tool("terraform").expect(
        "terraform is not on the PATH: these checks need it (it is installed on the \
         development machines and in CI)",
    )
}

#[test]
fn terraform_fmt_finds_nothing_to_change() {
    let out = Command::new(terraform())
        .args(["fmt", "-check", "-recursive", "-diff"])
        .arg(tf_root())
        .output()
        .expect("run terraform fmt");
    assert!(
        out.status.success(),
        "terraform fmt -check -recursive deploy/terraform: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // fmt -recursive only reads *.tf and *.tfvars: the example goes in on stdin.
    let mut examples = Vec::new();
    collect_files(&tf_root(), "example", &mut examples);
    assert!(
        !examples.is_empty(),
        "no *.tfvars.example under deploy/terraform"
    );
    for f in examples {
        let mut child = Command::new(terraform())
            .args(["fmt", "-check", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run terraform fmt -");
        let text = std::fs::read(&f).expect("read example");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&text)
            .expect("write to terraform fmt");
        let out = child.wait_with_output().expect("terraform fmt -");
        assert!(
            out.status.success(),
            "terraform fmt -check - < {}: {}\n{}",
            rel(&f),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_installed_terraform_satisfies_every_required_version() {
    let out = Command::new(terraform())
        .args(["version", "-json"])
        .output()
        .expect("run terraform version");
    assert!(
        out.status.success(),
        "terraform version -json: {}",
        out.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("terraform version -json prints JSON");
    let installed = json["terraform_version"]
        .as_str()
        .expect("terraform_version");
    let v = parse_version(installed).expect("terraform's own version parses");
    for m in modules() {
        for tf in m.blocks("terraform") {
            let c = string_attr(tf.body(), "required_version").expect("required_version");
            let terms = parse_constraint(c).expect("required_version parses");
            assert!(
                satisfies(&terms, &v),
                "{}: required_version {c:?} excludes the terraform that checks it ({installed})",
                m.rel()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Tests: every module directory

#[test]
fn every_module_directory_is_consistent() {
    let mods = modules();
    let want = [
        "modules/gke",
        "modules/eks",
        "modules/aks",
        "modules/kafka",
        "modules/cloudflare",
        "envs/production",
    ];
    for w in want {
        module_at(&mods, w);
    }
    let all: Vec<String> = mods.iter().flat_map(|m| problems(m, &mods)).collect();
    assert!(all.is_empty(), "deploy/terraform:\n{}", all.join("\n"));
}

#[test]
fn the_environment_wires_every_module_and_keeps_secrets_out_of_files() {
    let mods = modules();
    let env = &mods[module_at(&mods, "envs/production")];
    let sources: BTreeMap<String, String> = env
        .blocks("module")
        .map(|b| {
            (
                label(b, 0).unwrap_or_default().to_owned(),
                string_attr(b.body(), "source")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for (name, dir) in [
        ("eks", "modules/eks"),
        ("gke", "modules/gke"),
        ("aks", "modules/aks"),
        ("kafka", "modules/kafka"),
        ("cloudflare", "modules/cloudflare"),
    ] {
        let src = sources
            .get(name)
            .unwrap_or_else(|| panic!("envs/production calls no module {name:?}"));
        assert_eq!(
            normalize(&env.dir.join(src)),
            tf_root().join(dir),
            "module {name:?}"
        );
    }

    // Credentials come in through sensitive variables (no default) or the
    // providers' environment variables; a provider block holds none.
    let vars = env.variables();
    for cred in ["kafka_api_key", "kafka_api_secret"] {
        let b = vars
            .get(cred)
            .unwrap_or_else(|| panic!("envs/production declares no {cred:?}"));
        assert!(
            matches!(attr(b.body(), "sensitive"), Some(Expression::Bool(true))),
            "{cred} must be sensitive"
        );
    }
    for p in env.blocks("provider") {
        for a in p.body().attributes() {
            assert!(
                !is_secret_name(a.key.as_str()) || !matches!(a.expr, Expression::String(_)),
                "provider {:?}: {} is a literal credential",
                label(p, 0),
                a.key
            );
        }
    }

    // The example variables file: parses, sets only declared variables,
    // sets no sensitive one, holds nothing that looks like a secret.
    let example = env.dir.join("terraform.tfvars.example");
    let text = std::fs::read_to_string(&example).expect("terraform.tfvars.example");
    let body = hcl::parse(&text).expect("terraform.tfvars.example parses as HCL");
    for a in body.attributes() {
        let b = vars
            .get(a.key.as_str())
            .unwrap_or_else(|| panic!("the example sets {:?}, which is not declared", a.key));
        assert!(
            !matches!(attr(b.body(), "sensitive"), Some(Expression::Bool(true))),
            "the example sets the sensitive {:?}",
            a.key
        );
    }
    for (key, lit) in string_literals(&body) {
        assert!(
            looks_like_secret(&lit).is_none(),
            "the example's {key} looks like a secret"
        );
    }
    for line in text.lines() {
        assert!(
            looks_like_secret(line).is_none(),
            "the example's line {line:?} looks like a secret"
        );
    }
    // Every required variable of the environment is set by the example,
    // except the secrets, which come from TF_VAR_*.
    let set: BTreeSet<&str> = body.attributes().map(|a| a.key.as_str()).collect();
    for (name, b) in &vars {
        let sensitive = matches!(attr(b.body(), "sensitive"), Some(Expression::Bool(true)));
        if attr(b.body(), "default").is_none() && !sensitive {
            assert!(
                set.contains(name.as_str()),
                "the example does not set {name:?}"
            );
        }
    }
}

#[test]
fn every_cluster_spans_three_zones() {
    let mods = modules();
    let string_list = |e: Option<&Expression>| -> Vec<String> {
        match e {
            Some(Expression::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Expression::String(s) => s.clone(),
                    other => panic!("not a string literal: {other:?}"),
                })
                .collect(),
            other => panic!("not a list literal: {other:?}"),
        }
    };
    let three_distinct = |what: &str, zones: &[String]| {
        let distinct: BTreeSet<&String> = zones.iter().collect();
        assert!(
            zones.len() == 3 && distinct.len() == 3,
            "{what}: {zones:?} is not three distinct zones"
        );
    };

    // The modules' zone variables refuse anything but three zones.
    for (dir, var) in [
        ("modules/gke", "zones"),
        ("modules/eks", "azs"),
        ("modules/aks", "zones"),
    ] {
        let m = &mods[module_at(&mods, dir)];
        let vars = m.variables();
        let b = vars
            .get(var)
            .unwrap_or_else(|| panic!("{dir}: no variable {var:?}"));
        let validation = b
            .body()
            .blocks()
            .find(|v| v.identifier() == "validation")
            .unwrap_or_else(|| panic!("{dir}: {var} has no validation"));
        let cond = attr(validation.body(), "condition").expect("condition");
        let mut compares_length_to_3 = false;
        walk_expr(cond, &mut |e| {
            if let Expression::Operation(op) = e {
                if let Operation::Binary(b) = op.as_ref() {
                    let is_len = |x: &Expression| {
                        matches!(x, Expression::FuncCall(c) if c.name.name.as_str() == "length"
                            && matches!(reference(&c.args[0]), Some((r, p)) if r == "var" && p == [var]))
                    };
                    let is_3 = |x: &Expression| matches!(x, Expression::Number(n) if n.as_u64() == Some(3));
                    if b.operator == hcl::expr::BinaryOperator::Eq
                        && ((is_len(&b.lhs_expr) && is_3(&b.rhs_expr))
                            || (is_3(&b.lhs_expr) && is_len(&b.rhs_expr)))
                    {
                        compares_length_to_3 = true;
                    }
                }
            }
        });
        assert!(
            compares_length_to_3,
            "{dir}: the validation of {var} does not require length(var.{var}) == 3"
        );
        if let Some(default) = attr(b.body(), "default") {
            three_distinct(
                &format!("{dir}: default {var}"),
                &string_list(Some(default)),
            );
        }
    }

    // The example's zones lie in their regions.
    let env = &mods[module_at(&mods, "envs/production")];
    let text = std::fs::read_to_string(env.dir.join("terraform.tfvars.example")).unwrap();
    let body = hcl::parse(&text).unwrap();
    for (zones, region) in [("aws_azs", "aws_region"), ("gcp_zones", "gcp_region")] {
        let zs = string_list(attr(&body, zones));
        three_distinct(zones, &zs);
        let r = string_attr(&body, region).expect(region);
        for z in &zs {
            assert!(z.starts_with(r), "{zones}: {z} is not in {region} {r}");
        }
    }
}

// ---------------------------------------------------------------------------
// Tests: the values that must agree with the source and the repository

#[test]
fn the_gke_module_is_the_sources_with_the_constraint_fixed() {
    let mods = modules();
    let m = &mods[module_at(&mods, "modules/gke")];
    let call = m
        .blocks("module")
        .find(|b| label(b, 0) == Some("gke"))
        .expect("modules/gke calls module \"gke\"");
    let body = call.body();
    assert_eq!(
        string_attr(body, "source"),
        Some("terraform-google-modules/kubernetes-engine/google//modules/beta-public-cluster")
    );
    assert_eq!(string_attr(body, "version"), Some("~> 29.0"));
    let terms = parse_constraint("~> 29.0").unwrap();
    for (v, ok) in [
        ("29.0.0", true),
        ("29.9.1", true),
        ("30.0.0", false),
        ("28.9.9", false),
    ] {
        assert_eq!(satisfies(&terms, &parse_version(v).unwrap()), ok, "{v}");
    }
    // The HTML-escaped form the source printed is named in a comment only.
    let text: String = m.files.iter().map(|(_, t, _)| t.as_str()).collect();
    assert!(
        text.contains("~&gt; 29.0"),
        "the comment on the source's escaped constraint is gone"
    );
    assert!(parse_constraint("~&gt; 29.0").is_err());

    // Name and region: the module's variables, passed through, with the
    // source's values as defaults here and in the environment.
    for (arg, var) in [("name", "name"), ("region", "region"), ("zones", "zones")] {
        assert_eq!(
            reference(attr(body, arg).unwrap_or_else(|| panic!("no {arg}"))),
            Some(("var".to_owned(), vec![var.to_owned()])),
            "module gke's {arg}"
        );
    }
    assert!(matches!(
        attr(body, "regional"),
        Some(Expression::Bool(true))
    ));
    let vars = m.variables();
    let default = |name: &str| string_attr(vars[name].body(), "default").map(str::to_owned);
    assert_eq!(default("name").as_deref(), Some("dex-engine-gcp"));
    assert_eq!(default("region").as_deref(), Some("us-central1"));

    let env = &mods[module_at(&mods, "envs/production")];
    let env_vars = env.variables();
    let env_default = |name: &str| string_attr(env_vars[name].body(), "default").map(str::to_owned);
    assert_eq!(
        env_default("gke_cluster_name").as_deref(),
        Some("dex-engine-gcp")
    );
    assert_eq!(env_default("gcp_region").as_deref(), Some("us-central1"));
    let env_call = env
        .blocks("module")
        .find(|b| label(b, 0) == Some("gke"))
        .expect("envs/production calls module \"gke\"");
    for (arg, var) in [("name", "gke_cluster_name"), ("region", "gcp_region")] {
        assert_eq!(
            reference(attr(env_call.body(), arg).expect(arg)),
            Some(("var".to_owned(), vec![var.to_owned()])),
            "envs/production module gke's {arg}"
        );
    }
}

#[test]
fn the_kafka_topic_has_the_production_settings() {
    let mods = modules();
    let m = &mods[module_at(&mods, "modules/kafka")];
    let topic = m
        .blocks("resource")
        .find(|b| label(b, 0) == Some("confluent_kafka_topic"))
        .expect("modules/kafka has a confluent_kafka_topic");
    let Some(Expression::Object(config)) = attr(topic.body(), "config") else {
        panic!("the topic's config is not an object literal");
    };
    let got: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| {
            let k = match k {
                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                ObjectKey::Identifier(i) => i.to_string(),
                other => panic!("config key {other:?} is not a literal"),
            };
            let Expression::String(v) = v else {
                panic!("config {k:?} = {v:?} is not a string literal");
            };
            (k, v.clone())
        })
        .collect();
    let want: BTreeMap<String, String> = tandem_kafka::production_topic_settings(
        2,
        tandem_kafka::KafkaLogConfig::new("", "", 0).max_message_bytes,
    )
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want, "modules/kafka's topic config");
    assert_eq!(got["retention.ms"], "9223372036854775807");
    assert!(!got.contains_key("replication.factor"));

    // The nodes' sample config: the same topic and min.insync.replicas.
    let node: toml::Value = toml::from_str(
        &std::fs::read_to_string(tandem_deploy::deploy("node/tandem-node.toml"))
            .expect("deploy/node/tandem-node.toml"),
    )
    .expect("the node sample parses");
    assert_eq!(
        node["log"]["kafka_min_insync_replicas"]
            .as_integer()
            .map(|i| i.to_string()),
        Some(got["min.insync.replicas"].clone()),
        "the node sample's kafka_min_insync_replicas"
    );
    let topic_default = string_attr(m.variables()["topic_name"].body(), "default")
        .expect("topic_name has a default");
    assert_eq!(node["log"]["kafka_topic"].as_str(), Some(topic_default));
    let env = &mods[module_at(&mods, "envs/production")];
    assert_eq!(
        string_attr(env.variables()["kafka_topic"].body(), "default"),
        Some(topic_default)
    );

    // The topic can be neither destroyed nor repartitioned by an apply.
    let lifecycle = topic
        .body()
        .blocks()
        .find(|b| b.identifier() == "lifecycle")
        .expect("the topic has a lifecycle block");
    assert!(matches!(
        attr(lifecycle.body(), "prevent_destroy"),
        Some(Expression::Bool(true))
    ));
    let ignored: Vec<_> = match attr(lifecycle.body(), "ignore_changes") {
        Some(Expression::Array(a)) => a.iter().map(reference).collect(),
        other => panic!("ignore_changes: {other:?}"),
    };
    assert!(
        ignored.contains(&Some(("partitions_count".to_owned(), vec![]))),
        "partitions_count must be in ignore_changes"
    );
}

#[test]
fn the_worker_is_the_one_of_deploy_cloudflare() {
    let mods = modules();
    let m = &mods[module_at(&mods, "modules/cloudflare")];
    let wrangler: toml::Value = toml::from_str(
        &std::fs::read_to_string(tandem_deploy::deploy("cloudflare/wrangler.toml"))
            .expect("wrangler.toml"),
    )
    .expect("wrangler.toml parses");
    let vars = m.variables();
    let default = |name: &str| string_attr(vars[name].body(), "default").map(str::to_owned);
    assert_eq!(default("worker_name").as_deref(), wrangler["name"].as_str());
    assert_eq!(
        default("compatibility_date").as_deref(),
        wrangler["compatibility_date"].as_str()
    );

    // local.worker_dir is deploy/cloudflare.
    let worker_dir = m
        .blocks("locals")
        .find_map(|b| attr(b.body(), "worker_dir"))
        .expect("local.worker_dir");
    let Expression::TemplateExpr(t) = worker_dir else {
        panic!("local.worker_dir is not a template: {worker_dir:?}");
    };
    let raw = t.to_string();
    let dir = raw
        .strip_prefix("${path.module}/")
        .unwrap_or_else(|| panic!("local.worker_dir {raw:?} is not under path.module"));
    let worker_root = tandem_deploy::deploy("cloudflare");
    assert_eq!(normalize(&m.dir.join(dir)), worker_root);

    let version = m
        .blocks("resource")
        .find(|b| label(b, 0) == Some("cloudflare_worker_version"))
        .expect("a cloudflare_worker_version");
    let main = string_attr(version.body(), "main_module").expect("main_module");
    assert_eq!(
        Some(main),
        wrangler["main"].as_str(),
        "main_module is wrangler.toml's main"
    );

    // Modules: each uploaded under its path relative to deploy/cloudflare,
    // read from that path.
    let Some(Expression::Array(modules)) = attr(version.body(), "modules") else {
        panic!("modules is not a list");
    };
    let mut names = BTreeSet::new();
    for module in modules {
        let Expression::Object(o) = module else {
            panic!("a module is not an object");
        };
        let get = |k: &str| {
            o.iter().find_map(|(key, v)| match key {
                ObjectKey::Identifier(i) if i.as_str() == k => Some(v),
                _ => None,
            })
        };
        let Some(Expression::String(name)) = get("name") else {
            panic!("a module has no literal name");
        };
        let Some(Expression::TemplateExpr(file)) = get("content_file") else {
            panic!("module {name}: content_file is not a template");
        };
        assert_eq!(
            file.to_string(),
            format!("${{local.worker_dir}}/{name}"),
            "module {name} is read from another path"
        );
        let kind = match get("content_type") {
            Some(Expression::String(s)) => s.as_str(),
            other => panic!("module {name}: content_type {other:?}"),
        };
        let want = if name.ends_with(".wasm") {
            "application/wasm"
        } else {
            "application/javascript+module"
        };
        assert_eq!(kind, want, "module {name}'s content type");
        names.insert(name.clone());
    }
    assert!(
        names.contains(main),
        "the main module {main} is not uploaded"
    );
    assert!(worker_root.join(main).is_file(), "{main} does not exist");

    // Every relative import of the script names an uploaded module.
    let script = std::fs::read_to_string(worker_root.join(main)).expect("the script");
    let main_dir = Path::new(main).parent().unwrap_or(Path::new(""));
    let mut imports = 0;
    for line in script.lines() {
        let l = line.trim_start();
        if !l.starts_with("import ") {
            continue;
        }
        let Some(spec) = l.split('"').nth(1) else {
            continue;
        };
        if !spec.starts_with('.') {
            continue;
        }
        imports += 1;
        let resolved = normalize(&main_dir.join(spec));
        let resolved = resolved.to_str().expect("UTF-8 path");
        assert!(
            names.contains(resolved),
            "{main} imports {spec} ({resolved}), which is not uploaded"
        );
    }
    assert!(
        imports > 0,
        "{main} imports no module (the wasm import moved?)"
    );
    // build.sh writes the wasm module where it is read from.
    let build = std::fs::read_to_string(worker_root.join("build.sh")).expect("build.sh");
    for n in names.iter().filter(|n| n.ends_with(".wasm")) {
        assert!(
            build.contains(&format!("$here/{n}")),
            "build.sh does not write {n}"
        );
    }

    // Bindings: ROUTES as wrangler binds it, and TANDEM_ROUTES.
    let Some(Expression::Array(bindings)) = attr(version.body(), "bindings") else {
        panic!("bindings is not a list");
    };
    let binding = |name: &str| -> Option<String> {
        bindings.iter().find_map(|b| {
            let Expression::Object(o) = b else {
                return None;
            };
            let field = |k: &str| {
                o.iter().find_map(|(key, v)| match (key, v) {
                    (ObjectKey::Identifier(i), Expression::String(s)) if i.as_str() == k => {
                        Some(s.clone())
                    }
                    _ => None,
                })
            };
            (field("name").as_deref() == Some(name)).then(|| field("type").unwrap_or_default())
        })
    };
    let kv = wrangler["kv_namespaces"]
        .as_array()
        .expect("wrangler.toml has kv_namespaces");
    for ns in kv {
        let b = ns["binding"].as_str().expect("binding");
        assert_eq!(binding(b).as_deref(), Some("kv_namespace"), "binding {b}");
        assert!(
            script.contains(&format!("env.{b}")),
            "the script does not use {b}"
        );
    }
    assert_eq!(binding("TANDEM_ROUTES").as_deref(), Some("plain_text"));

    // A route sends the zone's requests to the Worker.
    assert!(
        m.blocks("resource")
            .any(|b| label(b, 0) == Some("cloudflare_workers_route")),
        "no cloudflare_workers_route"
    );

    // The example's routes are wrangler.toml's (the plan's first step).
    let env = &mods[module_at(&mods, "envs/production")];
    let text = std::fs::read_to_string(env.dir.join("terraform.tfvars.example")).unwrap();
    let body = hcl::parse(&text).unwrap();
    let routes = match attr(&body, "edge_routes_json") {
        Some(Expression::TemplateExpr(t)) => parse_template(t)
            .elements()
            .iter()
            .map(|e| match e {
                Element::Literal(s) => s.clone(),
                other => panic!("edge_routes_json has an interpolation: {other:?}"),
            })
            .collect::<String>(),
        Some(Expression::String(s)) => s.clone(),
        other => panic!("edge_routes_json: {other:?}"),
    };
    let routes: serde_json::Value =
        serde_json::from_str(&routes).expect("edge_routes_json is JSON");
    let wrangler_routes: serde_json::Value = serde_json::from_str(
        wrangler["vars"]["TANDEM_ROUTES"]
            .as_str()
            .expect("wrangler.toml's TANDEM_ROUTES"),
    )
    .expect("TANDEM_ROUTES is JSON");
    assert_eq!(
        routes, wrangler_routes,
        "the example's routes and wrangler.toml's differ"
    );
}

#[test]
fn the_example_agrees_with_the_kubernetes_overlays_and_the_release_workflow() {
    let mods = modules();
    let env = &mods[module_at(&mods, "envs/production")];
    let text = std::fs::read_to_string(env.dir.join("terraform.tfvars.example")).unwrap();
    let body = hcl::parse(&text).unwrap();
    let strings = |key: &str| -> Vec<String> {
        match attr(&body, key) {
            Some(Expression::Array(a)) => a
                .iter()
                .map(|e| match e {
                    Expression::String(s) => s.clone(),
                    other => panic!("{key}: {other:?}"),
                })
                .collect(),
            other => panic!("the example's {key}: {other:?}"),
        }
    };

    // The zones the overlays pin the node StatefulSet to.
    let overlay_zones = |cloud: &str| -> Vec<String> {
        let path = tandem_deploy::deploy(&format!("kubernetes/overlays/{cloud}/zones.yaml"));
        let docs = tandem_deploy::yaml_docs(&std::fs::read_to_string(&path).expect("zones.yaml"))
            .expect("zones.yaml parses");
        let terms = &docs[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        terms[0]["matchExpressions"]
            .as_array()
            .expect("matchExpressions")
            .iter()
            .find(|e| e["key"] == "topology.kubernetes.io/zone")
            .and_then(|e| e["values"].as_array())
            .unwrap_or_else(|| panic!("{}: no zone values", rel(&path)))
            .iter()
            .map(|v| v.as_str().expect("a zone").to_owned())
            .collect()
    };
    assert_eq!(
        strings("aws_azs"),
        overlay_zones("eks"),
        "aws_azs and the EKS overlay"
    );
    assert_eq!(
        strings("gcp_zones"),
        overlay_zones("gke"),
        "gcp_zones and the GKE overlay"
    );
    // AKS labels a node of zone N of location L with the zone "L-N".
    let location = string_attr(&body, "azure_location").expect("azure_location");
    let aks = &mods[module_at(&mods, "modules/aks")];
    let aks_zones: Vec<String> = match attr(aks.variables()["zones"].body(), "default") {
        Some(Expression::Array(a)) => a
            .iter()
            .map(|e| match e {
                Expression::String(z) => format!("{location}-{z}"),
                other => panic!("aks zone {other:?}"),
            })
            .collect(),
        other => panic!("modules/aks zones default: {other:?}"),
    };
    assert_eq!(
        aks_zones,
        overlay_zones("aks"),
        "AKS zones and the AKS overlay"
    );

    // The topic the overlays' nodes read.
    let topic = string_attr(&body, "kafka_topic").expect("kafka_topic");
    let partitions = match attr(&body, "kafka_partitions") {
        Some(Expression::Number(n)) => n.as_i64().expect("an integer"),
        other => panic!("kafka_partitions: {other:?}"),
    };
    for cloud in ["eks", "gke", "aks"] {
        let path = tandem_deploy::deploy(&format!("kubernetes/overlays/{cloud}/tandem-node.toml"));
        let node: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", rel(&path)));
        assert_eq!(
            node["log"]["kafka_topic"].as_str(),
            Some(topic),
            "{}",
            rel(&path)
        );
        assert_eq!(
            node["log"]["kafka_partitions"].as_integer(),
            Some(partitions),
            "{}",
            rel(&path)
        );
    }

    // The repository variables the release workflow reads to reach the
    // clusters are the environment's release_workflow_variables output.
    let workflow =
        std::fs::read_to_string(tandem_deploy::repo_root().join(".github/workflows/release.yml"))
            .expect(".github/workflows/release.yml");
    let used: BTreeSet<String> = workflow
        .match_indices("vars.")
        .map(|(i, m)| {
            workflow[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    let output = env
        .blocks("output")
        .find(|b| label(b, 0) == Some("release_workflow_variables"))
        .expect("output release_workflow_variables");
    let Some(Expression::Object(o)) = attr(output.body(), "value") else {
        panic!("release_workflow_variables is not an object");
    };
    let given: BTreeSet<String> = o
        .iter()
        .map(|(k, _)| match k {
            ObjectKey::Identifier(i) => i.to_string(),
            other => panic!("key {other:?}"),
        })
        .collect();
    for g in &given {
        assert!(used.contains(g), "release.yml does not read vars.{g}");
    }
    for u in &used {
        let cluster = ["AWS_", "EKS_", "GKE_", "GCP_", "AKS_"]
            .iter()
            .any(|p| u.starts_with(p));
        assert!(
            !cluster || given.contains(u),
            "release.yml reads vars.{u}, which release_workflow_variables does not give"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests of the checking code itself

#[test]
fn the_walker_finds_references_inside_templates_and_nested_expressions() {
    let body = hcl::parse(
        r#"
        a = "${var.in_template}-x"
        b = <<-EOT
          %{ if var.in_directive }${local.in_heredoc}%{ endif }
          %{ for x in var.in_for_directive }${x}%{ endfor }
        EOT
        c = [for z in var.in_for : upper(z) if z != var.in_cond]
        d = { (var.in_key) = var.in_value }
        e = var.in_cond_expr ? module.m.out : data.t_x.n.id
        f = lookup(var.in_arg, "k")[var.in_index]
        g = -var.in_unary + (var.in_paren * 2)
        block "label" {
          h = var.in_block
          i = aws_thing.name.attr
        }
        "#,
    )
    .expect("parses");
    let refs: BTreeSet<(String, String)> = references(&body)
        .into_iter()
        .map(|(r, p)| (r, p.first().cloned().unwrap_or_default()))
        .collect();
    for v in [
        "in_template",
        "in_directive",
        "in_for_directive",
        "in_for",
        "in_cond",
        "in_key",
        "in_value",
        "in_cond_expr",
        "in_arg",
        "in_index",
        "in_unary",
        "in_paren",
        "in_block",
    ] {
        assert!(
            refs.contains(&("var".into(), v.into())),
            "var.{v} not found in {refs:?}"
        );
    }
    for (root, first) in [
        ("local", "in_heredoc"),
        ("module", "m"),
        ("data", "t_x"),
        ("aws_thing", "name"),
    ] {
        assert!(
            refs.contains(&(root.into(), first.into())),
            "{root}.{first} not found"
        );
    }
}

#[test]
fn a_module_with_a_broken_reference_or_call_is_reported() {
    let dir = std::env::temp_dir().join(format!("tandem-tf-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("child")).unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::write(
        dir.join("child/main.tf"),
        r#"
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0" }
  }
}
variable "needed" { type = string }
variable "token" {
  type      = string
  sensitive = true
  default   = "x"
}
resource "aws_s3_bucket" "b" { bucket = "${var.needed}-${var.token}" }
output "id" { value = aws_s3_bucket.b.id }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("root/main.tf"),
        r#"
terraform {
  required_version = "~&gt; 1.5"
  required_providers {
    confluent = { version = "~> 2.0" }
  }
}
variable "unused" { type = string }
module "child" {
  source = "../child"
  extra  = 1
}
module "gone" { source = "../nowhere" }
module "reg" {
  source  = "terraform-google-modules/kubernetes-engine/google//modules/beta-public-cluster"
  version = "~&gt; 29.0"
}
module "bad" { source = "not-a-registry-address" }
resource "google_compute_network" "n" {
  name         = "${var.undeclared}-${local.nothing}"
  description  = module.child.no_such_output
  routing_mode = aws_vpc.missing.id
  api_token    = "AKIAIOSFODNN7EXAMPLE"
}
"#,
    )
    .unwrap();
    let mods = load_modules(&dir);
    let root = mods.iter().find(|m| m.dir.ends_with("root")).unwrap();
    let child = mods.iter().find(|m| m.dir.ends_with("child")).unwrap();
    let found = problems(root, &mods).join("\n");
    for expected in [
        "required_version",
        "provider \"confluent\" has no source",
        "variable \"unused\" is declared but never used",
        "passes \"extra\"",
        "does not pass \"needed\"",
        "module \"gone\"",
        "module \"reg\": version",
        "module \"bad\"",
        "var.undeclared is not declared",
        "local.nothing is not defined",
        "no_such_output",
        "aws_vpc.missing is not a resource",
        "belongs to no provider",
        "an AWS access key id",
        "api_token is a credential given as a literal",
    ] {
        assert!(
            found.contains(expected),
            "{expected:?} not reported in:\n{found}"
        );
    }
    let found = problems(child, &mods).join("\n");
    assert!(
        found.contains("sensitive variable \"token\" has a default"),
        "{found}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_constraints_parse_as_terraform_writes_them() {
    for ok in [
        "~> 29.0",
        ">= 1.6, < 2.0",
        "1.2.3",
        "= 1.2.3-beta.1",
        "!= 2.0.0",
        ">=5.0",
        "~> 5",
        "<= 3.1.4, > 3.0",
    ] {
        assert!(
            parse_constraint(ok).is_ok(),
            "{ok:?}: {:?}",
            parse_constraint(ok)
        );
    }
    for bad in [
        "",
        "~&gt; 29.0",
        ">=",
        "~> 29.x",
        "1.2.3.4",
        "=> 1.0",
        ">= 1.0,",
        "latest",
        "~> 1.0-",
        "v1.2.3",
    ] {
        assert!(parse_constraint(bad).is_err(), "{bad:?} parsed");
    }
    let v = |s: &str| parse_version(s).unwrap();
    let c = |s: &str| parse_constraint(s).unwrap();
    assert!(satisfies(&c("~> 1.2.3"), &v("1.2.9")));
    assert!(!satisfies(&c("~> 1.2.3"), &v("1.3.0")));
    assert!(satisfies(&c("~> 1.2"), &v("1.11.4")));
    assert!(!satisfies(&c("~> 1.2"), &v("2.0.0")));
    assert!(satisfies(&c(">= 1.6, < 2.0"), &v("1.11.4")));
    assert!(!satisfies(&c(">= 1.6, < 2.0"), &v("1.5.7")));
    assert!(!satisfies(&c("!= 1.2.3"), &v("1.2.3")));
    assert!(v("1.0.0-rc.1").cmp_to(&v("1.0.0")).is_lt());
    assert!(v("1.0.0-rc.2").cmp_to(&v("1.0.0-rc.10")).is_lt());
}

#[test]
fn registry_addresses_and_secrets_are_told_apart() {
    for ok in [
        "terraform-google-modules/kubernetes-engine/google//modules/beta-public-cluster",
        "terraform-aws-modules/eks/aws",
        "app.terraform.io/acme/network/aws",
    ] {
        assert!(check_registry_source(ok).is_ok(), "{ok}");
    }
    for bad in [
        "eks/aws",
        "terraform-aws-modules/eks/AWS",
        "a/b/c//",
        "a/b/c//../x",
        "git::https://example.com/x.git",
    ] {
        assert!(check_registry_source(bad).is_err(), "{bad}");
    }
    for secret in [
        "AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN RSA PRIVATE KEY-----",
        "token: ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "Zt3vK9qLw2XbN8rP5mY7cD1fH4jS6gA0eU2iO9kR",
    ] {
        assert!(looks_like_secret(secret).is_some(), "{secret}");
    }
    for plain in [
        "00000000000000000000000000000000",
        "00000000-0000-0000-0000-000000000000",
        "lkc-000000",
        "terraform-google-modules/kubernetes-engine/google//modules/beta-public-cluster",
        "https://pkc-00000.us-east-1.aws.confluent.cloud:443",
        "AL2023_x86_64_STANDARD",
        "application/javascript+module",
        "9223372036854775807",
        "unclean.leader.election.enable",
    ] {
        assert!(
            looks_like_secret(plain).is_none(),
            "{plain}: {:?}",
            looks_like_secret(plain)
        );
    }
}

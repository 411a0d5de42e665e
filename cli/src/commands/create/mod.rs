//! `kulisse create deployment|configmap|secret|namespace NAME ...` (mirrors kubectl's
//! imperative `create` subcommands).
//!
//! `apply -f` sends what a file declares; `create deployment web --image=nginx` lets the
//! *client* build the object from flags, with kubectl's generator rules (the object shapes
//! below are kubectl's, field for field: a Deployment's labels and selector are
//! `app: NAME`, each container is named after its image, `--port` goes to the first
//! container; a ConfigMap gets text as `data` and non-UTF-8 files as `binaryData`), then
//! POSTs it to the collection. `--dry-run=client -o yaml` prints the object without sending
//! it (a quick way to start a manifest); `--dry-run=server` sends it with `dryRun=All`, so
//! the API server defaults and validates it but stores nothing.
//!
//! Secrets are in `secret.rs`; both share the `--from-literal`/`--from-file`
//! sources here.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use http::Method;
use kulisse_core::objects::{self, ResourceInfo};
use serde_json::{Map, Value, json};

use super::{client, kind_ref, namespace};
use crate::GlobalArgs;

pub mod secret;

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub command: CreateCommand,
}

#[derive(Subcommand, Debug)]
pub enum CreateCommand {
    /// Create a Deployment running the given image(s).
    #[command(visible_alias = "deploy")]
    Deployment(DeploymentArgs),
    /// Create a ConfigMap from literal values and files.
    #[command(visible_alias = "cm")]
    Configmap(ConfigMapArgs),
    /// Create a Secret (generic, tls or docker-registry).
    Secret(secret::SecretArgs),
    /// Create a Namespace.
    #[command(visible_alias = "ns")]
    Namespace(NamespaceArgs),
}

/// `--dry-run`: `none` sends, `client` only prints, `server` lets the API server check.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    None,
    Client,
    Server,
}

impl DryRun {
    /// What kubectl's name printer appends: ` (dry run)`, ` (server dry run)` or nothing.
    pub fn suffix(self) -> &'static str {
        match self {
            DryRun::None => "",
            DryRun::Client => " (dry run)",
            DryRun::Server => " (server dry run)",
        }
    }
}

/// `-o` of the create commands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum CreateOutput {
    Yaml,
    Json,
    Name,
}

/// Flags every create subcommand has.
#[derive(Args, Debug, Clone)]
pub struct CreateCommon {
    /// `none`, `client` (print the object, send nothing) or `server` (checked, not stored).
    #[arg(long = "dry-run", value_enum, default_value_t = DryRun::None, num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Print the object as yaml or json, or only its name.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<CreateOutput>,
}

#[derive(Args, Debug)]
pub struct DeploymentArgs {
    pub name: String,
    /// The image(s) to run, one container each.
    #[arg(long = "image", required = true)]
    pub images: Vec<String>,
    /// Number of replicas.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub replicas: i32,
    /// The port the (first) container exposes.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub port: i32,
    #[command(flatten)]
    pub common: CreateCommon,
    /// The command to run instead of the image's (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigMapArgs {
    pub name: String,
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub common: CreateCommon,
}

#[derive(Args, Debug)]
pub struct NamespaceArgs {
    pub name: String,
    #[command(flatten)]
    pub common: CreateCommon,
}

/// `--from-literal key=value` and `--from-file [key=]path`.
#[derive(Args, Debug, Clone, Default)]
pub struct Sources {
    /// A `key=value` pair (repeatable).
    #[arg(long = "from-literal")]
    pub literals: Vec<String>,
    /// A file (key: its name, or `key=path`) or a directory (each file in it) (repeatable).
    #[arg(long = "from-file")]
    pub files: Vec<String>,
}

/// One key of a ConfigMap or Secret, with its raw bytes.
pub type Entry = (String, Vec<u8>);

/// `[-._a-zA-Z0-9]+`, the keys ConfigMaps and Secrets accept (`IsConfigMapKey`).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// The keys and bytes of `--from-file` and `--from-literal`, files first, as kubectl
/// reads them. Errors are kubectl's.
pub fn read_sources(sources: &Sources) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for spec in &sources.files {
        let (key, path) = match spec.split_once('=') {
            Some((k, p)) if !k.is_empty() => (Some(k.to_string()), p.to_string()),
            Some(_) => bail!("key names or file paths cannot be empty"),
            None => (None, spec.clone()),
        };
        let p = Path::new(&path);
        if p.is_dir() {
            if key.is_some() {
                bail!("cannot give a key name for a directory path");
            }
            let mut files: Vec<_> = std::fs::read_dir(p)?
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                out.push((f.file_name().to_string_lossy().into_owned(), std::fs::read(f.path())?));
            }
            continue;
        }
        let bytes = std::fs::read(p).map_err(|e| anyhow::anyhow!("error reading {path}: {}", io_text(&e)))?;
        let key = key.unwrap_or_else(|| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        out.push((key, bytes));
    }
    for lit in &sources.literals {
        match lit.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.as_bytes().to_vec())),
            _ => bail!("invalid literal source {lit}, expected key=value"),
        }
    }
    Ok(out)
}

/// Go's wording of common I/O errors (`no such file or directory`).
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The Deployment `kubectl create deployment` builds.
pub fn deployment(args: &DeploymentArgs) -> anyhow::Result<Value> {
    if args.images.len() > 1 && !args.command.is_empty() {
        bail!("cannot specify multiple --image options and command");
    }
    let mut containers = Vec::new();
    for image in &args.images {
        let mut name = image.rsplit('/').next().unwrap_or(image).to_string();
        for sep in [':', '@'] {
            if let Some((head, _)) = name.split_once(sep) {
                name = head.to_string();
            }
        }
        if name.contains(['_', '.']) {
            name = format!("{}-{}", name.replace(['_', '.'], "-"), random_suffix());
        }
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        c.insert("image".into(), json!(image));
        if !args.command.is_empty() {
            c.insert("command".into(), json!(args.command));
        }
        if args.port >= 0 && containers.is_empty() {
            c.insert("ports".into(), json!([{"containerPort": args.port}]));
        }
        c.insert("resources".into(), json!({}));
        containers.push(Value::Object(c));
    }
    let labels = json!({"app": args.name});
    Ok(json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": args.name, "creationTimestamp": null, "labels": labels},
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": labels},
                "spec": {"containers": containers},
            },
            "strategy": {},
        },
        "status": {},
    }))
}

/// Five characters of kubectl's `rand.String` alphabet.
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The ConfigMap `kubectl create configmap` builds: UTF-8 values in `data`, others in
/// `binaryData` (base64).
pub fn config_map(name: &str, entries: Vec<Entry>) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let mut data = Map::new();
    let mut binary = Map::new();
    for (key, bytes) in entries {
        if !valid_key(&key) {
            bail!(
                "{key:?} is not a valid key name for a ConfigMap: a valid config key must consist of alphanumeric \
                 characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for \
                 validation is '[-._a-zA-Z0-9]+')"
            );
        }
        if data.contains_key(&key) || binary.contains_key(&key) {
            bail!("cannot add key \"{key}\", another key by that name already exists in Data for ConfigMap \"{name}\"");
        }
        match String::from_utf8(bytes) {
            Ok(text) => data.insert(key, json!(text)),
            Err(e) => binary.insert(
                key,
                json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
            ),
        };
    }
    let mut cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
                        "metadata": {"name": name, "creationTimestamp": null}});
    // Go writes a map's keys sorted.
    if !data.is_empty() {
        cm["data"] = sorted(&Value::Object(data));
    }
    if !binary.is_empty() {
        cm["binaryData"] = sorted(&Value::Object(binary));
    }
    Ok(cm)
}

/// The Namespace `kubectl create namespace` builds.
pub fn namespace_object(name: &str) -> Value {
    json!({"kind": "Namespace", "apiVersion": "v1",
           "metadata": {"name": name, "creationTimestamp": null}, "spec": {}, "status": {}})
}

/// A copy with object keys sorted, as kubectl's YAML printer writes them (it goes through
/// a Go map, so keys come out in byte order).
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// YAML as kubectl prints it: keys sorted, multi-line text as `|` blocks, long single-line
/// strings (base64 data) on one line rather than folded.
pub fn yaml(v: &Value) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(&sorted(v), options).unwrap_or_else(|_| crate::output::yaml(v))
}

/// Send (unless `--dry-run=client`) and print an object built by a create subcommand.
pub async fn send(global: &GlobalArgs, obj: Value, common: &CreateCommon) -> anyhow::Result<ExitCode> {
    let info: &ResourceInfo = objects::by_gvk(
        obj["apiVersion"].as_str().unwrap_or(""),
        obj["kind"].as_str().unwrap_or(""),
    )
    .ok_or_else(|| anyhow::anyhow!("the server does not serve {} objects", obj["kind"]))?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let shown = if common.dry_run == DryRun::Client {
        obj
    } else {
        let client = client(global)?;
        let ns = info.namespaced.then(|| namespace(global, &client));
        let mut body = obj;
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("creationTimestamp");
        }
        let mut path = format!(
            "{}?fieldManager=kubectl-create",
            kulisse_core::client::path(info, ns.as_deref(), None, None)
        );
        if common.dry_run == DryRun::Server {
            path.push_str("&dryRun=All");
        }
        client
            .json(Method::POST, &path, Some("application/json"), Some(&body))
            .await?
            .0
    };
    match common.output {
        Some(CreateOutput::Yaml) => print!("{}", yaml(&shown)),
        Some(CreateOutput::Json) => println!("{}", crate::output::json(&shown)),
        Some(CreateOutput::Name) => println!("{}/{name}", kind_ref(info)),
        None => println!("{}/{name} created{}", kind_ref(info), common.dry_run.suffix()),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(global: &GlobalArgs, args: CreateArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CreateCommand::Deployment(a) => send(global, deployment(&a)?, &a.common).await,
        CreateCommand::Configmap(a) => send(global, config_map(&a.name, read_sources(&a.sources)?)?, &a.common).await,
        CreateCommand::Secret(a) => secret::run(global, a).await,
        CreateCommand::Namespace(a) => send(global, namespace_object(&a.name), &a.common).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(images: &[&str], port: i32, command: &[&str]) -> anyhow::Result<Value> {
        deployment(&DeploymentArgs {
            name: "web".into(),
            images: images.iter().map(|s| s.to_string()).collect(),
            replicas: 1,
            port,
            common: CreateCommon {
                dry_run: DryRun::Client,
                output: None,
            },
            command: command.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn a_deployment_is_shaped_as_kubectl_builds_it() {
        let d = deploy(&["localhost/busybox:latest", "nginx@sha256:abc"], 80, &[]).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "busybox");
        assert_eq!(c[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(c[1]["name"], "nginx");
        assert!(c[1].get("ports").is_none(), "--port goes to the first container only");
        let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["kind", "apiVersion", "metadata", "spec", "status"]);
        let odd = deploy(&["my_app.v2:1"], -1, &[]).unwrap();
        let name = odd["spec"]["template"]["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            name.starts_with("my-app-v2-") && name.len() == "my-app-v2-".len() + 5,
            "{name}"
        );
        let err = deploy(&["a", "b"], -1, &["sleep", "1"]).unwrap_err().to_string();
        assert_eq!(err, "cannot specify multiple --image options and command");
    }

    #[test]
    fn config_maps_take_text_as_data_and_bytes_as_binary_data() {
        let cm = config_map("c", vec![("a".into(), b"b".to_vec()), ("bin".into(), vec![0xff, 0xfe])]).unwrap();
        assert_eq!(cm["data"], json!({"a": "b"}));
        assert_eq!(cm["binaryData"], json!({"bin": "//4="}));
        let dup = config_map("c", vec![("a".into(), vec![]), ("a".into(), vec![])]).unwrap_err();
        assert_eq!(
            dup.to_string(),
            "cannot add key \"a\", another key by that name already exists in Data for ConfigMap \"c\""
        );
        assert!(config_map("c", vec![("bad key".into(), vec![])]).is_err());
    }

    #[test]
    fn literal_sources_need_a_key() {
        let s = |l: &str| Sources {
            literals: vec![l.to_string()],
            files: vec![],
        };
        assert_eq!(
            read_sources(&s("a=b=c")).unwrap(),
            vec![("a".to_string(), b"b=c".to_vec())]
        );
        let err = read_sources(&s("=v")).unwrap_err().to_string();
        assert_eq!(err, "invalid literal source =v, expected key=value");
        let missing = Sources {
            literals: vec![],
            files: vec!["/nonexistent/x".into()],
        };
        assert_eq!(
            read_sources(&missing).unwrap_err().to_string(),
            "error reading /nonexistent/x: no such file or directory"
        );
    }
}

//! The effective configuration: built-in defaults, then the TOML file in the XDG config
//! dir, then `DEPUTY_*` environment variables, then command-line flags; each overrides
//! the one before. Every value remembers where it came from, for `deputy config show`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use deputy_engine::ResourceLimits;
use deputy_engine::agent::config::{AgentConfig, CliBackend, Price, Sandbox, WorktreeCleanup};
use deputy_llm::providers::ProviderConfig;
use deputy_server::DaemonConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// Every key the config knows: name, default, and what it means.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "listen",
        "127.0.0.1:7477",
        "address the daemon listens on (loopback only)",
    ),
    (
        "data_dir",
        "",
        "where the database lives (default: $XDG_DATA_HOME/deputy)",
    ),
    (
        "parallel",
        "",
        "tasks run at once (default: number of CPUs)",
    ),
    (
        "default_timeout",
        "1h",
        "timeout of tasks that set none; \"none\" for no default",
    ),
    ("output_cap", "10MiB", "output stored per task attempt"),
    ("kill_grace", "5s", "time between SIGTERM and SIGKILL"),
    (
        "shutdown_grace",
        "30s",
        "how long shutdown waits for running tasks",
    ),
    (
        "retention_days",
        "30",
        "finished tasks older than this are deleted; 0 keeps them",
    ),
    ("max_body", "1MiB", "largest HTTP request body"),
    (
        "min_free_memory",
        "256MiB",
        "start nothing while less memory is available; \"off\" to disable",
    ),
    (
        "max_cpu_percent",
        "95",
        "start nothing while CPU use is higher; \"off\" to disable",
    ),
    (
        "lease",
        "30s",
        "how long a running task's claim lasts without a heartbeat",
    ),
    (
        "url",
        "",
        "daemon URL for the CLI (default: found through the data dir)",
    ),
    (
        "api_token",
        "",
        "bearer token; required to listen beyond loopback (at least 16 characters)",
    ),
    (
        "write_timeout",
        "30s",
        "disconnect a client that accepts no data for this long",
    ),
    (
        "database",
        "",
        "PostgreSQL URL to share one queue between nodes; empty: SQLite in the data dir",
    ),
    (
        "default_provider",
        "openai",
        "model provider of built-in agent tasks that name none",
    ),
    (
        "sandbox",
        "none",
        "the built-in agent's shell tool: none, or bwrap (bubblewrap must be installed)",
    ),
    (
        "worktree_cleanup",
        "remove_if_clean",
        "agent worktrees after the task: keep, remove, or remove_if_clean",
    ),
    (
        "agent_shell_timeout",
        "2m",
        "default timeout of one shell tool call of the built-in agent",
    ),
    (
        "otlp_endpoint",
        "",
        "OTLP/HTTP collector for model-call spans (default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    ),
    (
        "output_flush_interval",
        "50ms",
        "how long output may wait before it is stored and streamed; 0ms stores every read",
    ),
];

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: String,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub entries: BTreeMap<&'static str, Entry>,
    pub file: PathBuf,
    /// `[providers.<name>]` tables from the file (the built-ins are added on top).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[agents.<name>]`: CLI backends (added to or overriding claude, codex, generic).
    pub agents: BTreeMap<String, CliBackend>,
    /// `[prices."<model>"]`: dollars per million tokens.
    pub prices: BTreeMap<String, Price>,
}

pub fn default_config_file() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("deputy")
        .join("config.toml")
}

pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("deputy")
}

/// A `[name.<entry>]` table of the config file, each entry checked against `T`.
fn named_entries<T: serde::de::DeserializeOwned>(
    v: toml::Value,
    name: &str,
    path: &Path,
    what: &str,
) -> anyhow::Result<BTreeMap<String, T>> {
    v.try_into()
        .with_context(|| format!("`[{name}]` in {}: {what}", path.display()))
}

fn toml_to_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Config {
    /// Loads defaults, the file (`file` or the default path; a missing default file is
    /// fine, a missing named one is not), the environment, then `flags`.
    pub fn load(file: Option<&Path>, flags: &[(&'static str, String)]) -> anyhow::Result<Self> {
        let mut entries: BTreeMap<&'static str, Entry> = KEYS
            .iter()
            .map(|(k, d, _)| {
                (
                    *k,
                    Entry {
                        value: d.to_string(),
                        source: Source::Default,
                    },
                )
            })
            .collect();
        let mut providers = BTreeMap::new();
        let mut agents = BTreeMap::new();
        let mut prices = BTreeMap::new();
        let explicit = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("DEPUTY_CONFIG").map(PathBuf::from));
        let path = explicit.clone().unwrap_or_else(default_config_file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let table: toml::Table = text
                    .parse()
                    .with_context(|| format!("cannot parse the config file {}", path.display()))?;
                for (k, v) in table {
                    match k.as_str() {
                        "agents" => {
                            agents = named_entries(
                                v,
                                &k,
                                &path,
                                "each backend takes format (claude, codex or text), program, and optionally args and env",
                            )?;
                            continue;
                        }
                        "prices" => {
                            prices = named_entries(
                                v,
                                &k,
                                &path,
                                "each model takes input and output (dollars per million tokens) and optionally cached_input",
                            )?;
                            continue;
                        }
                        "providers" => {
                            providers = named_entries(
                                v,
                                &k,
                                &path,
                                "each provider takes kind (openai or anthropic), base_url, and optionally api_key_env, default_model, timeout_secs",
                            )?;
                            continue;
                        }
                        _ => {}
                    }
                    let Some((key, _, _)) = KEYS.iter().find(|(name, _, _)| *name == k) else {
                        bail!(
                            "unknown key `{k}` in {}; known keys: {}",
                            path.display(),
                            KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                        );
                    };
                    let value = toml_to_string(&v).with_context(|| {
                        format!("`{k}` in {} must be a string or a number", path.display())
                    })?;
                    entries.insert(
                        key,
                        Entry {
                            value,
                            source: Source::File(path.clone()),
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the config file {}", path.display()));
            }
        }
        for (k, _, _) in KEYS {
            let var = format!("DEPUTY_{}", k.to_ascii_uppercase());
            if let Ok(v) = std::env::var(&var) {
                entries.insert(
                    k,
                    Entry {
                        value: v,
                        source: Source::Env(var),
                    },
                );
            }
        }
        for (k, v) in flags {
            entries.insert(
                k,
                Entry {
                    value: v.clone(),
                    source: Source::Flag(k.replace('_', "-")),
                },
            );
        }
        let cfg = Self {
            entries,
            file: path,
            providers,
            agents,
            prices,
        };
        cfg.daemon_config()?; // Fail early on bad values, naming the key and its source.
        Ok(cfg)
    }

    fn raw(&self, key: &str) -> &Entry {
        self.entries.get(key).expect("every key has a default")
    }

    fn parse<T>(&self, key: &str, f: impl FnOnce(&str) -> Result<T, String>) -> anyhow::Result<T> {
        let e = self.raw(key);
        f(e.value.trim())
            .map_err(|m| anyhow::anyhow!("config `{key}` = `{}` (from {}): {m}", e.value, e.source))
    }

    pub fn data_dir(&self) -> PathBuf {
        let v = &self.raw("data_dir").value;
        if v.is_empty() {
            default_data_dir()
        } else {
            PathBuf::from(v)
        }
    }

    pub fn api_token(&self) -> Option<String> {
        let v = &self.raw("api_token").value;
        (!v.is_empty()).then(|| v.clone())
    }

    /// `otlp_endpoint`, else the standard OpenTelemetry variables.
    pub fn otlp_endpoint(&self) -> anyhow::Result<Option<String>> {
        let e = self.raw("otlp_endpoint");
        let (value, from) = if e.value.is_empty() {
            match [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]
            .iter()
            .find_map(|v| {
                std::env::var(v)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .map(|s| (s, *v))
            }) {
                Some((url, var)) => (url, format!("env {var}")),
                None => return Ok(None),
            }
        } else {
            (e.value.clone(), e.source.to_string())
        };
        if !(value.starts_with("http://") || value.starts_with("https://")) {
            bail!(
                "config `otlp_endpoint` = `{value}` (from {from}): use an http:// or https:// URL of an OTLP/HTTP collector, like http://127.0.0.1:4318"
            );
        }
        Ok(Some(value))
    }

    pub fn url(&self) -> Option<String> {
        let v = &self.raw("url").value;
        (!v.is_empty()).then(|| v.clone())
    }

    pub fn daemon_config(&self) -> anyhow::Result<DaemonConfig> {
        let mut d = DaemonConfig::new(self.data_dir());
        d.listen = self.parse("listen", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "not an address like 127.0.0.1:7477".to_string())
        })?;
        let parallel = self.parse("parallel", |s| {
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => Ok(Some(n)),
                _ => Err("must be a whole number from 1 to 10000".into()),
            }
        })?;
        if let Some(p) = parallel {
            d.parallel = p;
        }
        d.default_timeout = self.parse("default_timeout", |s| match s {
            "none" | "never" => Ok(None),
            _ => parse_duration(s).map(Some),
        })?;
        d.output_cap = self.parse("output_cap", deputy_core::size::parse_size)?;
        if !(deputy_core::limits::MIN_OUTPUT_CAP..=deputy_core::limits::MAX_OUTPUT_CAP)
            .contains(&d.output_cap)
        {
            bail!("config `output_cap` must be between 1KiB and 1GiB");
        }
        d.kill_grace = self.parse("kill_grace", parse_duration)?;
        d.shutdown_grace = self.parse("shutdown_grace", parse_duration)?;
        d.retention = self.parse("retention_days", |s| {
            let days: f64 = s
                .parse()
                .map_err(|_| "must be a number of days".to_string())?;
            if !days.is_finite() || days < 0.0 {
                return Err("must be 0 or more".into());
            }
            Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
        })?;
        d.max_body = self.parse("max_body", deputy_core::size::parse_size)? as usize;
        if d.max_body < 1024 {
            bail!("config `max_body` must be at least 1KiB");
        }
        d.resources = ResourceLimits {
            min_free_memory: self.parse("min_free_memory", |s| match s {
                "off" | "0" => Ok(None),
                _ => deputy_core::size::parse_size(s).map(Some),
            })?,
            max_cpu_percent: self.parse("max_cpu_percent", |s| match s {
                "off" | "0" => Ok(None),
                _ => match s.parse::<f32>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(Some(p)),
                    _ => Err("must be a percentage from 1 to 100, or off".into()),
                },
            })?,
        };
        d.lease = self.parse("lease", parse_duration)?;
        d.write_timeout = self.parse("write_timeout", parse_duration)?;
        d.output_flush_interval = self.parse("output_flush_interval", |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("not a duration like 50ms ({e})"))?;
            if d > Duration::from_secs(10) {
                return Err("must be at most 10s".into());
            }
            Ok(d)
        })?;
        d.api_token = self.api_token();
        let db = &self.raw("database").value;
        d.database = match db.trim() {
            "" => None,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(url.to_string())
            }
            other => bail!(
                "config `database` = `{other}`: use a postgres:// URL, or leave it empty for SQLite"
            ),
        };
        d.providers = deputy_llm::providers::resolve(&self.providers, &|k| std::env::var(k).ok())
            .map_err(|m| {
            anyhow::anyhow!("config `providers` in {}: {m}", self.file.display())
        })?;
        d.otlp_endpoint = self.otlp_endpoint()?;
        d.agents = AgentConfig::new(d.data_dir.join("worktrees"));
        d.agents.default_provider = self.raw("default_provider").value.trim().to_string();
        if !d.providers.contains_key(&d.agents.default_provider) {
            bail!(
                "config `default_provider` = `{}`: no such provider; use one of {}",
                d.agents.default_provider,
                d.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        d.agents.sandbox = self.parse("sandbox", |s| match s {
            "none" => Ok(Sandbox::None),
            "bwrap" => Ok(Sandbox::Bwrap),
            _ => Err("use none or bwrap".into()),
        })?;
        d.agents.worktree_cleanup = self.parse("worktree_cleanup", |s| match s {
            "keep" => Ok(WorktreeCleanup::Keep),
            "remove" => Ok(WorktreeCleanup::Remove),
            "remove_if_clean" => Ok(WorktreeCleanup::RemoveIfClean),
            _ => Err("use keep, remove or remove_if_clean".into()),
        })?;
        d.agents.shell_timeout = self.parse("agent_shell_timeout", parse_duration)?;
        for (name, b) in &self.agents {
            if name.is_empty()
                || name == deputy_core::agent::BUILTIN
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                bail!(
                    "`[agents.{name}]`: a backend name uses letters, digits, `-` and `_`, and is not `builtin`"
                );
            }
            if b.program.trim().is_empty() {
                bail!("`[agents.{name}]`: program is empty");
            }
        }
        d.agents.backends = self.agents.clone();
        for (model, p) in &self.prices {
            if ![Some(p.input), Some(p.output), p.cached_input]
                .iter()
                .flatten()
                .all(|v| v.is_finite() && *v >= 0.0)
            {
                bail!("`[prices.\"{model}\"]`: prices are dollars per million tokens, 0 or more");
            }
        }
        d.agents.prices = self.prices.clone();
        if let Some(t) = &d.api_token {
            deputy_server::auth::Token::new(t)
                .map_err(|m| anyhow::anyhow!("config `api_token`: {m}"))?;
        }
        Ok(d)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("not a duration like 30s or 5m ({e})"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A config file of known keys with values of any kind, and tables of the wrong
    /// shapes.
    fn config_toml() -> impl Strategy<Value = String> {
        let key = prop::sample::select(KEYS.iter().map(|(k, _, _)| *k).collect::<Vec<_>>());
        let value = prop_oneof![
            "[a-zA-Z0-9 .:/%-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
        ];
        let tables = prop_oneof![
            Just(String::new()),
            Just("[providers.x]\nkind = \"nope\"\n".to_string()),
            Just("[agents.y]\nformat = 3\n".to_string()),
            Just("[prices.\"m\"]\ninput = -1\n".to_string()),
            Just("providers = 5\n".to_string()),
        ];
        (prop::collection::vec((key, value), 0..8), tables).prop_map(|(kv, tables)| {
            let mut t: String = kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            t.push_str(&tables);
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any config file loads or is refused with an error, and a loaded one gives a
        /// daemon config or an error: never a panic.
        #[test]
        fn any_config_file_loads_or_is_refused(text in prop_oneof![config_toml(), any::<String>()]) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("config.toml");
            std::fs::write(&file, &text).unwrap();
            if let Ok(cfg) = Config::load(Some(&file), &[]) {
                let _ = cfg.daemon_config();
                let _ = cfg.otlp_endpoint();
            }
        }
    }
}

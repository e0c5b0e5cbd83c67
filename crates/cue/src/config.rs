//! `.cuedeck/config.toml`: local settings, never synced (it holds the relay token).

use std::path::Path;

use serde::Deserialize;

/// The settings this peer reads. Unknown keys are kept (CueDeck has its own).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub workspace: WorkspaceSection,
    pub sync: SyncSection,
}

/// `[workspace]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkspaceSection {
    /// The workspace's display name.
    pub name: Option<String>,
    /// Your name in the activity log.
    pub member: Option<String>,
}

/// `[sync]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SyncSection {
    /// How long deleted files stay restorable, and how long a peer may be offline
    /// before it does a full resync.
    pub max_offline_days: u32,
    pub pending_changes_dir: String,
    /// Extra globs, relative to the project root, of Markdown files to sync.
    pub include: Vec<String>,
    pub relay: RelaySection,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            max_offline_days: cue_core::workspace::DEFAULT_TOMBSTONE_DAYS,
            pending_changes_dir: ".cuedeck/sync/pending".into(),
            include: Vec::new(),
            relay: RelaySection::default(),
        }
    }
}

/// `[sync.relay]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RelaySection {
    pub url: Option<String>,
    pub auth_token: Option<String>,
}

/// A config file that exists but can't be used (exit code 101).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The file `cue init` writes when there is none.
pub fn template(name: &str, member: &str) -> String {
    format!(
        "# CueDeck workspace settings. Local to this machine: never synced.\n\
         [workspace]\n\
         name = {name:?}\n\
         # Your name in the activity log.\n\
         member = {member:?}\n\
         \n\
         [sync]\n\
         # Deleted files stay restorable this long; a peer offline longer resyncs in full.\n\
         max_offline_days = 7\n\
         pending_changes_dir = \".cuedeck/sync/pending\"\n\
         # Extra Markdown to sync, as globs relative to the project root, e.g. [\"docs/**/*.md\"].\n\
         include = []\n\
         \n\
         [sync.relay]\n\
         # url = \"ws://localhost:8080\"\n\
         # auth_token = \"optional-secret\"\n"
    )
}

/// Makes config.toml readable by this user only (0600): it may hold the
/// relay's auth token. Run whenever it is read or written, so a workspace made
/// by an older `cue`, or under a loose umask, is fixed when next opened.
pub fn secure(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |source| ConfigError::Read {
                        path: path.display().to_string(),
                        source,
                    },
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes config.toml, created 0600 (never readable by others, not even for
/// a moment).
pub fn write(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let err = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    secure(path)?;
    let mut f = crate::store::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    Ok(())
}

impl Config {
    /// Reads the config; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        secure(path)?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: shown,
                    source,
                })
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        for glob in &config.sync.include {
            if glob.starts_with('/') || glob.split('/').any(|c| c == "..") {
                return Err(ConfigError::Invalid {
                    path: shown,
                    message: format!("sync.include glob {glob:?} must be relative to the project root and stay inside it"),
                });
            }
            globset::Glob::new(glob).map_err(|e| ConfigError::Invalid {
                path: shown.clone(),
                message: format!("sync.include glob {glob:?}: {e}"),
            })?;
        }
        Ok(config)
    }
}

/// Edits one value in config.toml, keeping the user's comments and layout.
fn set_value(path: &Path, table: &[&str], key: &str, value: &str) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: shown,
                source,
            })
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?;
    let mut item = doc.as_item_mut();
    for name in table {
        let entry = &mut item[*name];
        if entry.is_none() {
            *entry = toml_edit::table();
        }
        item = entry;
    }
    item[key] = toml_edit::value(value);
    write(path, &doc.to_string())
}

/// Records the relay in `[sync.relay] url` (what `cue sync invite` and
/// `cue clone CODE` do, so the next `cue watch --sync` needs no flag).
pub fn set_relay_url(path: &Path, url: &str) -> Result<(), ConfigError> {
    set_value(path, &["sync", "relay"], "url", url)
}

/// Records the workspace's display name in `[workspace] name`.
pub fn set_workspace_name(path: &Path, name: &str) -> Result<(), ConfigError> {
    set_value(path, &["workspace"], "name", name)
}

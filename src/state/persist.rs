//! Saving admin changes so that they survive a restart: the config file rewritten in place
//! (comments kept, through symlinks), or the state file beside it when the file cannot be written.

use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use super::{Persisted, SavedState, Writer};
use crate::config::Config;

/// The state file for config `path`: `teal.toml` -> `teal.toml.state`, in the same directory.
pub fn state_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".state");
    path.with_file_name(name)
}

/// The admin's choice from the state file, if the file's `active` is still what it recorded.
pub(super) fn restore(path: &Path, config: &Config) -> Option<String> {
    let file = state_file(path);
    let text = std::fs::read_to_string(&file).ok()?;
    let saved: SavedState = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            warn!(path = %file.display(), error = %e, "state file unreadable; using the config's active pool");
            return None;
        }
    };
    if saved.config_active != config.active {
        info!(path = %file.display(), "config's active pool was edited after the last admin switch; the file wins");
        return None;
    }
    if !config.pools.contains_key(&saved.active) {
        warn!(path = %file.display(), pool = %saved.active, "state file names a pool that no longer exists; ignored");
        return None;
    }
    info!(path = %file.display(), active = %saved.active, "restored the active pool of the last admin switch");
    Some(saved.active)
}

pub(super) fn remove_state_file(path: &Path) {
    let file = state_file(path);
    match std::fs::remove_file(&file) {
        Ok(()) => {
            info!(path = %file.display(), "state file removed; the config file's active pool rules")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %file.display(), error = %e, "could not remove the state file"),
    }
}

/// Saves `active` after an admin switch: in the config file when it can be written (and with it
/// the end of a canary, `[canary]` removed), else in the state file. Updates the writer's memory
/// so the resulting file event is not taken for an edit.
pub(super) fn persist(
    path: &Path,
    active: &str,
    end_canary: bool,
    writer: &mut Writer,
) -> Persisted {
    let edit = |doc: &mut toml_edit::DocumentMut| {
        set_value(doc.as_table_mut(), "active", active);
        if end_canary {
            doc.remove("canary");
        }
    };
    match rewrite(path, edit) {
        Ok((before, after)) => {
            // If the file held edits not yet loaded, leave `file_text` alone so the watcher's
            // reload still applies them; otherwise the rewrite is already "loaded".
            if writer.file_text.as_deref() == Some(before.as_str()) {
                writer.file_text = Some(after);
            }
            writer.file_active = active.to_string();
            remove_state_file(path);
            info!(path = %path.display(), active, "switch persisted in the config file");
            Persisted::Config
        }
        Err(config_err) => {
            let file = state_file(path);
            let saved = SavedState {
                active: active.to_string(),
                config_active: writer.file_active.clone(),
            };
            let json = serde_json::to_string(&saved).expect("plain strings serialise");
            match write_atomic(&file, json.as_bytes()) {
                Ok(()) => {
                    info!(path = %file.display(), active, reason = %config_err, "config file not writable; switch persisted in the state file");
                    Persisted::StateFile
                }
                Err(e) => {
                    error!(config = %path.display(), state = %file.display(), config_error = %config_err, state_error = %e,
                        "switch applied but NOT persisted: it holds until restart");
                    Persisted::Failed
                }
            }
        }
    }
}

/// Rewrites `active = "..."` in the file at `path`, keeping comments and layout. Returns the text
/// before and after.
#[cfg(test)]
pub(super) fn rewrite_active(path: &Path, active: &str) -> std::io::Result<(String, String)> {
    rewrite(path, |doc| set_value(doc.as_table_mut(), "active", active))
}

/// Sets `key` in `table` to `value`, keeping the comments and spacing around the old value.
pub(super) fn set_value(
    table: &mut toml_edit::Table,
    key: &str,
    value: impl Into<toml_edit::Value>,
) {
    let mut value = value.into();
    if let Some(old) = table.get(key).and_then(|i| i.as_value()) {
        *value.decor_mut() = old.decor().clone();
    }
    table[key] = toml_edit::Item::Value(value);
}

/// Applies `edit` to the TOML document in the file at `path` and writes it back, keeping comments
/// and layout of everything `edit` leaves alone. Returns the text before and after. A symlink
/// (chain) is resolved at each write and the file it names is replaced, so the link stays a link
/// (nginx users keep configs behind `sites-enabled` links).
pub(super) fn rewrite(
    path: &Path,
    edit: impl FnOnce(&mut toml_edit::DocumentMut),
) -> std::io::Result<(String, String)> {
    let edit = |doc: &mut toml_edit::DocumentMut| {
        edit(doc);
        Ok(())
    };
    rewrite_checked(path, edit, |_| Ok(()))
}

/// [`rewrite`], writing only if `check` accepts the new text.
fn rewrite_checked(
    path: &Path,
    edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), String>,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> std::io::Result<(String, String)> {
    use std::io::{Error, ErrorKind};
    let path = &std::fs::canonicalize(path)?;
    let before = std::fs::read_to_string(path)?;
    // A read-only file is the operator's way of saying "do not write this", even to root.
    if std::fs::metadata(path)?.permissions().readonly() {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "the file is read-only",
        ));
    }
    std::fs::OpenOptions::new().write(true).open(path)?;
    let mut doc: toml_edit::DocumentMut = before
        .parse()
        .map_err(|e| Error::new(ErrorKind::InvalidData, format!("not TOML: {e}")))?;
    edit(&mut doc).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    let after = doc.to_string();
    check(&after).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    write_atomic(path, after.as_bytes())?;
    Ok((before, after))
}

/// Writes an admin change of the config's tables (`[canary]` and the like) into the config file
/// with `edit`. Unlike a switch there is no state-file fallback: when the file cannot be written
/// the change holds until restart, and the caller is told so (`Persisted::Failed`, logged). So it
/// does when the edited file would not be a config teal accepts (say, a canary of the file's own
/// `active` pool, which is not the live one after a switch that went to the state file): teal
/// never writes a file it would refuse at the next start.
pub(super) fn persist_edit(
    path: &Path,
    what: &str,
    writer: &mut Writer,
    edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), String>,
) -> Persisted {
    let valid = |text: &str| {
        Config::parse(text, Some(path))
            .map(drop)
            .map_err(|e| format!("the edited file would not be a valid config: {e}"))
    };
    match rewrite_checked(path, edit, valid) {
        Ok((before, after)) => {
            if writer.file_text.as_deref() == Some(before.as_str()) {
                writer.file_text = Some(after);
            }
            info!(path = %path.display(), what, "admin change persisted in the config file");
            Persisted::Config
        }
        Err(e) => {
            error!(path = %path.display(), what, error = %e,
                "admin change applied but NOT persisted (the config file cannot be written): it holds until restart");
            Persisted::Failed
        }
    }
}

/// Sets the `[name]` table of the document to `value` (a serialisable struct), or removes it.
/// Keys the new value keeps are updated in place, so their comments stay. A value TOML cannot
/// hold is an error (nothing is written), never a panic.
pub(super) fn set_table<T: serde::Serialize>(
    doc: &mut toml_edit::DocumentMut,
    name: &str,
    value: Option<&T>,
) -> Result<(), String> {
    let Some(value) = value else {
        doc.remove(name);
        return Ok(());
    };
    let text = toml::to_string(value).map_err(|e| format!("[{name}] cannot be written: {e}"))?;
    let fresh: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("[{name}] cannot be written: {e}"))?;
    let table = doc
        .entry(name)
        .or_insert_with(toml_edit::table)
        .as_table_mut();
    let Some(table) = table else {
        doc[name] = toml_edit::Item::Table(fresh.as_table().clone());
        return Ok(());
    };
    let stale: Vec<String> = table
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !fresh.contains_key(k))
        .collect();
    for key in stale {
        table.remove(&key);
    }
    for (key, item) in fresh.iter() {
        if let Some(v) = item.as_value() {
            set_value(table, key, v.clone());
        }
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so readers see
/// the old or the new content, never half of it. Keeps the old file's permissions.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

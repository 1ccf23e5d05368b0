//! Builders for tests, benches and fuzz targets: a [`Snapshot`] from TOML text, without files,
//! tasks or I/O. Not part of the API; it may change with any release.
#![doc(hidden)]

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// The snapshot of the config in `toml`, its own `active` pool taking the default route, with
/// generation 1 and fresh metrics. Panics with the config error if `toml` is not a valid config.
pub fn snapshot(toml: &str) -> Snapshot {
    let config = Config::parse(toml, None)
        .unwrap_or_else(|e| panic!("not a valid test config: {e}\n---\n{toml}"));
    let active = config.active.clone();
    Snapshot::build(Arc::new(config), &active, None, 1, &Metrics::new())
}

/// Config text: `active = "<active>"`, one `[pools.<name>]` table per pool with its `servers`,
/// then `extra` as it is (so `extra` should open its own tables, `[preview]`, `[limits]`, ...).
pub fn config_text(pools: &[(&str, &[&str])], active: &str, extra: &str) -> String {
    let mut text = format!("active = \"{active}\"\n");
    for (name, servers) in pools {
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        text.push_str(&format!(
            "[pools.{name}]\nservers = [{}]\n",
            list.join(", ")
        ));
    }
    text.push_str(extra);
    text
}

/// The snapshot of [`config_text`]`(pools, active, extra)`; panics as [`snapshot`] does.
pub fn snapshot_of(pools: &[(&str, &[&str])], active: &str, extra: &str) -> Snapshot {
    snapshot(&config_text(pools, active, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_text_the_call_sites_wrote_by_hand() {
        assert_eq!(
            config_text(&[("blue", &["b:1"]), ("green", &["g:1", "g:2"])], "blue", "[preview]\n"),
            "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\", \"g:2\"]\n[preview]\n"
        );
        let snap = snapshot_of(&[("blue", &["b:1"]), ("green", &["g:1"])], "green", "");
        assert_eq!(
            (&*snap.active.name, snap.generation, snap.pools.len()),
            ("green", 1, 2)
        );
    }

    #[test]
    #[should_panic(expected = "not a valid test config")]
    fn bad_toml_panics_with_the_error() {
        snapshot("active = ");
    }
}

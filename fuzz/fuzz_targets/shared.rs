//! What the fuzz targets share: one blue/green snapshot with a preview allowlist and a body limit.

use std::sync::{Arc, OnceLock};

use teal::state::Snapshot;

/// The snapshot, built once per process.
pub fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let text = "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n[preview]\nallow = [\"10.0.0.0/8\"]\n[limits]\nmax_body_bytes = 4096\n";
        let config = Arc::new(teal::config::Config::parse(text, None).unwrap());
        Snapshot::build(config, "blue", None, 1, &teal::metrics::Metrics::new())
    })
}

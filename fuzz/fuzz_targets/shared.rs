//! What the fuzz targets share: one blue/green snapshot with a preview allowlist, the preview
//! cookie and header, a canary split and a body limit.

use std::sync::OnceLock;

use teal::state::Snapshot;

/// The snapshot, built once per process.
pub fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        teal::testing::snapshot_of(
            &[("blue", &["b:1"]), ("green", &["g:1"])],
            "blue",
            "[preview]\nallow = [\"10.0.0.0/8\"]\ncookie = \"teal_preview\"\nheader = \"X-Teal-Pool\"\n\
             [canary]\npool = \"green\"\npercent = 30\n[limits]\nmax_body_bytes = 4096\n",
        )
    })
}

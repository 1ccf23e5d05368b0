//! The cluster parts of `teal status` and `teal switch --wait`.

use serde_json::Value;

/// Prints the `cluster` object of `/status`: the store, and every instance with the revision it
/// serves. Nothing without `[cluster]`.
pub(super) fn print_status(cluster: &Value) {
    if !cluster.is_object() {
        return;
    }
    let store = if cluster["connected"] == true {
        "connected".to_string()
    } else {
        format!(
            "DISCONNECTED ({})",
            cluster["error"].as_str().unwrap_or("not yet connected")
        )
    };
    println!(
        "\ncluster {}  store {}  {store}  this instance {} serves revision {}",
        cluster["prefix"].as_str().unwrap_or("?"),
        cluster["endpoint"].as_str().unwrap_or("?"),
        cluster["name"].as_str().unwrap_or("?"),
        cluster["revision"]
    );
    print_instances(&cluster["instances"]);
}

/// One line per instance: name, revision, active pool, admin address.
pub(super) fn print_instances(instances: &Value) {
    for i in instances.as_array().into_iter().flatten() {
        println!(
            "  {:<32} revision {:<8} active {:<12} admin {}",
            i["name"].as_str().unwrap_or("?"),
            i["revision"],
            i["active"].as_str().unwrap_or("?"),
            i["admin"].as_str().unwrap_or("?"),
        );
    }
}

/// Prints the `applied` object of `POST /switch?wait=applied`; whether every instance serves
/// the switch.
pub(super) fn print_applied(applied: &Value) -> bool {
    let all = applied["all"] == true;
    if all {
        println!(
            "applied by every instance (revision {})",
            applied["revision"]
        );
    } else {
        println!(
            "NOT applied by every instance within 10s (revision {}):",
            applied["revision"]
        );
    }
    print_instances(&applied["instances"]);
    all
}

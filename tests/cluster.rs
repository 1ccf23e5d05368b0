//! Several teal instances on one etcd flip as one (issue 17).

mod support;

use support::etcd::{etcd_installed, Etcd};

/// The harness itself: a three-node cluster elects a new leader when its leader is killed, and
/// the killed member comes back on its ports and data.
#[tokio::test]
async fn etcd_harness_three_nodes_reelect() {
    if !etcd_installed() {
        return;
    }
    let mut etcd = Etcd::three().await;
    assert_eq!(etcd.endpoints().len(), 3);
    let rev = etcd.put("/harness/k", "v1 ü").await;
    assert!(rev > 1);
    assert_eq!(etcd.get("/harness/k").await.as_deref(), Some("v1 ü"));
    let old = etcd.leader().await;
    etcd.kill(old);
    let new = etcd.leader().await;
    assert_ne!(new, old, "the killed member is still named leader");
    etcd.put("/harness/k", "v2").await;
    etcd.restart(old).await;
    etcd.wait_ready().await;
    let kv = etcd.kv("/harness/k").await.unwrap();
    assert_eq!((kv.value.as_str(), kv.version), ("v2", 2));
    assert_eq!(etcd.keys("/harness/").await, vec!["/harness/k".to_string()]);
    // The restarted member rejoined: all three agree on one leader again.
    let _ = etcd.leader().await;
}

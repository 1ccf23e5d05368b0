//! Unit tests of the live state's writer path: switches, persistence, reloads.

use super::*;

const TEXT: &str = "# live colour\nactive = \"blue\"   # flip me\n\n[pools.blue]\nservers = [\"a:1\"]\n\n[pools.green]\nservers = [\"b:1\"]\n";

/// The rewrite changes only the value, keeping comments on the line and elsewhere.
#[test]
fn rewrite_keeps_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, TEXT).unwrap();
    let (_, after) = persist::rewrite_active(&path, "green").unwrap();
    assert_eq!(after, TEXT.replace("\"blue\"   #", "\"green\"   #"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
}

/// Switch then an unrelated reload keeps the admin's choice; an edit of `active` wins.
#[tokio::test]
async fn admin_choice_survives_unrelated_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, TEXT).unwrap();
    let state = State::new(Config::load(&path).unwrap(), Arc::new(Metrics::new()));
    state.switch(None, "test", false).await.unwrap();
    assert_eq!(&*state.load().active.name, "green");
    // The persisted rewrite itself is no edit.
    assert_eq!(
        state.reload("test", false).await.unwrap(),
        Reloaded::Unchanged
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n# unrelated\n")).unwrap();
    state.reload("test", false).await.unwrap();
    assert_eq!(&*state.load().active.name, "green");
    std::fs::write(&path, text.replace("\"green\"", "\"blue\"")).unwrap();
    state.reload("test", false).await.unwrap();
    assert_eq!(&*state.load().active.name, "blue");
}

/// A read-only config gets a state file; a restart restores from it until the file's own
/// `active` changes.
#[tokio::test]
async fn read_only_config_uses_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, TEXT).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = State::new(Config::load(&path).unwrap(), metrics.clone());
    let switched = state.switch(Some("green"), "test", false).await.unwrap();
    assert_eq!(switched.persisted, Persisted::StateFile);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), TEXT);
    assert!(state_file(&path).exists());
    let again = State::new(Config::load(&path).unwrap(), metrics.clone());
    assert_eq!(&*again.load().active.name, "green");
    // Once the file's own `active` differs from what the state file recorded, the file wins.
    let stale = r#"{"active":"green","config_active":"green"}"#;
    std::fs::write(state_file(&path), stale).unwrap();
    let restarted = State::new(Config::load(&path).unwrap(), metrics);
    assert_eq!(&*restarted.load().active.name, "blue");
}

/// A switch to the pool already active changes nothing: no new snapshot, no write, the
/// generation and the ok counter as they were.
#[tokio::test]
async fn switch_to_active_pool_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, TEXT).unwrap();
    let state = State::new(Config::load(&path).unwrap(), Arc::new(Metrics::new()));
    let before = state.load();
    let changed = state.subscribe();
    let same = state.switch(Some("blue"), "test", true).await.unwrap();
    assert!(!same.changed);
    assert_eq!(
        (same.active.as_str(), same.previous.as_str()),
        ("blue", "blue")
    );
    assert_eq!(same.generation, 1);
    assert_eq!(same.persisted, Persisted::Unchanged);
    assert!(Arc::ptr_eq(&before, &state.load()), "a new snapshot");
    assert!(!changed.has_changed().unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), TEXT);
    let metrics = state.metrics().encode(&state.load().live());
    assert!(
        !metrics.contains("teal_switches_total{result=\"ok\"}"),
        "{metrics}"
    );
    let real = state.switch(Some("green"), "test", false).await.unwrap();
    assert!(real.changed);
    assert_eq!(real.generation, 2);
}

/// Through a symlink to a read-only file, the state file still takes the choice, beside the
/// link; the link and its target are left as they were.
#[tokio::test]
async fn symlink_to_read_only_config_uses_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.toml");
    std::fs::write(&target, TEXT).unwrap();
    let mut perms = std::fs::metadata(&target).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&target, perms).unwrap();
    let link = dir.path().join("teal.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let state = State::new(Config::load(&link).unwrap(), Arc::new(Metrics::new()));
    let switched = state.switch(Some("green"), "test", false).await.unwrap();
    assert_eq!(switched.persisted, Persisted::StateFile);
    assert!(state_file(&link).exists());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), TEXT);
}

/// Switch errors: unknown pool, and no target with three pools.
#[tokio::test]
async fn switch_refusals() {
    let text = format!("{TEXT}\n[pools.red]\nservers = [\"c:1\"]\n");
    let state = State::new(
        Config::parse(&text, None).unwrap(),
        Arc::new(Metrics::new()),
    );
    assert!(matches!(
        state.switch(Some("purple"), "t", false).await,
        Err(SwitchError::UnknownPool { .. })
    ));
    assert!(matches!(
        state.switch(None, "t", false).await,
        Err(SwitchError::NoTarget(3))
    ));
    let ok = state.switch(Some("red"), "t", false).await.unwrap();
    assert_eq!(ok.persisted, Persisted::NoFile);
    assert_eq!(state.load().generation, 2);
}

//! Review of progressive delivery: admin inputs at the edges of their ranges are refused with a
//! 400 (never a panic), and what the admin API accepts and writes into the config file, teal
//! itself reads back (`teal check`, reload, restart).

mod support;

use http::StatusCode;
use serde_json::Value;
use support::*;

/// The config file as `teal check` and a restart read it.
fn check(teal: &Teal) -> Result<teal::config::Config, String> {
    teal::config::Config::load(&teal.path).map_err(|e| e.to_string())
}

/// A `max_body` past what a TOML integer holds (2^63 - 1) is refused with the reason, by number
/// or by size with a unit; before, the table was published and then writing it back panicked
/// the admin connection (no answer at all).
#[tokio::test]
async fn mirror_max_body_past_a_toml_integer_is_refused() {
    let (_blue, _green, teal) = two_pools("").await;
    for max_body in ["18446744073709551615", "\"9000000000GiB\""] {
        let body = format!("{{\"pool\":\"green\",\"max_body\":{max_body}}}");
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            teal.admin("POST", "/mirror", &body, None),
        )
        .await
        .expect("an answer within 5 s");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{max_body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("max_body"),
            "{}",
            r.body
        );
        check(&teal).unwrap();
        let status = teal.admin("GET", "/status", "", None).await.json();
        assert_eq!(status["mirror"], Value::Null, "{status}");
    }
    // The largest size a file can hold is taken and read back.
    let body = "{\"pool\":\"green\",\"max_body\":9223372036854775807}";
    let r = teal.admin("POST", "/mirror", body, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        check(&teal).unwrap().mirror.unwrap().max_body,
        i64::MAX as u64
    );
}

/// `min_requests` past a TOML integer is refused; before, it was written as a negative number
/// that `teal check` and every later start refused.
#[tokio::test]
async fn rollout_min_requests_past_a_toml_integer_is_refused() {
    let (_blue, _green, teal) = two_pools("").await;
    let body = "{\"pool\":\"green\",\"steps\":[5,100],\"interval\":\"60s\",\"max_error_rate\":\"1%\",\"min_requests\":9223372036854775808,\"force\":true}";
    let r = teal.admin("POST", "/rollout", body, None).await;
    let file = check(&teal);
    let _ = teal.admin("POST", "/rollout/abort", "", None).await;
    file.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("min_requests"), "{}", r.body);
}

/// An interval so long that the step's deadline cannot be computed is refused; before, it was
/// accepted, the controller's task panicked at once, and the rollout stayed `running` forever
/// with the canary on: an abort could not end it and no other rollout could start.
#[tokio::test]
async fn rollout_interval_too_long_is_refused() {
    let (_blue, _green, teal) = two_pools("").await;
    let body = "{\"pool\":\"green\",\"steps\":[5,100],\"interval\":\"10000000000000000000s\",\"max_error_rate\":\"1%\",\"force\":true}";
    let r = teal.admin("POST", "/rollout", body, None).await;
    if r.status == StatusCode::OK {
        let aborted = teal.admin("POST", "/rollout/abort", "", None).await.json();
        let status = teal.admin("GET", "/status", "", None).await.json();
        panic!(
            "accepted: {}\nafter abort: {aborted}\ncanary: {}",
            r.body, status["canary"]
        );
    }
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("interval"), "{}", r.body);
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["canary"], Value::Null, "{status}");
    assert!(!teal.file().contains("[rollout]"), "{}", teal.file());
}

/// An admin edit never writes a file that teal then refuses. Here a switch that had to go to the
/// state file (the config was read-only) leaves the file's `active` behind the live one; once the
/// file is writable again, a canary of the file's `active` pool (allowed: it is not the live one)
/// was written next to `active = "blue"`, and teal refused the file at the next start.
#[tokio::test]
async fn canary_edit_never_writes_a_file_teal_refuses() {
    let (_blue, _green, teal) = two_pools("").await;
    let set_readonly = |ro: bool| {
        let mut perms = std::fs::metadata(&teal.path).unwrap().permissions();
        perms.set_readonly(ro);
        std::fs::set_permissions(&teal.path, perms).unwrap();
    };
    set_readonly(true);
    let switched = teal.switch("green").await;
    assert_eq!(switched["persisted"], "state_file", "{switched}");
    set_readonly(false);
    let r = teal
        .admin(
            "POST",
            "/canary",
            "{\"pool\":\"blue\",\"percent\":10}",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    check(&teal).unwrap_or_else(|e| panic!("{e}\n{}\n{}", r.body, teal.file()));
    // The change holds in memory, and the answer says it was not saved.
    assert_eq!(r.json()["persisted"], "failed", "{}", r.body);
    assert_eq!(r.json()["canary"]["pool"], "blue", "{}", r.body);
}

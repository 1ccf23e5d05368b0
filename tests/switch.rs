//! Switching the active pool: admin API (every status code, token), file edits (in place and by
//! rename), refused edits, persistence across a restart, kept-alive connections and in-flight
//! requests across a switch.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// `POST /switch` by body, by query and by flip; 400 for unknown pools and bad bodies;
/// 404/405 for wrong endpoints and methods. Every answer is JSON.
#[tokio::test]
async fn admin_switch_status_codes() {
    let (_b, _g, teal) = two_pools("").await;
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(
        (j["active"].as_str(), j["previous"].as_str()),
        (Some("green"), Some("blue"))
    );
    assert_eq!(teal.text("/").await, "green");

    assert_eq!(
        (j["changed"].as_bool(), j["generation"].as_u64()),
        (Some(true), Some(2))
    );

    let r = teal.admin("POST", "/switch?to=blue", "", None).await;
    assert_eq!(r.json()["active"], "blue");
    assert_eq!(teal.text("/").await, "blue");

    // To the pool already active: the same shape, changed false, generation unchanged.
    let r = teal.admin("POST", "/switch?to=blue", "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(
        (
            j["active"].as_str(),
            j["previous"].as_str(),
            j["changed"].as_bool(),
            j["generation"].as_u64()
        ),
        (Some("blue"), Some("blue"), Some(false), Some(3))
    );

    let r = teal.admin("POST", "/switch", "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json()["active"].as_str(), r.json()["previous"].as_str()),
        (Some("green"), Some("blue"))
    );

    for (body, query, want) in [
        (r#"{"to":"purple"}"#, "", "no pool named \"purple\""),
        ("{not json", "", "body must be JSON"),
        (r#"{"pool":"blue"}"#, "", "unknown field"),
        (r#"{"to":"blue"}"#, "?to=green", "query says"),
        ("", "?to=purple", "no pool named"),
    ] {
        let r = teal
            .admin("POST", &format!("/switch{query}"), body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} {query}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    assert_eq!(
        teal.text("/").await,
        "green",
        "refused switches changed nothing"
    );

    let r = teal.admin("GET", "/switch", "", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    assert!(r.json()["error"].is_string());
    let r = teal.admin("GET", "/nope", "", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
    let big = format!(r#"{{"to":"{}"}}"#, "x".repeat(70_000));
    let r = teal.admin("POST", "/switch", &big, None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(
        metrics.contains("teal_switches_total{result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("teal_switches_total{result=\"refused\"} 2"),
        "{metrics}"
    );
}

/// With a token, /switch and /status need `Authorization: Bearer <token>` (401 otherwise);
/// /healthz and /metrics never do.
#[tokio::test]
async fn admin_token() {
    let (_b, _g, teal) = two_pools("token = \"s3cret\"\n").await;
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some("s3cre"), StatusCode::UNAUTHORIZED),
        (Some("s3cret"), StatusCode::OK),
    ] {
        let r = teal.admin("GET", "/status", "", token).await;
        assert_eq!(r.status, want, "{token:?}");
        assert!(r.json().is_object());
    }
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(teal.text("/").await, "blue");
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some("s3cret"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(teal.text("/").await, "green");
    assert_eq!(
        teal.admin("GET", "/healthz", "", None).await.status,
        StatusCode::OK
    );
    let m = teal.admin("GET", "/metrics", "", None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(!m.body.contains("s3cret"));
}

/// `GET /status` shows the active pool, the generation and every server with in-flight counts,
/// which include a request still running.
#[tokio::test]
async fn status_shows_in_flight() {
    let (_b, green, teal) = two_pools("").await;
    let proxy = teal.proxy;
    let slow =
        tokio::spawn(async move { Conn::open(proxy).await.get("/green/x?delay_ms=600").await });
    let green_addr = green.addr.to_string();
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["green"]["in_flight"] == 1,
        Duration::from_secs(3),
        "the slow request never showed as in flight"
    );
    let j = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(j["active"], "blue");
    assert_eq!(j["generation"], 1);
    assert_eq!(
        j["pools"]["green"]["servers"][0]["address"],
        green_addr.as_str()
    );
    assert_eq!(j["pools"]["green"]["servers"][0]["in_flight"], 1);
    assert_eq!(j["pools"]["blue"]["in_flight"], 0);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    let j = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(
        j["pools"]["green"]["in_flight"], 0,
        "the count ends with the response"
    );
}

/// Editing `active` in the file applies within a second: written in place, then by an editor's
/// write-temp-then-rename.
#[tokio::test]
async fn file_edit_switches_in_place_and_by_rename() {
    let (_b, _g, teal) = two_pools("").await;
    assert_eq!(teal.text("/").await, "blue");
    teal.edit_active("blue", "green");
    assert_eventually!(
        teal.text("/").await == "green",
        Duration::from_secs(1),
        "in-place edit not applied within 1 s"
    );

    let tmp = teal.path.with_file_name("teal.toml.swp");
    std::fs::write(
        &tmp,
        teal.file()
            .replace("active = \"green\"", "active = \"blue\""),
    )
    .unwrap();
    std::fs::rename(&tmp, &teal.path).unwrap();
    assert_eventually!(
        teal.text("/").await == "blue",
        Duration::from_secs(1),
        "renamed edit not applied within 1 s"
    );
}

/// A config that is a symlink (nginx's `sites-enabled` habit): a switch writes through the link
/// to its target (the link stays a link, comments kept), and edits of the target in its own
/// directory, in place or by rename, are applied.
#[tokio::test]
async fn symlinked_config_is_written_through_and_watched() {
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("real.toml");
    let (_b, _g, teal, text) = start_linked(&target).await;

    let j = teal.switch("green").await;
    assert_eq!(j["persisted"], "config");
    let meta = std::fs::symlink_metadata(&teal.path).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "the link was replaced by a file"
    );
    assert_eq!(std::fs::read_link(&teal.path).unwrap(), target);
    let written = std::fs::read_to_string(&target).unwrap();
    assert_eq!(
        written,
        text.replace(
            "active = \"blue\"  # live colour",
            "active = \"green\"  # live colour"
        )
    );
    assert_eq!(teal.text("/").await, "green");

    // The operator edits the target back to blue by rename in its own directory.
    let tmp = target_dir.path().join(".real.toml.swp");
    std::fs::write(&tmp, written.replace("\"green\"  #", "\"blue\"  #")).unwrap();
    std::fs::rename(&tmp, &target).unwrap();
    assert_eventually!(
        teal.text("/").await == "blue",
        Duration::from_secs(2),
        "an edit of the link's target by rename was not applied"
    );
    // And in place.
    let now = std::fs::read_to_string(&target).unwrap();
    std::fs::write(&target, now.replace("\"blue\"  #", "\"green\"  #")).unwrap();
    assert_eventually!(
        teal.text("/").await == "green",
        Duration::from_secs(2),
        "an in-place edit of the link's target was not applied"
    );
    assert!(std::fs::symlink_metadata(&teal.path)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The config's directory removed and made again (a deploy that replaces the whole directory),
/// or moved aside and made again: edits of the new directory's file still apply, as edits did
/// before.
#[tokio::test]
async fn a_replaced_config_directory_is_watched_again() {
    let (_b, _g, teal) = two_pools("").await;
    let dir = teal.path.parent().unwrap().to_path_buf();
    let text = teal.file();

    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&teal.path, &text).unwrap();
    // Let the watch settle on the new directory, then edit it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    teal.edit_active("blue", "green");
    assert_eventually!(
        teal.text("/").await == "green",
        Duration::from_secs(3),
        "an edit in a removed and remade config directory was not applied"
    );

    let aside = dir.with_extension("old");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&teal.path, teal_text_with(&text, "green")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&teal.path, teal_text_with(&text, "blue")).unwrap();
    assert_eventually!(
        teal.text("/").await == "blue",
        Duration::from_secs(3),
        "an edit in a config directory made where the old one was moved from was not applied"
    );
    // The old directory, moved aside, no longer counts.
    std::fs::write(aside.join("teal.toml"), teal_text_with(&text, "green")).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        teal.text("/").await,
        "blue",
        "an edit of the moved-aside copy was applied"
    );
    std::fs::remove_dir_all(&aside).unwrap();
}

/// A symlinked config whose target's directory is removed, stays gone while teal reloads (the
/// removal is an event too), and is made again: the new target and later edits of it apply.
#[tokio::test]
async fn a_symlink_targets_replaced_directory_is_watched_again() {
    let targets = tempfile::tempdir().unwrap();
    let target_dir = targets.path().join("a");
    std::fs::create_dir(&target_dir).unwrap();
    let target = target_dir.join("real.toml");
    let (_b, _g, teal, text) = start_linked(&target).await;

    std::fs::remove_dir_all(&target_dir).unwrap();
    // Long enough for the removal's reload (which fails: the link dangles) to run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::create_dir(&target_dir).unwrap();
    std::fs::write(&target, teal_text_with(&text, "green")).unwrap();
    assert_eventually!(
        teal.text("/").await == "green",
        Duration::from_secs(3),
        "the link's target in a remade directory was not applied"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tmp = target_dir.join(".real.toml.swp");
    std::fs::write(&tmp, teal_text_with(&text, "blue")).unwrap();
    std::fs::rename(&tmp, &target).unwrap();
    assert_eventually!(
        teal.text("/").await == "blue",
        Duration::from_secs(3),
        "a later edit of the link's target in the remade directory was not applied"
    );
}

/// teal on a config that is a symlink (in a directory of its own) to `target`, where the blue
/// and green pools' config is written with `active = "blue"`; and that text.
async fn start_linked(target: &std::path::Path) -> (Upstream, Upstream, Teal, String) {
    let blue = upstream("blue", "server1-blue").await;
    let green = upstream("green", "server1-green").await;
    let text = config("blue", &blue_green(&blue, &green), "");
    std::fs::write(target, &text).unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(target, link_dir.path().join("teal.toml")).unwrap();
    let teal = Teal::start_in(link_dir).await;
    assert_eq!(teal.text("/").await, "blue");
    (blue, green, teal, text)
}

/// `text` with `active` set to `colour`.
fn teal_text_with(text: &str, colour: &str) -> String {
    text.replace("active = \"blue\"", &format!("active = \"{colour}\""))
}

/// An invalid edit is refused and the running config stays; the next valid edit applies.
#[tokio::test]
async fn invalid_edit_is_refused() {
    let (_b, _g, teal) = two_pools("").await;
    let good = teal.file();
    // By rename, as editors do, and naming a pool that does not exist.
    let tmp = teal.path.with_file_name(".teal.toml.tmp");
    std::fs::write(
        &tmp,
        good.replace("active = \"blue\"", "active = \"purple\""),
    )
    .unwrap();
    std::fs::rename(&tmp, &teal.path).unwrap();
    let metrics = || async { teal.admin("GET", "/metrics", "", None).await.body };
    assert_eventually!(
        metrics()
            .await
            .contains("teal_reloads_total{result=\"error\"} 1"),
        Duration::from_secs(2),
        "the invalid edit was not seen"
    );
    assert_eq!(teal.text("/").await, "blue");
    // Broken TOML, in place.
    std::fs::write(&teal.path, "active = \"green\"\n[pools.green\n").unwrap();
    assert_eventually!(
        metrics()
            .await
            .contains("teal_reloads_total{result=\"error\"} 2"),
        Duration::from_secs(2),
        "the broken edit was not seen"
    );
    assert_eq!(teal.text("/").await, "blue");
    assert_eq!(teal.text("/green/").await, "green");
    std::fs::write(
        &teal.path,
        good.replace("active = \"blue\"", "active = \"green\""),
    )
    .unwrap();
    assert_eventually!(
        teal.text("/").await == "green",
        Duration::from_secs(1),
        "valid edit after a refused one not applied"
    );
}

/// An admin switch rewrites `active` in the file (comments kept) and survives a restart; an
/// unrelated edit does not undo it; an operator's later edit of `active` wins.
#[tokio::test]
async fn switch_is_persisted_and_survives_restart() {
    let (_b, _g, teal) = two_pools("").await;
    let before = teal.file();
    let j = teal.switch("green").await;
    assert_eq!(j["persisted"], "config");
    let after = teal.file();
    assert_eq!(
        after,
        before.replace(
            "active = \"blue\"  # live colour",
            "active = \"green\"  # live colour"
        )
    );

    // An unrelated edit (a comment) keeps green.
    std::fs::write(&teal.path, format!("{after}# touched\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(teal.text("/").await, "green");

    let (drained, dir) = teal.stop().await;
    assert!(drained);
    let teal = Teal::start_in(dir).await;
    assert_eq!(
        teal.text("/").await,
        "green",
        "the switch survived a restart"
    );

    teal.edit_active("green", "blue");
    assert_eventually!(
        teal.text("/").await == "blue",
        Duration::from_secs(1),
        "operator's edit did not win"
    );
}

/// A kept-alive client connection stays open across a switch and its next request goes to the
/// new pool.
#[tokio::test]
async fn keep_alive_connection_follows_the_switch() {
    let (_b, _g, teal) = two_pools("").await;
    let mut conn = Conn::open(teal.proxy).await;
    assert_eq!(conn.get("/").await.body.trim(), "blue");
    teal.switch("green").await;
    assert!(conn.is_open());
    assert_eq!(conn.get("/").await.body.trim(), "green");
    teal.switch("blue").await;
    assert_eq!(conn.get("/").await.body.trim(), "blue");
}

/// A request in flight when the switch happens finishes on the pool it started on.
#[tokio::test]
async fn in_flight_request_finishes_on_its_pool() {
    let (_b, _g, teal) = two_pools("").await;
    let proxy = teal.proxy;
    let slow = tokio::spawn(async move { Conn::open(proxy).await.get("/slow?delay_ms=700").await });
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["blue"]["in_flight"] == 1,
        Duration::from_secs(3),
        "slow request not in flight"
    );
    teal.switch("green").await;
    assert_eq!(teal.text("/").await, "green");
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["pool"], "blue");
}

/// `GET /metrics` is Prometheus text 0.0.4 unless the scraper asks for OpenMetrics; both have
/// HELP and TYPE for every metric, and `promtool check metrics` accepts them (when installed).
#[tokio::test]
async fn metrics_formats_by_accept() {
    let (_b, _g, teal) = two_pools("").await;
    teal.text("/").await;
    teal.switch("green").await;
    let scrape = |accept: Option<&'static str>| {
        let admin = teal.admin;
        async move {
            let mut req = http::Request::get("/metrics").header("host", admin.to_string());
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            Conn::open(admin).await.send(req).await
        }
    };
    let text = scrape(None).await;
    assert_eq!(
        text.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = &text.body;
    for line in [
        "# HELP teal_requests_total Requests answered, by pool, status class and the path that served them (own or hyper).",
        "# TYPE teal_requests_total counter",
        "# TYPE teal_switches_total counter",
        "teal_switches_total{result=\"ok\"} 1",
        "# TYPE teal_request_duration_seconds histogram",
        "# TYPE teal_generation gauge",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    assert!(
        !body.contains("# EOF") && !body.contains("# UNIT"),
        "{body}"
    );
    let prometheus =
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let om = scrape(Some(prometheus)).await;
    assert_eq!(
        om.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.lines().any(|l| l == "# TYPE teal_requests counter"));
    assert_eq!(scrape(Some("text/plain")).await.body, text.body);
    promtool_check(&text.body, &[]);
    // promtool parses only the 0.0.4 format: in OpenMetrics a counter family is named without
    // `_total` and its samples with it, which promtool takes for a second metric with no help.
    let counters: Vec<String> = om
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .map(|name| format!("{name}_total no help text"))
        .collect();
    promtool_check(&om.body, &counters);
}

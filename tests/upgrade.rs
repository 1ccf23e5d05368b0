//! WebSocket (HTTP/1.1 upgrade) through teal, including across a switch.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

async fn open_ws(proxy: SocketAddr, path: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (ws, res) = tokio_tungstenite::client_async(format!("ws://{proxy}{path}"), tcp)
        .await
        .expect("upgrade through teal");
    assert_eq!(res.status(), 101);
    ws
}

async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) -> String {
    ws_roundtrip(ws, text).await
}

/// A WebSocket opened through teal echoes, keeps echoing on its pool after a switch, counts as in
/// flight while open, and a preview route can open one too.
#[tokio::test]
async fn websocket_echo_survives_switch() {
    let blue = ws_echo("blue").await;
    let green = ws_echo("green").await;
    let pools = vec![("blue", vec![blue]), ("green", vec![green])];
    let teal = Teal::start(&config("blue", &pools, "")).await;

    let mut ws = open_ws(teal.proxy, "/chat").await;
    assert_eq!(echo(&mut ws, "hello").await, "blue:hello");
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(
        status["pools"]["blue"]["tunnels"], 1,
        "the open tunnel is counted"
    );
    assert_eq!(
        status["pools"]["blue"]["in_flight"], 0,
        "as a tunnel, not a request"
    );

    teal.switch("green").await;
    for i in 0..3 {
        assert_eq!(echo(&mut ws, &format!("m{i}")).await, format!("blue:m{i}"));
    }
    let mut ws2 = open_ws(teal.proxy, "/chat").await;
    assert_eq!(echo(&mut ws2, "new").await, "green:new");
    let mut preview = open_ws(teal.proxy, "/blue/chat").await;
    assert_eq!(echo(&mut preview, "p").await, "blue:p");

    ws.close(None).await.unwrap();
    drop(ws);
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["blue"]["tunnels"] == 1,
        Duration::from_secs(3),
        "closing the tunnel did not end its count"
    );
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(
        status["pools"]["blue"]["draining"], true,
        "blue still has the preview tunnel"
    );
    preview.close(None).await.unwrap();
    ws2.close(None).await.unwrap();
    drop((preview, ws2));
    let drained = teal
        .admin("GET", "/drain?pool=blue&timeout=3s", "", None)
        .await
        .json();
    assert_eq!(drained["drained"], true, "{drained}");
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["pools"]["blue"]["draining"], false);
    // The green tunnel ends once both directions have finished, which is after the client's close
    // frame has been echoed: not necessarily by the time blue has drained.
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["green"]["tunnels"] == 0,
        Duration::from_secs(3),
        "closing the green tunnel did not end its count"
    );
}

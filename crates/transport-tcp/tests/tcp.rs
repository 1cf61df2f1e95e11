//! TCP-specific behaviour: one watch at a time.

use std::time::Duration;

use bytes::Bytes;
use interconnect_core::{Config, Hub, Interconnect};
use interconnect_proto::{Code, DEFAULT_MAX_FRAME_LEN, DeviceId, Frame};
use tokio::io::AsyncReadExt;
use transport_tcp::{TcpDialer, TcpListener};

#[tokio::test]
async fn a_second_watch_is_refused_with_busy_not_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, Config::new(DeviceId([2; 16])));
    let watch = Interconnect::new(TcpDialer::new(addr), Config::new(DeviceId([1; 16])));
    tokio::time::timeout(Duration::from_secs(10), watch.connected())
        .await
        .expect("the first watch connects");

    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut reply))
        .await
        .expect("the refusal arrives and the connection closes")
        .unwrap();
    let Ok(Frame::Error(report)) = Frame::decode(Bytes::from(reply), DEFAULT_MAX_FRAME_LEN) else {
        panic!("expected an error frame");
    };
    assert_eq!(report.code, Code::BUSY);
    assert_eq!(report.channel, None);
    // The first watch is still served.
    assert_eq!(hub.peer_device_status().code(), 1);
    assert_eq!(watch.peer_device_status().code(), 1);
}

#[tokio::test]
async fn the_watch_reconnects_after_the_phone_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let phone_config = Config::new(DeviceId([2; 16]));
    // The restarted phone keeps its device key, which the watch pinned on first use.
    let restarted_config = phone_config.clone();
    let hub = Hub::new(listener, phone_config);
    let mut config = Config::new(DeviceId([1; 16]));
    config.backoff.initial = Duration::from_millis(10);
    let watch = Interconnect::new(TcpDialer::new(addr), config);
    tokio::time::timeout(Duration::from_secs(10), watch.connected())
        .await
        .unwrap();
    hub.shutdown().await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let hub = Hub::new(listener, restarted_config);
    let app = hub.register("com.example", 1, None).await.unwrap();
    let conn = watch.instance("com.example", None);
    assert!(conn.diagnosis(Some(Duration::from_secs(10))).await.is_ok());
    conn.send(&"after restart").await.unwrap();
    drop(app);
}

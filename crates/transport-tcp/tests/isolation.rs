//! The walls between devices and between apps, over real TCP sockets: what a phone holds
//! for one watch never reaches another, a registration cannot take over another app's
//! channel, and a channel id belongs to one package.

use interconnect::IdentityFile;
use std::time::Duration;

use interconnect::{
    Config, Connection, ConnectionEvent, DeviceIdentity, Error, Hub, Interconnect, Security,
};
use interconnect_conformance::proxy::FaultProxy;
use interconnect_proto::{Code, DeviceId};
use transport_tcp::{TcpDialer, TcpListener};

mod common;
use common::{next_text, pinned};

const PKG: &str = "com.example.isolation";
const WAIT: Duration = Duration::from_secs(20);

async fn opened(conn: &Connection) {
    assert!(conn.diagnosis(Some(WAIT)).await.is_ok(), "channel opens");
}

#[tokio::test]
async fn a_message_held_for_a_watch_that_left_never_reaches_another_watch() {
    let phone = DeviceIdentity::generate();
    let (a, b) = (DeviceIdentity::generate(), DeviceIdentity::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, pinned(2, &phone, &[&a, &b]));
    let app = hub.register(PKG, 1, None).await.unwrap();

    // Watch A reaches the phone through a proxy that will vanish; its app never reads.
    let proxy = FaultProxy::start(addr, None, 1).await.unwrap();
    let watch_a = Interconnect::new(TcpDialer::new(proxy.addr()), pinned(1, &a, &[&phone]));
    let conn_a = watch_a.instance(PKG, None);
    opened(&conn_a).await;
    let for_a = app.send(&"for A only");
    // A's link is cut and A cannot come back.
    drop(proxy);
    tokio::time::timeout(WAIT, hub.disconnected())
        .await
        .unwrap();

    // Watch B opens the same package.
    let watch_b = Interconnect::new(TcpDialer::new(addr), pinned(3, &b, &[&phone]));
    let conn_b = watch_b.instance(PKG, None);
    let mut events_b = conn_b.events().unwrap();
    opened(&conn_b).await;
    // The phone app is never told A's message was delivered: B took the channel.
    let outcome = tokio::time::timeout(WAIT, for_a).await.expect("settled");
    assert!(
        matches!(outcome, Err(Error::ConnectionLost)),
        "A's message must fail with 1006 once B took the channel, got {outcome:?}"
    );
    // B gets what was sent to it, and nothing of A's.
    let for_b = app.send(&"for B");
    assert_eq!(next_text(&mut events_b).await, "for B");
    for_b.await.expect("delivered to B");
    drop(conn_a);
}

/// The next close among a connection's events: its code.
async fn next_close(events: &mut interconnect::Events) -> Code {
    loop {
        match events.next().await.expect("events open") {
            ConnectionEvent::Close { code, .. } => return code,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_second_registration_with_another_signature_does_not_inherit_the_watchs_channel() {
    let phone = DeviceIdentity::generate();
    let a = DeviceIdentity::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, pinned(2, &phone, &[&a]));
    let genuine = hub.register(PKG, 1, Some("AA:AA")).await.unwrap();
    let mut genuine_events = genuine.events().unwrap();
    let mut config = pinned(1, &a, &[&phone]);
    config.send_timeout = Duration::from_secs(2);
    let watch = Interconnect::new(TcpDialer::new(addr), config);
    // The watch app talks only to the app signed AA:AA.
    let conn = watch.instance(PKG, Some("AA:AA"));
    let mut events = conn.events().unwrap();
    opened(&conn).await;

    // Another registration of the package, signed otherwise.
    let impostor = hub.register(PKG, 2, Some("BB:BB")).await.unwrap();
    let mut impostor_events = impostor.events().unwrap();
    // The watch is told at once, with 1007; what it sends now reaches no one.
    assert_eq!(
        tokio::time::timeout(WAIT, next_close(&mut events))
            .await
            .unwrap(),
        Code::SIGNATURE_MISMATCH
    );
    let secret = conn.send(&"secret").await;
    assert!(secret.is_err(), "sent to an impostor: {secret:?}");
    // The replaced registration heard its channel close and is detached.
    assert_eq!(
        next_close(&mut genuine_events).await,
        Code::SIGNATURE_MISMATCH
    );
    assert!(genuine_events.next().await.is_none());
    assert!(genuine.send(&"late").await.is_err());

    // The genuine app registers again: the watch's channel comes back to it.
    let back = hub.register(PKG, 3, Some("AA:AA")).await.unwrap();
    let mut back_events = back.events().unwrap();
    let hello = conn.send(&"hello");
    assert_eq!(next_text(&mut back_events).await, "hello");
    hello.await.expect("delivered to the genuine app");
    // The impostor never saw a message, and its events ended when it was replaced.
    while let Some(event) = impostor_events.next().await {
        assert!(
            !matches!(event, ConnectionEvent::Message(_)),
            "the impostor got {event:?}"
        );
    }
}

#[tokio::test]
async fn in_plaintext_a_device_id_read_off_the_wire_takes_over_no_live_link_from_elsewhere() {
    use interconnect_proto::{DEFAULT_MAX_FRAME_LEN, Frame, Hello, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let plaintext = |id: u8| {
        let mut config = Config::in_memory(DeviceId([id; 16]));
        config.session.security = Security::InsecurePlaintext;
        config
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, plaintext(2));
    let app = hub.register(PKG, 1, None).await.unwrap();
    let watch = Interconnect::new(TcpDialer::new(addr), plaintext(1));
    let conn = watch.instance(PKG, None);
    let mut events = conn.events().unwrap();
    opened(&conn).await;

    // Someone at another address says it is that watch (its id is in its clear Hello).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut hijacker = socket.connect(addr).await.unwrap();
    let hello = Frame::Hello(Hello {
        role: Role::Watch,
        device_id: DeviceId([1; 16]),
        min_version: *interconnect_proto::PROTOCOL_VERSIONS.start(),
        max_version: *interconnect_proto::PROTOCOL_VERSIONS.end(),
        max_frame_len: DEFAULT_MAX_FRAME_LEN as u32,
        capabilities: interconnect_proto::Capabilities::ALL,
        resume_token: 99,
    });
    hijacker
        .write_all(&hello.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap())
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, hijacker.read_to_end(&mut reply))
        .await
        .expect("refused and closed")
        .unwrap();
    // One frame and nothing else: the phone sends no Hello on a link it refuses.
    let frame = Frame::decode(reply.clone().into(), DEFAULT_MAX_FRAME_LEN).unwrap();
    assert!(
        matches!(&frame, Frame::Error(e) if e.code == Code::BUSY),
        "{frame:?}"
    );
    assert_eq!(
        reply.len(),
        frame.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap().len()
    );
    // The watch's link was never touched: what the app sends reaches the watch.
    let sent = app.send(&"still yours");
    assert_eq!(next_text(&mut events).await, "still yours");
    sent.await.expect("delivered");
}

#[tokio::test]
async fn with_the_default_trust_a_second_watch_is_told_4007_not_left_to_time_out() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, Config::new(dirs[0].path()).unwrap());
    let _app = hub.register(PKG, 1, None).await.unwrap();
    let first = Interconnect::new(TcpDialer::new(addr), Config::new(dirs[1].path()).unwrap());
    opened(&first.instance(PKG, None)).await;
    first.shutdown().await;
    // Trust on first use pinned the first watch: another is not trusted there.
    let second = Interconnect::new(TcpDialer::new(addr), Config::new(dirs[2].path()).unwrap());
    let conn = second.instance(PKG, None);
    let mut events = conn.events().unwrap();
    let diagnosis = tokio::time::timeout(WAIT, conn.diagnosis(Some(WAIT)))
        .await
        .expect("diagnosis answers before its own timeout");
    assert_eq!(diagnosis.code, Code::UNTRUSTED_PEER);
    match events.next().await {
        Some(ConnectionEvent::Error { code, .. }) => assert_eq!(code, Code::UNTRUSTED_PEER),
        other => panic!("expected the refusal as an event, got {other:?}"),
    }
}

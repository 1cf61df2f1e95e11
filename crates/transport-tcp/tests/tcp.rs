//! TCP-specific behaviour: one watch at a time, socket options, bounded writes.

use std::time::Duration;

use bytes::Bytes;
use interconnect_core::{
    Config, DeviceIdentity, Hub, Interconnect, NoiseConfig, Security, SecurityError, SecurityEvent,
    TrustPolicy,
};
use interconnect_proto::{Code, DEFAULT_MAX_FRAME_LEN, DeviceId, Frame};
use tokio::io::AsyncReadExt;
use transport_tcp::{TcpDialer, TcpListener};

/// A device config with this identity, trusting exactly `trusted`.
fn pinned(id: u8, identity: &DeviceIdentity, trusted: &[&DeviceIdentity]) -> Config {
    let mut config = Config::new(DeviceId([id; 16]));
    config.security = Security::Noise(NoiseConfig::new(identity.clone()).with_trust(
        TrustPolicy::Pinned(trusted.iter().map(|i| i.fingerprint()).collect()),
    ));
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    config
}

/// Waits for the next refusal among the endpoint's security events.
async fn next_refusal(events: &mut interconnect_core::SecurityEvents) -> SecurityError {
    loop {
        match events.next().await.expect("security events open") {
            SecurityEvent::Refused(error) => return error,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_stranger_connecting_while_a_watch_is_served_gets_what_a_free_phone_answers() {
    let (phone, watch_a) = (DeviceIdentity::generate(), DeviceIdentity::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, pinned(2, &phone, &[&watch_a]));
    let app = hub.register("com.example", 1, None).await.unwrap();
    let watch = Interconnect::new(TcpDialer::new(addr), pinned(1, &watch_a, &[&phone]));
    let conn = watch.instance("com.example", None);
    assert!(conn.diagnosis(Some(Duration::from_secs(10))).await.is_ok());

    // Someone without keys connects and sends a plaintext hello: the phone answers as it
    // would with no watch served (4008, the peer must encrypt), not 4002, which would
    // tell a stranger that a watch is connected.
    let mut stranger = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = Frame::Hello(interconnect_proto::Hello {
        role: interconnect_proto::Role::Watch,
        device_id: DeviceId([9; 16]),
        min_version: 1,
        max_version: 1,
        max_frame_len: 65_536,
        capabilities: interconnect_proto::Capabilities::default(),
        resume_token: 7,
    });
    tokio::io::AsyncWriteExt::write_all(&mut stranger, &hello.to_bytes(65_536).unwrap())
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stranger.read_to_end(&mut reply))
        .await
        .expect("the refusal arrives and the connection closes")
        .unwrap();
    let Ok(Frame::Error(report)) = Frame::decode(Bytes::from(reply), DEFAULT_MAX_FRAME_LEN) else {
        panic!("expected an error frame");
    };
    assert_eq!(report.code, Code::SECURITY);

    // The served watch never noticed.
    assert_eq!(hub.peer_device_status().code(), 1);
    let mut events = app.events();
    conn.send(&"still served").await.expect("delivered");
    loop {
        if let interconnect_core::ConnectionEvent::Message(m) = events.next().await.unwrap() {
            assert_eq!(m.decode::<String>().unwrap(), "still served");
            break;
        }
    }
}

#[tokio::test]
async fn a_second_trusted_watch_is_refused_as_busy_after_it_authenticated_and_served_once_the_first_leaves()
 {
    let phone = DeviceIdentity::generate();
    let (watch_a, watch_b) = (DeviceIdentity::generate(), DeviceIdentity::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, pinned(2, &phone, &[&watch_a, &watch_b]));
    let app = hub.register("com.example", 1, None).await.unwrap();
    let first = Interconnect::new(TcpDialer::new(addr), pinned(1, &watch_a, &[&phone]));
    let conn_a = first.instance("com.example", None);
    assert!(
        conn_a
            .diagnosis(Some(Duration::from_secs(10)))
            .await
            .is_ok()
    );

    let second = Interconnect::new(TcpDialer::new(addr), pinned(3, &watch_b, &[&phone]));
    let mut refusals = second.security_events().unwrap();
    let refusal = tokio::time::timeout(Duration::from_secs(10), next_refusal(&mut refusals))
        .await
        .expect("the second watch is refused");
    // Sealed, from the authenticated phone, and not final: the watch keeps trying.
    assert!(
        matches!(
            refusal,
            SecurityError::RefusedByPeer {
                code: Code::BUSY,
                authenticated: true,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert!(!refusal.is_lasting());
    // The first watch is still served.
    assert_eq!(hub.peer_device_status().code(), 1);
    conn_a
        .send(&"first")
        .await
        .expect("the first watch is served");

    // The first leaves; the second, still retrying by itself, is served.
    first.shutdown().await;
    let conn_b = second.instance("com.example", None);
    tokio::time::timeout(Duration::from_secs(20), second.connected())
        .await
        .expect("the second watch is served once the first left");
    assert!(
        conn_b
            .diagnosis(Some(Duration::from_secs(10)))
            .await
            .is_ok()
    );
    conn_b
        .send(&"second")
        .await
        .expect("the second watch is served");
    drop(app);
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

/// A frame whose header announces `payload_len` bytes (the reader checks no more).
fn frame_of(payload_len: usize, fill: u8) -> Bytes {
    let frame = Frame::Data(interconnect_proto::Data {
        channel: interconnect_proto::ChannelId(1),
        seq: 1,
        content_type: interconnect_proto::ContentType::Binary,
        exchange: interconnect_proto::Exchange::OneWay,
        payload: Bytes::from(vec![fill; payload_len]),
    });
    frame.to_bytes(1 << 20).unwrap()
}

#[tokio::test]
async fn frames_arrive_whole_however_the_stream_splits_them_and_cancelled_reads_lose_nothing() {
    use interconnect_core::Transport;
    use tokio::io::AsyncWriteExt;
    let config = transport_tcp::TcpConfig {
        max_frame_len: 1 << 20,
        ..Default::default()
    };
    let mut listener = TcpListener::bind_with_config("127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (stream, link) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.next_link());
    let (mut stream, mut link) = (stream.unwrap(), link.unwrap());
    // Small and large frames (large ones get buffers of their own), each written in two
    // parts, the cut inside the header for the smallest.
    let sizes = [
        10,
        70_000,
        3,
        (1 << 20) - 100,
        65_000,
        200_000,
        1,
        64 * 1024,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let frame = frame_of(len, i as u8);
        let (first, second) = frame.split_at(if len < 100 { 3 } else { frame.len() / 2 });
        // A receive given up while the frame is incomplete (as a `select!` would give it
        // up) returns nothing and loses nothing.
        let (written, early) = tokio::join!(
            stream.write_all(first),
            tokio::time::timeout(Duration::from_millis(20), link.receiver.recv())
        );
        written.unwrap();
        assert!(early.is_err(), "no frame before all of it arrived");
        let (written, got) = tokio::join!(stream.write_all(second), link.receiver.recv());
        written.unwrap();
        let got = got.unwrap().expect("a frame");
        assert!(got == frame, "frame of {} bytes intact", frame.len());
    }
    // Back to back in one write, then the end of the stream.
    let frames: Vec<Bytes> = sizes.iter().map(|&len| frame_of(len, 9)).collect();
    let wire: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let (written, _) = tokio::join!(
        async {
            stream.write_all(&wire).await?;
            stream.shutdown().await
        },
        async {
            for frame in &frames {
                assert!(link.receiver.recv().await.unwrap().as_ref() == Some(frame));
            }
        }
    );
    written.unwrap();
    assert!(link.receiver.recv().await.unwrap().is_none(), "clean end");
}

/// A stranger announces a 200 KiB frame (within the link's limit) before any handshake:
/// the phone closes the
/// connection at once instead of buffering what the header announced until the
/// handshake times out (no handshake step exceeds a few hundred bytes).
#[tokio::test]
async fn a_stranger_announcing_a_large_frame_before_the_handshake_is_cut_off_at_once() {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let mut config = Config::new(DeviceId([2; 16]));
    config.session.handshake_timeout = Duration::from_secs(600);
    let _hub = Hub::new(listener, config);
    let mut stranger = tokio::net::TcpStream::connect(addr).await.unwrap();
    let len: u32 = 200 << 10;
    let l = len.to_le_bytes();
    // Format version 1, kind Sealed (0x41), no flags, a 24-bit length.
    stranger
        .write_all(&[1, 0x41, 0, l[0], l[1], l[2]])
        .await
        .unwrap();
    stranger.write_all(&[0u8; 4096]).await.unwrap();
    let mut rest = Vec::new();
    // Well before the handshake timeout: the phone refused the header.
    let closed = tokio::time::timeout(Duration::from_secs(20), stranger.read_to_end(&mut rest))
        .await
        .expect("the phone closed the connection");
    let _ = closed;
}

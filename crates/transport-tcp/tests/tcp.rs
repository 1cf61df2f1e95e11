//! TCP-specific behaviour: one watch at a time, socket options, bounded writes.

use interconnect::IdentityFile;
use std::time::Duration;

use bytes::Bytes;
use interconnect::Connection;
use interconnect::{
    Config, DeviceIdentity, Hub, Interconnect, Security, SecurityError, SecurityEvent,
};
use interconnect_proto::{Code, DEFAULT_MAX_FRAME_LEN, DeviceId, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_tcp::{TcpDialer, TcpListener};

mod common;
use common::{next_text, pinned};

/// Waits for the next refusal among the endpoint's security events.
async fn next_refusal(events: &mut interconnect::SecurityEvents) -> SecurityError {
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
    let mut events = app.events().unwrap();
    let sent = conn.send(&"still served");
    loop {
        if let interconnect::ConnectionEvent::Message(m) = events.next().await.unwrap() {
            assert_eq!(m.decode::<String>().unwrap(), "still served");
            break;
        }
    }
    sent.await.expect("delivered");
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
    // The app reads what comes (messages are acknowledged once taken).
    let mut events = app.events().unwrap();
    tokio::spawn(async move { while events.next().await.is_some() {} });
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
async fn the_watchs_connection_carries_on_after_the_phone_restarts_on_the_same_port() {
    let (watch_dir, phone_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, Config::new(phone_dir.path()).unwrap());
    let app = hub.register("com.example", 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    let mut config = Config::new(watch_dir.path()).unwrap();
    config.backoff.initial = Duration::from_millis(10);
    let watch = Interconnect::new(TcpDialer::new(addr), config);
    let conn = watch.instance("com.example", None);
    let before = conn.send(&"before restart");
    assert_eq!(next_text(&mut app_events).await, "before restart");
    before.await.unwrap();

    // A clean restart: the port is free again once `shutdown` returned.
    hub.shutdown().await;
    drop((app, app_events));
    let listener = TcpListener::bind(addr)
        .await
        .expect("the port was released");
    let hub = Hub::new(listener, Config::new(phone_dir.path()).unwrap());
    let app = hub.register("com.example", 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    // The same connection, no new instance(): it reopens by itself.
    let after = conn.send(&"after restart");
    assert_eq!(next_text(&mut app_events).await, "after restart");
    after.await.unwrap();
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
    use interconnect::Transport;
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
                assert!(link.receiver.recv().await.unwrap().as_deref() == Some(&frame[..]));
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
    let mut config = Config::in_memory(DeviceId([2; 16]));
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

#[tokio::test]
async fn links_set_nodelay_keepalive_and_the_user_timeout_on_their_sockets() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let config = transport_tcp::TcpConfig {
        keepalive: Duration::from_secs(7),
        user_timeout: Some(Duration::from_millis(4_500)),
        ..Default::default()
    };
    transport_tcp::configure(&stream, &config).unwrap();
    let socket = socket2::SockRef::from(&stream);
    assert!(socket.tcp_nodelay().unwrap());
    assert!(socket.keepalive().unwrap());
    assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(7)
    );
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    assert_eq!(
        socket.tcp_user_timeout().unwrap(),
        Some(Duration::from_millis(4_500))
    );
    // The defaults: a peer gone silent fails the socket within 15 s of unacknowledged
    // data, or 40 s of an idle link (10 s idle, then 3 probes 10 s apart).
    let defaults = transport_tcp::TcpConfig::default();
    assert_eq!(defaults.keepalive, Duration::from_secs(10));
    assert_eq!(defaults.user_timeout, Some(Duration::from_secs(15)));
}

#[tokio::test]
async fn a_peer_that_stops_reading_holds_the_sender_back_within_bounded_buffers() {
    use interconnect::Transport;
    // A server that accepts and never reads.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let accepting = tokio::spawn(async move { server.accept().await.unwrap().0 });
    let mut link = TcpDialer::new(addr).next_link().await.unwrap();
    let _idle = accepting.await.unwrap();
    let frame = frame_of(60_000, 7);
    let mut accepted = 0usize;
    // Sends until one cannot finish: the sender waits for the socket instead of
    // buffering what the peer does not take.
    while let Ok(sent) =
        tokio::time::timeout(Duration::from_millis(500), link.sender.send(frame.clone())).await
    {
        sent.unwrap();
        accepted += frame.len();
        assert!(
            accepted < 64 << 20,
            "64 MiB taken by a peer that reads nothing: the write buffer is not bounded"
        );
    }
    // Our buffer plus what the two kernels hold (send and receive buffers, autotuned).
    eprintln!(
        "held back after {} KiB (write buffer {} KiB)",
        accepted / 1024,
        transport_tcp::WRITE_BUFFER / 1024
    );
    assert!(accepted >= transport_tcp::WRITE_BUFFER / 2, "{accepted}");
}

/// A plaintext phone with `com.example` registered, and a raw socket that did the
/// watch's hello.
async fn plaintext_phone_and_raw_watch(
    link_timeout: Duration,
) -> (Hub, Connection, tokio::net::TcpStream) {
    // Without TCP_USER_TIMEOUT (which fails a socket whose window stays shut, after 15 s
    // by default): the session's own deadlines are under test.
    let tcp = transport_tcp::TcpConfig {
        user_timeout: None,
        ..Default::default()
    };
    let listener = TcpListener::bind_with_config("127.0.0.1:0", tcp)
        .await
        .unwrap();
    let addr = listener.local_addr();
    let mut config = Config::in_memory(DeviceId([2; 16]));
    config.session.security = Security::InsecurePlaintext;
    config.session.ping_interval = Duration::from_millis(300);
    config.session.link_timeout = link_timeout;
    // Large messages fill the sockets from the window alone (64 of them in flight).
    config.session.max_in_flight = 64;
    config.session.max_in_flight_bytes = 64 << 20;
    let hub = Hub::new(listener, config);
    let app = hub.register("com.example", 1, None).await.unwrap();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = Frame::Hello(interconnect_proto::Hello {
        role: interconnect_proto::Role::Watch,
        device_id: DeviceId([1; 16]),
        min_version: *interconnect_proto::PROTOCOL_VERSIONS.start(),
        max_version: *interconnect_proto::PROTOCOL_VERSIONS.end(),
        max_frame_len: DEFAULT_MAX_FRAME_LEN as u32,
        capabilities: interconnect_proto::Capabilities::ALL,
        resume_token: 1,
    });
    raw.write_all(&hello.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), hub.connected())
        .await
        .expect("the raw watch's hello is accepted");
    (hub, app, raw)
}

fn ping(nonce: u64) -> Bytes {
    Frame::Ping(interconnect_proto::Ping { nonce })
        .to_bytes(DEFAULT_MAX_FRAME_LEN)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_pings_without_reading_is_held_back_not_buffered() {
    // A long link timeout: only backpressure can hold the flood back.
    let (_hub, _app, mut raw) = plaintext_phone_and_raw_watch(Duration::from_secs(120)).await;
    let batch: Vec<u8> = (0..4096).flat_map(|n| ping(n).to_vec()).collect();
    let mut written = 0usize;
    // The phone answers each ping with a pong this socket never reads: once its replies
    // cannot leave, it must stop reading instead of queueing pongs without end.
    while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), raw.write_all(&batch)).await
    {
        written += batch.len();
        assert!(
            written < 48 << 20,
            "the phone took 48 MiB of pings without its pongs leaving"
        );
    }
    eprintln!("held back after {} KiB of pings", written / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_writes_do_not_drain_is_dropped_after_the_link_timeout_though_the_peer_talks()
{
    let (hub, app, mut raw) = plaintext_phone_and_raw_watch(Duration::from_secs(1)).await;
    let (phone_port, watch_port) = (
        raw.peer_addr().unwrap().port(),
        raw.local_addr().unwrap().port(),
    );
    assert!(
        phone_socket(phone_port, watch_port)
            .is_some_and(|(s, inode)| s == TCP_ESTABLISHED && inode != 0),
        "the phone's socket is found while the link is up"
    );
    let open = Frame::Open(interconnect_proto::Open {
        channel: interconnect_proto::ChannelId(1),
        package: "com.example".into(),
        signature: None,
        resume: false,
        received_seq: 0,
    });
    raw.write_all(&open.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap())
        .await
        .unwrap();
    let mut events = app.events().unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        if let Ok(Some(interconnect::ConnectionEvent::Open { .. })) = event {
            break;
        }
        assert!(event.is_ok(), "the channel opens");
    }
    // The phone's app sends far more than the sockets hold (64 messages of 200 KB in
    // flight; nothing is resent on TCP, so in-flight data alone must overflow them); the
    // watch reads nothing but pings every 100 ms, so its side of the link looks alive.
    let payload = Bytes::from(vec![5u8; 200_000]);
    let sends: Vec<_> = (0..100)
        .map(|_| app.send_bytes(interconnect_proto::ContentType::Binary, payload.clone()))
        .collect();
    let talking = tokio::spawn(async move {
        for nonce in 0.. {
            if raw.write_all(&ping(nonce)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(20), hub.disconnected())
        .await
        .expect("the phone drops a link its writes cannot drain into");
    // And closes its socket, though the watch still reads nothing: within the linger
    // time (2 s) no descriptor holds it and it has left ESTABLISHED.
    let gone = async {
        while phone_socket(phone_port, watch_port)
            .is_some_and(|(state, inode)| state == TCP_ESTABLISHED || inode != 0)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the dropped link's socket is closed");
    talking.abort();
    drop(sends);
}

const TCP_ESTABLISHED: u8 = 1;

/// The state and inode (0: no descriptor holds it) of the kernel's socket from
/// `local` to `remote` on 127.0.0.1, from `/proc/net/tcp`.
fn phone_socket(local: u16, remote: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |at: usize| {
            let field = fields.get(at)?.rsplit(':').next()?;
            u16::from_str_radix(field, 16).ok()
        };
        if port(1)? != local || port(2)? != remote {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        Some((state, fields.get(9)?.parse().ok()?))
    })
}

#[tokio::test]
async fn a_dialer_reaches_the_phone_by_host_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().port();
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    // `localhost` may name ::1 first, where nothing listens: the next address is tried.
    let dialer = TcpDialer::to_host(format!("localhost:{port}"), Default::default());
    let watch = Interconnect::new(dialer, Config::in_memory(DeviceId([1; 16])));
    tokio::time::timeout(Duration::from_secs(10), watch.connected())
        .await
        .expect("connected by name");
    assert_eq!(hub.peer_device_status().code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_shut_down_has_released_its_port() {
    let mut addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    for round in 0..20 {
        let listener = TcpListener::bind(addr).await.unwrap();
        addr = listener.local_addr();
        let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
        let watch = Interconnect::new(TcpDialer::new(addr), Config::in_memory(DeviceId([1; 16])));
        tokio::time::timeout(Duration::from_secs(10), watch.connected())
            .await
            .expect("connected");
        hub.shutdown().await;
        // At once: no "address in use".
        let again = std::net::TcpListener::bind(addr);
        assert!(again.is_ok(), "round {round}: {again:?}");
        drop(again);
        watch.shutdown().await;
    }
}

#[tokio::test]
async fn a_broken_stream_gives_a_typed_error_saying_how_it_broke() {
    use interconnect::{Transport, TransportError};
    let mut listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let frame = frame_of(100, 7);
    // A frame cut short by the end of the stream.
    let (stream, link) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.next_link());
    let (mut stream, mut link) = (stream.unwrap(), link.unwrap());
    stream.write_all(&frame[..frame.len() - 1]).await.unwrap();
    drop(stream);
    let error = link.receiver.recv().await.unwrap_err();
    assert!(matches!(error, TransportError::Truncated), "{error:?}");
    // A header of an unknown format version.
    let (stream, link) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.next_link());
    let (mut stream, mut link) = (stream.unwrap(), link.unwrap());
    let mut bad = frame.to_vec();
    bad[0] = 0xEE;
    stream.write_all(&bad).await.unwrap();
    let error = link.receiver.recv().await.unwrap_err();
    assert!(matches!(error, TransportError::Framing(_)), "{error:?}");
    assert!(
        error.to_string().starts_with("bad frame on the stream"),
        "{error}"
    );
}

#[tokio::test]
async fn the_limits_a_link_reports_are_exactly_what_send_takes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr();
    let hub = Hub::new(listener, Config::in_memory(DeviceId([2; 16])));
    let app = hub.register("com.example", 1, None).await.unwrap();
    let watch = Interconnect::new(TcpDialer::new(addr), Config::in_memory(DeviceId([1; 16])));
    assert_eq!(watch.limits(), None, "no link yet");
    let conn = watch.instance("com.example", None);
    assert!(conn.diagnosis(None).await.is_ok());
    let limits = watch.limits().expect("a link is up");
    assert_eq!(hub.limits(), Some(limits), "the same both ways");
    // Encrypted (the default): less than the unsealed constant says.
    assert!(limits.max_message_len < interconnect_proto::Limits::default().max_message_len());
    let max = limits.max_message_len;
    let too_large = conn
        .send_bytes(
            interconnect_proto::ContentType::Binary,
            Bytes::from(vec![1; max + 1]),
        )
        .await;
    assert!(
        matches!(too_large, Err(interconnect::Error::TooLarge { len, max: m }) if len == max + 1 && m == max),
        "{too_large:?}"
    );
    let mut events = app.events().unwrap();
    // Acknowledged once the app took it: taken before the send is awaited.
    let largest = conn.send_bytes(
        interconnect_proto::ContentType::Binary,
        Bytes::from(vec![2; max]),
    );
    loop {
        if let Some(interconnect::ConnectionEvent::Message(m)) = events.next().await {
            assert_eq!(m.payload.len(), max);
            break;
        }
    }
    largest.await.expect("the largest message goes");
    drop(watch);
    tokio::time::timeout(Duration::from_secs(30), async {
        while hub.limits().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no limits once the link is gone");
}

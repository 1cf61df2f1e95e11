//! A man in the middle on real TCP sockets: a proxy between the watch's dialer and the
//! phone's listener that, driven by a seed, injects, drops, duplicates, reorders,
//! replays, truncates, corrupts and splices frames in both directions, while the watch
//! sends a stream of messages and files. It records every byte the two ends put on the
//! wire and checks that no app payload ever crossed in the clear, and that every message
//! and file the watch was told was delivered was delivered exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use interconnect::{
    Config, ConnectionEvent, DeviceIdentity, FilesConfig, Hub, Interconnect, NoiseConfig, Security,
};
use interconnect_proto::{
    Code, ContentType, Data, DeviceId, ErrorReport, Exchange, FLAG_TAGS_LAST, Frame, FrameHeader,
    HEADER_LEN, Handshake, Kind, Layout, MAX_FRAME_LEN, Ping, SEALED_SEGMENT_LEN, Sealed,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use transport_tcp::{TcpDialer, TcpListener};

const PKG: &str = "com.example.mitm";
/// One frame in this many is attacked.
const RATE: u32 = 12;

/// What the attacker did, for the test's report.
#[derive(Debug, Default)]
struct Tally {
    frames: u64,
    /// Sealed frames the ends sent without their CRC (each announced `NO_CRC`).
    without_crc: u64,
    /// Sealed frames of several segments, and those of them sent with their tags last
    /// (each end announced `TAGS_LAST`).
    several: u64,
    tags_last: u64,
    attacks: HashMap<&'static str, u64>,
    connections: u64,
}

/// Everything the genuine ends wrote, both directions, and the tally.
#[derive(Default)]
struct Wire {
    bytes: Mutex<Vec<u8>>,
    tally: Mutex<Tally>,
    /// Frames an end sent in the clear after its first sealed frame (there must be
    /// none: after the keys, everything travels sealed).
    leaks: Mutex<Vec<String>>,
}

impl Wire {
    fn count(&self, attack: &'static str) {
        *self
            .tally
            .lock()
            .unwrap()
            .attacks
            .entry(attack)
            .or_default() += 1;
    }
}

/// Reads one whole frame (header, payload, trailer) off the stream.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut frame = vec![0u8; HEADER_LEN];
    from.read_exact(&mut frame).await.ok()?;
    let header = FrameHeader::parse(&frame, MAX_FRAME_LEN).ok()?;
    frame.resize(header.frame_len(), 0);
    from.read_exact(&mut frame[HEADER_LEN..]).await.ok()?;
    Some(frame)
}

fn encode(frame: Frame) -> Vec<u8> {
    frame.to_bytes(MAX_FRAME_LEN).unwrap().to_vec()
}

/// A frame an attacker without keys can make.
fn forged(rng: &mut StdRng) -> Vec<u8> {
    let mut junk = vec![0u8; rng.random_range(0..64)];
    rng.fill(&mut junk[..]);
    // Half are handshake steps: the frames a secure link must ignore once keyed.
    let frame = match rng.random_range(0..8) {
        0..4 => Frame::Handshake(Handshake {
            step: rng.random(),
            offered: rng.random(),
            suite: rng.random_range(0..4),
            rekey_interval: 512,
            message: Bytes::from(junk),
        }),
        4 => Frame::Data(Data {
            channel: interconnect_proto::ChannelId(rng.random_range(0..4)),
            seq: rng.random_range(0..8),
            content_type: ContentType::Json,
            exchange: Exchange::OneWay,
            payload: Bytes::from_static(b"\"FORGED\""),
        }),
        5 => Frame::Error(ErrorReport {
            channel: None,
            code: Code::UNTRUSTED_PEER,
            message: "forged".into(),
        }),
        6 => Frame::Ping(Ping {
            nonce: rng.random(),
        }),
        _ => Frame::Sealed(Sealed {
            nonce: rng.random_range(0..1 << 20),
            ciphertext: Bytes::from(vec![7u8; 40]),
            layout: Layout::Interleaved,
        }),
    };
    encode(frame)
}

fn sealed(frame: &[u8]) -> Option<Sealed> {
    match Frame::decode(Bytes::copy_from_slice(frame), MAX_FRAME_LEN) {
        Ok(Frame::Sealed(s)) => Some(s),
        _ => None,
    }
}

/// Moves frames one way, attacking one frame in `1 / rate`. Returns when either side
/// closes or the attacker truncates the stream.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut rng: StdRng,
    rate: u32,
    wire: Arc<Wire>,
) {
    let mut history: Vec<Vec<u8>> = Vec::new();
    let mut held: Option<Vec<u8>> = None;
    let mut keyed = false;
    loop {
        let Some(frame) = read_frame(&mut from).await else {
            let _ = to.shutdown().await;
            return;
        };
        wire.bytes.lock().unwrap().extend_from_slice(&frame);
        wire.tally.lock().unwrap().frames += 1;
        if let Ok(header) = FrameHeader::parse(&frame, MAX_FRAME_LEN) {
            let mut tally = wire.tally.lock().unwrap();
            tally.without_crc += u64::from(!header.has_crc());
            // Longer than one segment and the longest nonce (10 bytes): several segments.
            if header.kind == Kind::Sealed && header.payload_len > SEALED_SEGMENT_LEN + 10 {
                tally.several += 1;
                tally.tags_last += u64::from(header.flags & FLAG_TAGS_LAST != 0);
            }
        }
        match Frame::decode(Bytes::copy_from_slice(&frame), MAX_FRAME_LEN) {
            Ok(Frame::Sealed(_)) => keyed = true,
            Ok(other) if keyed => wire.leaks.lock().unwrap().push(format!("{other:?}")),
            _ => {}
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        if rng.random_range(0..rate) != 0 {
            out.push(frame.clone());
        } else {
            match rng.random_range(0..10) {
                0 => wire.count("drop"),
                1 => {
                    wire.count("duplicate");
                    out.push(frame.clone());
                    out.push(frame.clone());
                }
                2 if held.is_none() => {
                    wire.count("reorder");
                    held = Some(frame.clone());
                }
                3 if !history.is_empty() => {
                    wire.count("replay");
                    out.push(history[rng.random_range(0..history.len())].clone());
                    out.push(frame.clone());
                }
                4 => {
                    wire.count("inject");
                    out.push(forged(&mut rng));
                    out.push(frame.clone());
                }
                5 => {
                    // Half a frame, then this direction closes: the receiver loses the
                    // link, and the other direction closes in turn.
                    wire.count("truncate");
                    let cut = rng.random_range(1..frame.len());
                    let _ = to.write_all(&frame[..cut]).await;
                    let _ = to.shutdown().await;
                    record_rest(&mut from, &wire).await;
                    return;
                }
                6 => {
                    wire.count("corrupt");
                    let mut bad = frame.clone();
                    let at = rng.random_range(HEADER_LEN..bad.len());
                    bad[at] ^= 1 << rng.random_range(0..8);
                    out.push(bad);
                }
                7 => match sealed(&frame) {
                    // Splice: one segment cut out of a multi-segment frame, sent alone
                    // under its own nonce.
                    Some(s) if s.ciphertext.len() > SEALED_SEGMENT_LEN => {
                        wire.count("splice: segment alone");
                        let segments = s.ciphertext.len().div_ceil(SEALED_SEGMENT_LEN);
                        let i = rng.random_range(1..segments);
                        let end = ((i + 1) * SEALED_SEGMENT_LEN).min(s.ciphertext.len());
                        out.push(encode(Frame::Sealed(Sealed {
                            nonce: s.nonce + i as u64,
                            ciphertext: s.ciphertext.slice(i * SEALED_SEGMENT_LEN..end),
                            layout: s.layout,
                        })));
                        out.push(frame.clone());
                    }
                    // Splice: this frame and the previous one merged into one.
                    Some(s) => match history.last().and_then(|p| sealed(p)) {
                        Some(p) => {
                            wire.count("splice: merge");
                            let mut both = p.ciphertext.to_vec();
                            both.extend_from_slice(&s.ciphertext);
                            out.push(encode(Frame::Sealed(Sealed {
                                nonce: p.nonce,
                                ciphertext: Bytes::from(both),
                                layout: p.layout,
                            })));
                        }
                        None => out.push(frame.clone()),
                    },
                    None => out.push(frame.clone()),
                },
                8 => {
                    wire.count("inject handshake step");
                    out.push(encode(Frame::Handshake(Handshake {
                        step: rng.random_range(0..6),
                        offered: 3,
                        suite: 2,
                        rekey_interval: 512,
                        message: Bytes::from(vec![0u8; 32]),
                    })));
                    out.push(frame.clone());
                }
                _ => {
                    wire.count("stall");
                    tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
                    out.push(frame.clone());
                }
            }
        }
        if out.first().is_some_and(|f| f == &frame)
            && let Some(late) = held.take()
        {
            out.push(late);
        }
        for f in out {
            if to.write_all(&f).await.is_err() {
                record_rest(&mut from, &wire).await;
                return;
            }
        }
        history.push(frame);
        if history.len() > 64 {
            history.remove(0);
        }
    }
}

/// Reads and records what the sender still writes once nothing is forwarded.
async fn record_rest(from: &mut OwnedReadHalf, wire: &Wire) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        wire.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// Accepts the watch's connections and relays each to the phone through two pumps; when
/// either pump ends, both sockets close.
async fn proxy(listener: tokio::net::TcpListener, phone: SocketAddr, seed: u64, wire: Arc<Wire>) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let Ok((watch, _)) = listener.accept().await else {
            return;
        };
        let Ok(phone) = tokio::net::TcpStream::connect(phone).await else {
            continue;
        };
        wire.tally.lock().unwrap().connections += 1;
        let (watch_rx, watch_tx) = watch.into_split();
        let (phone_rx, phone_tx) = phone.into_split();
        let up = pump(
            watch_rx,
            phone_tx,
            StdRng::seed_from_u64(rng.random()),
            RATE,
            wire.clone(),
        );
        let down = pump(
            phone_rx,
            watch_tx,
            StdRng::seed_from_u64(rng.random()),
            RATE,
            wire.clone(),
        );
        // Each direction runs until its own end closes, so whatever an end wrote before
        // it closed is read and recorded.
        tokio::spawn(up);
        tokio::spawn(down);
    }
}

fn config(key: u8) -> Config {
    let mut config = Config::in_memory(DeviceId([key; 16]));
    config.seed = Some(u64::from(key));
    config.session.security = Security::Noise(NoiseConfig::new(DeviceIdentity::from_private_key(
        [key; 32],
    )));
    config.send_timeout = Duration::from_secs(120);
    config.backoff.initial = Duration::from_millis(10);
    config.backoff.max = Duration::from_millis(100);
    config.session.retransmit_timeout = Duration::from_millis(200);
    config.session.handshake_timeout = Duration::from_secs(2);
    config.session.ping_interval = Duration::from_millis(500);
    config.session.link_timeout = Duration::from_secs(2);
    config
}

async fn attacked_run(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let phone_addr = listener.local_addr();
    let mut phone_config = config(2);
    phone_config.files = Some(FilesConfig::new(dir.path().join("received")));
    let hub = Hub::new(listener, phone_config);
    let app = hub.register(PKG, 1, None).await.unwrap();
    let mut app_events = app.events().unwrap();
    // The phone's app reads as things come (messages are acknowledged once it took
    // them), and after the senders are done until it has been quiet for a while (a
    // duplicate would arrive within that).
    let (finish, mut finished) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut received: HashMap<String, usize> = HashMap::new();
        let mut stored: Vec<std::path::PathBuf> = Vec::new();
        let mut record = |event| match event {
            ConnectionEvent::Message(m) => {
                let text: String = m.decode().unwrap();
                assert_ne!(text, "FORGED", "a forged frame reached the app");
                *received.entry(text).or_default() += 1;
            }
            ConnectionEvent::File { path, .. } => stored.push(path),
            _ => {}
        };
        loop {
            tokio::select! {
                _ = &mut finished => break,
                event = app_events.next() => match event {
                    Some(event) => record(event),
                    None => break,
                },
            }
        }
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(3), app_events.next()).await
        {
            record(event);
        }
        (received, stored)
    });

    let wire = Arc::new(Wire::default());
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let proxy = tokio::spawn(proxy(front, phone_addr, seed, wire.clone()));
    let watch = Interconnect::new(TcpDialer::new(front_addr), config(1));
    let conn = watch.instance(PKG, None);

    // Secrets: each message and file carries a marker found nowhere else.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let marker = |rng: &mut StdRng, what: &str, i: usize| {
        format!("SECRET-{what}-{i:03}-{:016x}", rng.random::<u64>())
    };
    let messages: Vec<String> = (0..120).map(|i| marker(&mut rng, "MSG", i)).collect();
    let mut files = Vec::new();
    for i in 0..2 {
        let secret = marker(&mut rng, "FILE", i);
        let mut content = Vec::new();
        while content.len() < 3 << 19 {
            content.extend_from_slice(secret.as_bytes());
            content.extend_from_slice(&rng.random::<[u8; 32]>());
        }
        let path = dir.path().join(format!("file-{i}.bin"));
        std::fs::write(&path, &content).unwrap();
        files.push((secret, path, content));
    }

    let mut sends = tokio::task::JoinSet::new();
    let mut transfers = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let send = conn.send(m);
        sends.spawn(async move { (i, send.await) });
        if i == 30 {
            transfers = files.iter().map(|(_, p, _)| conn.send_file(p)).collect();
        }
        // A stream: something is always queued while the attacker strikes.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut delivered = Vec::new();
    while let Some(done) = sends.join_next().await {
        let (i, result) = done.unwrap();
        if result.is_ok() {
            delivered.push(i);
        }
    }
    let mut files_delivered = Vec::new();
    for (i, transfer) in transfers.into_iter().enumerate() {
        if transfer.await.is_ok() {
            files_delivered.push(i);
        }
    }

    let _ = finish.send(());
    let (received, stored) = collector.await.unwrap();
    proxy.abort();
    let tally = std::mem::take(&mut *wire.tally.lock().unwrap());
    eprintln!(
        "seed {seed}: {} of {} messages and {} of {} files delivered; {tally:?}",
        delivered.len(),
        messages.len(),
        files_delivered.len(),
        files.len()
    );

    for (text, n) in &received {
        assert_eq!(*n, 1, "{text} delivered {n} times");
        assert!(messages.contains(text), "{text} was never sent");
    }
    for i in &delivered {
        assert_eq!(
            received.get(&messages[*i]),
            Some(&1),
            "message {i} was acknowledged but never delivered"
        );
    }
    for i in &files_delivered {
        let content = &files[*i].2;
        let copies = stored
            .iter()
            .filter(|p| std::fs::read(p).is_ok_and(|c| &c == content))
            .count();
        assert_eq!(copies, 1, "file {i} acknowledged and stored {copies} times");
    }
    assert!(
        delivered.len() >= messages.len() / 2,
        "the attack rate lets most messages through: {} of {}",
        delivered.len(),
        messages.len()
    );
    assert!(tally.attacks.values().sum::<u64>() >= 10, "{tally:?}");
    // The attacks met frames whose only check is their AEAD tags.
    assert!(tally.without_crc >= tally.frames / 2, "{tally:?}");
    // The files' chunks went as frames of several segments, all with their tags last.
    assert!(tally.several >= 6, "{tally:?}");
    assert_eq!(tally.tags_last, tally.several, "{tally:?}");

    let leaks = wire.leaks.lock().unwrap();
    assert!(
        leaks.is_empty(),
        "frames left unsealed after the keys: {leaks:?}"
    );
    let bytes = wire.bytes.lock().unwrap();
    for secret in messages
        .iter()
        .chain(files.iter().map(|(s, _, _)| s))
        .map(String::as_bytes)
    {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{} crossed the wire in the clear",
            String::from_utf8_lossy(secret)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_on_the_wire_learns_no_payload_and_causes_no_loss_or_duplicate() {
    for seed in [1, 2, 3] {
        tokio::time::timeout(Duration::from_secs(240), attacked_run(seed))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: the run did not finish"));
    }
}

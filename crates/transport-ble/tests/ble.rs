//! Fragmentation, flow control and the capacity formula.

use std::time::Duration;

use bytes::Bytes;
use interconnect::Transport;
use interconnect_proto::{ChannelId, ContentType, Data, Exchange, Frame};
use proptest::prelude::*;
use transport_ble::packet::{MAX_ATT_MTU, MIN_ATT_MTU, packet_len};
use transport_ble::*;

fn frame(len: usize) -> Bytes {
    Frame::Data(Data {
        channel: ChannelId(1),
        seq: 1,
        content_type: ContentType::Binary,
        exchange: Exchange::OneWay,
        payload: Bytes::from(vec![0xa5; len]),
    })
    .to_bytes(1 << 20)
    .unwrap()
}

fn reassemble(packets: &[Bytes], max: usize) -> Result<Vec<Bytes>, PacketError> {
    let mut reassembler = Reassembler::new(max);
    let mut frames = Vec::new();
    for packet in packets {
        match Packet::decode(packet.clone())? {
            Packet::Data { seq, last, body } => {
                if let Some(frame) = reassembler.push(seq, last, &body)? {
                    frames.push(frame);
                }
            }
            Packet::Credit(_) => {}
        }
    }
    Ok(frames)
}

proptest! {
    #[test]
    fn any_frame_at_any_mtu_round_trips(
        lens in proptest::collection::vec(0usize..3000, 1..8),
        mtu in MIN_ATT_MTU..=MAX_ATT_MTU,
    ) {
        let frames: Vec<Bytes> = lens.iter().map(|&l| frame(l)).collect();
        let mut fragmenter = Fragmenter::new();
        let mut packets = Vec::new();
        for f in &frames {
            let pieces = fragmenter.fragment(f, packet_len(mtu));
            prop_assert!(pieces.iter().all(|p| p.len() <= packet_len(mtu)));
            prop_assert!(pieces.len() == f.len().div_ceil(packet_len(mtu) - 1));
            packets.extend(pieces);
        }
        prop_assert_eq!(reassemble(&packets, 1 << 20).unwrap(), frames);
    }

    #[test]
    fn any_packet_sequence_decodes_or_errors(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..40)) {
        let packets: Vec<Bytes> = packets.into_iter().map(Bytes::from).collect();
        if let Ok(frames) = reassemble(&packets, 4096) {
            // Whatever comes out is whole frames within the limit, made of the input.
            let input: usize = packets.iter().map(Bytes::len).sum();
            prop_assert!(frames.iter().map(Bytes::len).sum::<usize>() <= input);
            for f in &frames {
                let header = interconnect_proto::FrameHeader::parse(f, 4096);
                prop_assert!(header.is_ok_and(|h| h.frame_len() == f.len()));
            }
        }
    }

    #[test]
    fn a_lost_packet_is_detected(len in 100usize..2000, drop_at in any::<prop::sample::Index>()) {
        let mut packets = Fragmenter::new().fragment(&frame(len), packet_len(23));
        let at = drop_at.index(packets.len());
        packets.remove(at);
        // Losing the last packet only leaves the frame unfinished (the stall timer's case).
        prop_assert!(reassemble(&packets, 1 << 20).is_err() || at == packets.len());
    }
}

#[test]
fn an_oversize_frame_is_refused_from_its_header() {
    let packets = Fragmenter::new().fragment(&frame(10_000), packet_len(247));
    let mut reassembler = Reassembler::new(4096);
    let Ok(Packet::Data { seq, last, body }) = Packet::decode(packets[0].clone()) else {
        panic!("a data packet");
    };
    assert!(matches!(
        reassembler.push(seq, last, &body),
        Err(PacketError::TooLarge { .. })
    ));
}

#[test]
fn capacity_matches_the_published_figures() {
    for (name, p) in [
        ("modern", BleParams::modern()),
        (
            "1M",
            BleParams {
                phy: Phy::M1,
                ..BleParams::modern()
            },
        ),
        ("legacy", BleParams::legacy()),
    ] {
        eprintln!("{name}: {:.0} bit/s", goodput_bps(&p));
    }
    let modern = goodput_bps(&BleParams::modern());
    assert!(
        (1.2e6..1.5e6).contains(&modern),
        "2M PHY with DLE: {modern}"
    );
    let one_m = goodput_bps(&BleParams {
        phy: Phy::M1,
        ..BleParams::modern()
    });
    assert!((0.7e6..0.85e6).contains(&one_m), "1M PHY with DLE: {one_m}");
    let legacy = goodput_bps(&BleParams::legacy());
    assert!(legacy < one_m / 3.0, "MTU 23 without DLE: {legacy}");
    // Packets that fill whole PDUs: MTU 517 carries no less than 247 (512-byte packets
    // took three PDUs, the last nearly empty, and carried 0.7 of it).
    let large = goodput_bps(&BleParams {
        att_mtu: 517,
        ..BleParams::modern()
    });
    assert!(large >= modern, "MTU 517: {large}, MTU 247: {modern}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_receiver_slows_the_sender_and_nothing_is_lost() {
    let network = SimNetwork::new(BleParams::modern(), BleConfig::default());
    let (mut peripheral, mut central) = network.endpoints();
    let (phone, watch) = tokio::join!(central.next_link(), peripheral.next_link());
    let (mut phone, mut watch) = (phone.unwrap(), watch.unwrap());
    let frames: Vec<Bytes> = (0..100).map(|i| frame(1000 + i)).collect();
    let to_send = frames.clone();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        for f in to_send {
            phone.sender.send(f).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        phone
    });
    // The receiver reads nothing for 10 s: the sender is held back by the credits
    // (an unbounded buffer would let it send all 100 at once) and stays blocked.
    let count = || sent.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let blocked_at = count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(blocked_at < frames.len(), "the sender was not held back");
    assert_eq!(
        count(),
        blocked_at,
        "the sender went on while nothing was read"
    );
    let mut received = Vec::new();
    for _ in 0..frames.len() {
        // The app reads a frame only every 200 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
        received.push(watch.receiver.recv().await.unwrap().unwrap());
    }
    assert_eq!(received, frames);
    sender.await.unwrap();
}

/// Frames through the simulated radio reach at least 0.97 of the modelled capacity, at
/// 1M and 2M PHY, with and without DLE: the credits never leave the radio idle.
#[tokio::test(start_paused = true)]
async fn throughput_of_the_simulated_radio_is_close_to_capacity() {
    for phy in [Phy::M1, Phy::M2] {
        for dle in [false, true] {
            let params = BleParams {
                phy,
                dle,
                ..BleParams::modern()
            };
            let rate = frames_through(params).await;
            let capacity = goodput_bps(&params);
            assert!(
                rate > 0.97 * capacity && rate <= capacity * 1.01,
                "{phy:?}, DLE {dle}: rate {rate} vs capacity {capacity}"
            );
        }
    }
}

/// Payload bits per second of frames sent as fast as the link takes them.
async fn frames_through(params: BleParams) -> f64 {
    let network = SimNetwork::new(params, BleConfig::default());
    let (mut peripheral, mut central) = network.endpoints();
    let (phone, watch) = tokio::join!(central.next_link(), peripheral.next_link());
    let (mut phone, mut watch) = (phone.unwrap(), watch.unwrap());
    let total = 200_000usize;
    let start = tokio::time::Instant::now();
    let sender = tokio::spawn(async move {
        let mut left = total;
        while left > 0 {
            let len = left.min(8000);
            phone.sender.send(frame(len)).await.unwrap();
            left -= len;
        }
        // Kept until the receiver has it all: dropping a half ends the whole link, and
        // the receiver still grants credits back while it reads what is queued.
        phone.sender
    });
    let mut got = 0;
    while got < total {
        let overhead = frame(0).len();
        got += watch.receiver.recv().await.unwrap().unwrap().len() - overhead;
    }
    let _sender = sender.await.unwrap();
    8.0 * total as f64 / start.elapsed().as_secs_f64()
}

/// Replays the checked-in `ble_reassembly` fuzz corpus on stable.
#[test]
fn replay_ble_reassembly_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ble_reassembly");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("corpus folder") {
        let input = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        transport_ble::packet::fuzz_reassembly(&input);
        count += 1;
    }
    assert!(count > 0);
}

/// Writes seed inputs for the fuzzer: real frames fragmented at several MTUs.
#[test]
fn seed_corpus_is_well_formed() {
    for (mtu, len) in [(23, 10), (23, 200), (247, 1000), (185, 3000)] {
        let mut input = Vec::new();
        for packet in Fragmenter::new().fragment(&frame(len), packet_len(mtu)) {
            input.push(packet.len() as u8);
            input.extend_from_slice(&packet);
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../../fuzz/corpus/ble_reassembly/seed-mtu{mtu}-len{len}"
        ));
        if std::env::var_os("UPDATE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, &input).expect("write seed");
        }
        let seed = std::fs::read(&path).expect("the seed is checked in");
        assert_eq!(
            seed,
            input,
            "{} is not the seed it was made as",
            path.display()
        );
        // Packet by packet, the seed reassembles to exactly the frame it came from.
        let mut reassembler = transport_ble::packet::Reassembler::new(4096);
        let mut frames = Vec::new();
        let mut rest = &seed[..];
        while let Some((&len, tail)) = rest.split_first() {
            let (packet, next) = tail.split_at(usize::from(len));
            rest = next;
            match transport_ble::packet::Packet::decode(Bytes::copy_from_slice(packet)) {
                Ok(transport_ble::packet::Packet::Data { seq, last, body }) => {
                    if let Some(frame) = reassembler.push(seq, last, &body).expect("in order") {
                        frames.push(frame);
                    }
                }
                other => panic!("not a data packet: {other:?}"),
            }
        }
        assert_eq!(frames, vec![frame(len)], "mtu {mtu}, len {len}");
        transport_ble::packet::fuzz_reassembly(&seed);
    }
}

/// The radio goes silent in the middle of a file: both sides notice after the supervision
/// timeout, the phone reconnects, and the file resumes and arrives identical.
#[tokio::test(start_paused = true)]
async fn radio_loss_during_a_file_resumes_after_the_supervision_timeout() {
    use interconnect::{Config, ConnectionEvent, FilesConfig, Hub, Interconnect};
    use interconnect_proto::DeviceId;

    let network = SimNetwork::new(BleParams::modern(), BleConfig::default());
    let (peripheral, central) = network.endpoints();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let received = dir.join("received");
    std::fs::create_dir_all(&received).unwrap();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(&received);
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    let hub = Hub::new(central, phone);
    let watch = Interconnect::new(peripheral, Config::in_memory(DeviceId([1; 16])));
    let app = hub.register("ble", 1, None).await.unwrap();
    let mut events = app.events().unwrap();
    let conn = watch.instance("ble", None);
    assert!(conn.diagnosis(None).await.is_ok());

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let path = dir.join("watch.log");
    std::fs::write(&path, &data).unwrap();
    let transfer = conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    let done_at_cut = {
        use tokio_stream_shim::next;
        loop {
            let p = next(&mut progress).await.expect("progress");
            if p.total > 0 && p.bytes_done >= p.total / 3 {
                assert!(p.bytes_done < p.total, "cut mid-file");
                break p.bytes_done;
            }
        }
    };
    network.cut();
    let cut_at = tokio::time::Instant::now();
    // The watch notices at the supervision timeout, not before (virtual time).
    while watch.peer_device_status().code() == 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let noticed = cut_at.elapsed();
    let supervision = BleParams::modern().supervision_timeout;
    assert!(
        noticed >= supervision && noticed < supervision + Duration::from_secs(1),
        "the loss was noticed after {noticed:?}, the supervision timeout is {supervision:?}"
    );
    let resumed = tokio::spawn(async move {
        use tokio_stream_shim::next;
        let mut after = Vec::new();
        while let Some(p) = next(&mut progress).await {
            after.push(p.bytes_done);
            if p.bytes_done >= p.total {
                break;
            }
        }
        after
    });
    transfer.await.expect("the file is stored after the loss");
    assert!(network.links_made() >= 2, "the phone reconnected");
    let after = resumed.await.unwrap();
    assert!(
        after.iter().all(|b| *b >= done_at_cut),
        "resumed from {done_at_cut}, not restarted: {after:?}"
    );
    loop {
        match events.next().await.unwrap() {
            ConnectionEvent::File { path, .. } => {
                assert!(std::fs::read(path).unwrap() == data);
                break;
            }
            ConnectionEvent::Error { code, message } => panic!("{code}: {message}"),
            _ => {}
        }
    }
}

mod tokio_stream_shim {
    //! `StreamExt::next` for a progress stream, without another dependency.
    pub(crate) async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
    }
}

#[test]
fn a_packet_never_exceeds_an_attribute_value() {
    // An attribute value is at most 512 bytes (Core 5.x, Vol 3, Part F, 3.2.9): a GATT
    // server drops a longer write, a client cuts a longer notification. MTU − 3 is
    // larger from MTU 516 on.
    assert_eq!(packet_len(23), 20);
    assert_eq!(packet_len(247), 244);
    assert_eq!(packet_len(515), 512);
    assert_eq!(packet_len(517), 512);
    assert_eq!(packet_len(1020), 512, "a negotiated MTU above 517");
    assert!((0..4096).all(|mtu| packet_len(mtu) <= 512));
}

/// A packet half that says when it is dropped (the backend's connection goes with it).
struct Watched<T>(
    tokio::sync::mpsc::UnboundedSender<&'static str>,
    &'static str,
    T,
);

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

#[async_trait::async_trait]
impl PacketSender for Watched<()> {
    async fn send_packet(&mut self, _packet: Bytes) -> Result<(), interconnect::TransportError> {
        Ok(())
    }
    fn att_mtu(&self) -> usize {
        247
    }
}

#[async_trait::async_trait]
impl PacketReceiver for Watched<()> {
    async fn recv_packet(&mut self) -> Result<Option<Bytes>, interconnect::TransportError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_either_half_of_a_link_ends_the_whole_packet_link() {
    for dropped in ["receiver", "sender"] {
        let (tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
        let link = into_link(
            PacketLink {
                sender: Box::new(Watched(tx.clone(), "packet sender", ())),
                receiver: Box::new(Watched(tx, "packet receiver", ())),
            },
            &BleConfig::default(),
        );
        let kept = match dropped {
            "receiver" => {
                drop(link.receiver);
                Box::new(link.sender) as Box<dyn std::any::Any + Send>
            }
            _ => {
                drop(link.sender);
                Box::new(link.receiver)
            }
        };
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let half = tokio::time::timeout(Duration::from_secs(1), gone.recv())
                .await
                .unwrap_or_else(|_| panic!("after the {dropped} was dropped, only {seen:?} went"));
            seen.push(half.unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            ["packet receiver", "packet sender"],
            "{dropped} dropped"
        );
        drop(kept);
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_tells_its_radio_and_what_it_moved_over_the_last_seconds() {
    use interconnect::{Config, FilesConfig, Hub, Interconnect, Phy};
    use interconnect_proto::DeviceId;

    let params = BleParams::modern();
    let network = SimNetwork::new(params, BleConfig::default());
    let (peripheral, central) = network.endpoints();
    let temp = tempfile::tempdir().unwrap();
    let mut phone = Config::in_memory(DeviceId([2; 16]));
    let mut files = FilesConfig::new(temp.path().join("received"));
    files.reserve_free_bytes = 0;
    phone.files = Some(files);
    let hub = Hub::new(central, phone);
    let watch = Interconnect::new(peripheral, Config::in_memory(DeviceId([1; 16])));
    let app = hub.register("ble", 1, None).await.unwrap();
    let _events = app.events().unwrap();
    let conn = watch.instance("ble", None);
    assert!(conn.diagnosis(None).await.is_ok());

    let limits = conn.limits().expect("the link is up");
    let radio = limits.radio.expect("a radio link");
    assert_eq!(radio.att_mtu, params.att_mtu);
    assert_eq!(radio.phy, Some(Phy::M2));
    assert_eq!(radio.connection_interval, Some(params.conn_interval));
    assert_eq!(
        limits.max_message_len,
        watch.limits().unwrap().max_message_len
    );

    // A file of 2 seconds or so on air: the rate is that of the radio, within reason.
    let path = temp.path().join("watch.log");
    std::fs::write(&path, vec![7u8; 400_000]).unwrap();
    let transfer = conn.send_file(&path);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rate = conn.limits().unwrap().throughput.expect("a rate by now");
    let capacity = goodput_bps(&params) / 8.0;
    assert!(
        rate.sent as f64 > 0.5 * capacity && (rate.sent as f64) < 1.2 * capacity,
        "sent {} B/s on a radio of {capacity:.0} B/s",
        rate.sent
    );
    assert!(
        rate.received < rate.sent / 4,
        "acknowledgements only: {rate:?}"
    );
    transfer.await.unwrap();
    // Idle for longer than the window: no rate is claimed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(conn.limits().unwrap().throughput, None);
    drop(hub);
}

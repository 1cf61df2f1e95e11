//! What 60,000 channel opens from a watch cost the phone's session, against 60,000 pings
//! handled in the same run (the same framing and dispatch, no channel), and what a
//! message costs after them against one on a fresh link. Each open replaces the last
//! (one channel per package), so a table that kept closed channels, or a lookup that
//! scanned them, shows as a growing ratio.
//!
//! `cargo run --release -p interconnect-benches --bin channel_opens [opens]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use interconnect::sans_io::Session;
use interconnect::{Security, SessionConfig};
use interconnect_proto::{
    ChannelId, ContentType, DEFAULT_MAX_FRAME_LEN, Data, DeviceId, Exchange, Frame, Open, Ping,
    Role,
};

const PKG: &str = "com.example.opens";

fn frame(frame: Frame) -> Bytes {
    frame.to_bytes(DEFAULT_MAX_FRAME_LEN).expect("encodes")
}

/// A phone session whose link to a (plaintext) watch is up.
fn phone() -> Session {
    let now = interconnect::sans_io::Instant::ZERO;
    let config = |role, id| {
        SessionConfig::new(
            role,
            DeviceId([id; 16]),
            u64::from(id),
            Security::InsecurePlaintext,
        )
    };
    let mut watch = Session::new(config(Role::Watch, 1), [0x61; 32]);
    let mut phone = Session::new(config(Role::Phone, 2), [0x62; 32]);
    phone.register_app(PKG, 1, None);
    watch.link_up(now, DEFAULT_MAX_FRAME_LEN);
    phone.link_up(now, DEFAULT_MAX_FRAME_LEN);
    for _ in 0..4 {
        while let Some(f) = watch.poll_transmit(now) {
            phone.handle_frame(now, f);
        }
        while let Some(f) = phone.poll_transmit(now) {
            watch.handle_frame(now, f);
        }
    }
    drain(&mut phone, now);
    phone
}

fn drain(session: &mut Session, now: interconnect::sans_io::Instant) {
    while session.poll_transmit(now).is_some() {}
    while session.poll_event().is_some() {}
}

fn open(id: u32) -> Bytes {
    frame(Frame::Open(Open {
        channel: ChannelId(id),
        package: PKG.into(),
        signature: None,
        resume: false,
        received_seq: 0,
    }))
}

/// Time for `count` messages on `channel`.
fn messages(phone: &mut Session, channel: ChannelId, count: u64) -> Duration {
    let now = interconnect::sans_io::Instant::ZERO;
    let start = Instant::now();
    for seq in 1..=count {
        let data = frame(Frame::Data(Data {
            channel,
            seq,
            content_type: ContentType::Binary,
            exchange: Exchange::OneWay,
            payload: Bytes::from_static(b"step"),
        }));
        phone.handle_frame(now, data);
        drain(phone, now);
    }
    start.elapsed()
}

fn main() {
    let count: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60_000);
    let now = interconnect::sans_io::Instant::ZERO;

    let mut fresh = phone();
    fresh.handle_frame(now, open(1));
    drain(&mut fresh, now);
    let before = messages(&mut fresh, ChannelId(1), 10_000);

    let mut pings = phone();
    let start = Instant::now();
    for nonce in 0..u64::from(count) {
        pings.handle_frame(now, frame(Frame::Ping(Ping { nonce })));
        drain(&mut pings, now);
    }
    let ping_time = start.elapsed();

    let mut phone = phone();
    let start = Instant::now();
    for id in 1..=count {
        phone.handle_frame(now, open(id));
        drain(&mut phone, now);
    }
    let open_time = start.elapsed();
    let after = messages(&mut phone, ChannelId(count), 10_000);

    println!(
        "{count} opens: {:.1} ms ({:.2} µs each), {count} pings: {:.1} ms; opens/pings = {:.2}",
        open_time.as_secs_f64() * 1e3,
        open_time.as_secs_f64() * 1e6 / f64::from(count),
        ping_time.as_secs_f64() * 1e3,
        open_time.as_secs_f64() / ping_time.as_secs_f64()
    );
    println!(
        "channels held after them: {}; 10,000 messages after the opens vs on a fresh link: {:.2}",
        phone.channel_count(),
        after.as_secs_f64() / before.as_secs_f64()
    );
}

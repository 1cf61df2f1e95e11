//! A watch's firmware, Cortex-M4F: the whole watch-role core, crypto included, in one
//! image. One watch session and one phone session (the phone only to have a peer) meet
//! over an in-memory link: the Noise XX handshake, a channel opened by the watch, a
//! message each way, each acknowledged once taken. Then it prints the heap it used at
//! most and exits (semihosting, under QEMU's `mps2-an386`).
//!
//! The keys and seeds are constants here so the run is reproducible; a real watch draws
//! its seed from the hardware generator and keeps its key in flash.

#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::vec;
use bytes::Bytes;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use embedded_alloc::LlffHeap;
use interconnect_core::sans_io::{ChannelEvent, Event, Instant, Session};
use interconnect_core::{DeviceIdentity, NoiseConfig, Security, SessionConfig, TrustPolicy};
use interconnect_proto::{ContentType, Exchange, Role};

/// Heap given to the allocator; what the run used at most is printed.
const HEAP_SIZE: usize = 64 * 1024;
/// The frame limit of a BLE watch.
const MAX_FRAME_LEN: usize = 4096;
const PACKAGE: &str = "com.example.watchface";

/// The allocator, counting the most it ever held.
struct Counting {
    heap: LlffHeap,
    peak: AtomicUsize,
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.heap.alloc(layout) };
        self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: Counting = Counting {
    heap: LlffHeap::empty(),
    peak: AtomicUsize::new(0),
};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

/// Moves frames both ways until neither side has one to send.
fn shuttle(watch: &mut Session, phone: &mut Session, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(frame) = watch.poll_transmit(now) {
            phone.handle_frame(now, frame);
            moved = true;
        }
        while let Some(frame) = phone.poll_transmit(now) {
            watch.handle_frame(now, frame);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// The first message `session` reports, taken (acknowledged) at once; other events are
/// dropped.
fn take_message(session: &mut Session) -> Option<Bytes> {
    let mut found = None;
    while let Some(event) = session.poll_event() {
        if let Event::Channel(_, ChannelEvent::Message(message)) = event {
            session.taken(message.receipt);
            found.get_or_insert(message.payload);
        }
    }
    found
}

fn exchange() -> Result<(), &'static str> {
    let watch_key = DeviceIdentity::from_private_key([0x11; 32]);
    let phone_key = DeviceIdentity::from_private_key([0x22; 32]);
    let (watch_fp, phone_fp) = (watch_key.fingerprint(), phone_key.fingerprint());
    let config = |role, key: DeviceIdentity, peer, token| {
        let device_id = key.device_id();
        let noise = NoiseConfig::new(key).with_trust(TrustPolicy::Pinned(vec![peer]));
        let mut config = SessionConfig::new(role, device_id, token, Security::Noise(noise));
        config.max_frame_len = MAX_FRAME_LEN;
        config
    };
    let mut watch = Session::new(config(Role::Watch, watch_key, phone_fp, 1), [0xA1; 32]);
    let mut phone = Session::new(config(Role::Phone, phone_key, watch_fp, 2), [0xB2; 32]);
    phone.register_app(PACKAGE, 1, None);

    let now = Instant::from_millis(1);
    watch.link_up(now, MAX_FRAME_LEN);
    phone.link_up(now, MAX_FRAME_LEN);
    shuttle(&mut watch, &mut phone, now);
    if !watch.is_link_up() || watch.peer_fingerprint() != Some(phone_fp) {
        return Err("the handshake did not complete");
    }

    let channel = watch
        .open_channel(now, PACKAGE, None)
        .map_err(|_| "open refused")?;
    shuttle(&mut watch, &mut phone, now);
    if !watch.is_open(channel) {
        return Err("the channel did not open");
    }

    let hello = Bytes::from_static(b"{\"steps\":4210}");
    watch
        .send(channel, ContentType::Json, Exchange::OneWay, hello.clone())
        .map_err(|_| "send refused")?;
    shuttle(&mut watch, &mut phone, now);
    if take_message(&mut phone) != Some(hello) {
        return Err("the phone did not get the watch's message");
    }
    let reply = Bytes::from_static(b"{\"weather\":\"sun\"}");
    let phone_channel = channel;
    phone
        .send(phone_channel, ContentType::Json, Exchange::OneWay, reply.clone())
        .map_err(|_| "reply refused")?;
    shuttle(&mut watch, &mut phone, now);
    if take_message(&mut watch) != Some(reply) {
        return Err("the watch did not get the phone's reply");
    }
    shuttle(&mut watch, &mut phone, now);
    Ok(())
}

#[entry]
fn main() -> ! {
    {
        use core::mem::MaybeUninit;
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: runs once, before any allocation; the array is used by nothing else.
        unsafe { HEAP.heap.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
    }
    match exchange() {
        Ok(()) => {
            hprintln!("exchange ok");
            hprintln!("heap peak {} bytes", HEAP.peak.load(Ordering::Relaxed));
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(why) => {
            hprintln!("exchange failed: {}", why);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {}
}

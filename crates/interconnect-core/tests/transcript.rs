//! A recorded session between the watch and phone state machines, for a second
//! implementation to replay: `spec/session.txt` holds every frame of two links in plaintext
//! (the same frames travel sealed on a secure link): the Hellos, an open that is accepted
//! and one that is refused (1001), messages both ways with their acknowledgements, a file
//! cut by a link drop and resumed on the next link, and a close. `spec/wire.py` follows
//! it against WIRE.md's "Sessions, step by step". This test makes it and fails if the
//! file differs; `UPDATE_SESSION_TRANSCRIPT=1` rewrites it after an intended change.

use bytes::Bytes;
use interconnect_core::sans_io::*;
use interconnect_core::*;
use interconnect_proto::*;

const PKG: &str = "com.example.app";
const LINK_MAX: usize = 1024;

struct Recorder {
    now: Instant,
    watch: Session,
    phone: Session,
    lines: Vec<String>,
    /// The file the watch sends, and what the phone holds of it.
    file: Vec<u8>,
    held: Vec<u8>,
}

impl Recorder {
    fn note(&mut self, text: &str) {
        self.lines.push(format!("# {text}"));
    }

    /// Moves frames both ways, one at a time, until both are quiet or `stop` says so
    /// of a frame just delivered. Apps take every message; the phone writes every byte.
    fn drive(&mut self, stop: impl Fn(&str, &Frame) -> bool) {
        loop {
            let mut moved = false;
            for side in ["W", "P"] {
                let frame = match side {
                    "W" => self.watch.poll_transmit(self.now),
                    _ => self.phone.poll_transmit(self.now),
                };
                let Some(frame) = frame else { continue };
                moved = true;
                self.lines.push(format!("{side}> {}", hex::encode(&frame)));
                let decoded = Frame::decode(frame.clone(), LINK_MAX).expect("our frames decode");
                match side {
                    "W" => self.phone.handle_frame(self.now, frame),
                    _ => self.watch.handle_frame(self.now, frame),
                }
                self.events();
                if stop(side, &decoded) {
                    return;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn events(&mut self) {
        while let Some(event) = self.watch.poll_event() {
            match event {
                Event::Channel(_, ChannelEvent::Message(m)) => self.watch.taken(m.receipt),
                Event::FileRead {
                    transfer,
                    offset,
                    len,
                    ..
                } => {
                    let end = (offset + len) as usize;
                    let data = Bytes::copy_from_slice(&self.file[offset as usize..end]);
                    let digest =
                        (end == self.file.len()).then(|| *blake3::hash(&self.file).as_bytes());
                    self.watch.file_read(transfer, offset, data, digest);
                }
                _ => {}
            }
        }
        while let Some(event) = self.phone.poll_event() {
            match event {
                Event::Channel(_, ChannelEvent::Message(m)) => self.phone.taken(m.receipt),
                Event::FileOffered {
                    channel, transfer, ..
                } => self
                    .phone
                    .accept_file(channel, transfer, self.held.len() as u64),
                Event::FileData {
                    channel,
                    transfer,
                    offset,
                    data,
                    ..
                } => {
                    assert_eq!(offset as usize, self.held.len());
                    self.held.extend_from_slice(&data);
                    self.phone
                        .file_written(channel, transfer, self.held.len() as u64);
                    if self.held.len() == self.file.len() {
                        assert_eq!(self.held, self.file);
                        self.phone.file_stored(channel, transfer);
                    }
                }
                _ => {}
            }
        }
    }

    fn link_up(&mut self, n: u32) {
        self.lines.push(format!("-- link {n}"));
        self.watch.link_up(self.now, LINK_MAX);
        self.phone.link_up(self.now, LINK_MAX);
    }
}

fn transcript() -> String {
    let plaintext = |role, id: u8, token| {
        let mut config =
            SessionConfig::new(role, DeviceId([id; 16]), token, Security::InsecurePlaintext);
        config.max_frame_len = LINK_MAX;
        // One chunk in flight at a time, so the link can be cut mid-file.
        config.file_window = 900;
        config
    };
    let mut phone = Session::new(plaintext(Role::Phone, 2, 0x2222), [0x5A; 32]);
    phone.register_app(PKG, 7, None);
    let mut r = Recorder {
        now: Instant::ZERO,
        watch: Session::new(plaintext(Role::Watch, 1, 0x1111), [0x5B; 32]),
        phone,
        lines: Vec::new(),
        file: (0..3000u32).map(|i| (i % 251) as u8).collect(),
        held: Vec::new(),
    };
    r.link_up(1);
    r.note("Hellos; an open accepted, an open of a package not installed refused (1001)");
    let ch = r.watch.open_channel(r.now, PKG, None).unwrap();
    r.watch
        .open_channel(r.now, "com.example.missing", None)
        .unwrap();
    r.drive(|_, _| false);
    r.note("three messages from the watch, one from the phone, each acknowledged once taken");
    for text in ["m1", "m2", "m3"] {
        let payload = Bytes::copy_from_slice(text.as_bytes());
        r.watch
            .send(ch, ContentType::Binary, Exchange::OneWay, payload)
            .unwrap();
    }
    r.phone
        .send(
            ch,
            ContentType::Binary,
            Exchange::OneWay,
            Bytes::from_static(b"p1"),
        )
        .unwrap();
    r.drive(|_, _| false);
    r.note("a 3,000-byte file (byte i is i % 251); the link drops after its first acknowledgement");
    r.watch.send_file(r.now, ch, "notes.bin", 3000, 0).unwrap();
    r.drive(|side, frame| side == "P" && matches!(frame, Frame::FileAck(_)));
    r.watch.link_down(r.now);
    r.phone.link_down(r.now);
    r.link_up(2);
    r.note("the same tokens: the channel resumes, the file is offered again and goes on where the phone's copy ends");
    r.drive(|_, _| false);
    assert_eq!(r.held, r.file, "the file arrived whole");
    r.note("the watch closes the channel");
    r.watch.close(ch, Code::OTHERS, "done");
    r.drive(|_, _| false);
    let mut out = String::from(
        "# A session between the interconnect watch and phone, every frame in order, in\n\
         # plaintext mode. W> watch to phone, P> phone to watch; -- link N starts a link.\n\
         # Made by crates/interconnect-core/tests/transcript.rs; followed by spec/wire.py.\n",
    );
    for line in r.lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_recorded_session_is_what_the_state_machines_say() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/session.txt");
    let made = transcript();
    if std::env::var_os("UPDATE_SESSION_TRANSCRIPT").is_some() {
        std::fs::write(path, &made).expect("write spec/session.txt");
    }
    let on_disk = std::fs::read_to_string(path).expect("spec/session.txt is checked in");
    assert!(
        on_disk == made,
        "spec/session.txt is stale: run with UPDATE_SESSION_TRANSCRIPT=1 if the change is intended"
    );
}

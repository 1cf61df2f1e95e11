//! A watch that sends file chunks past its window, reading the acknowledgements but
//! never waiting for them, to a phone that writes the file to disk. How much the phone
//! takes in before it stops reading (backpressure), and the process's peak memory
//! against its memory before the flood. Both ends run in this process (the flooding end
//! holds one chunk and discards what it reads). Plaintext, so the chunks can be written
//! raw.
//!
//! `cargo run --release -p interconnect-benches --bin chunk_flood_rss [MiB=2000]`; fails
//! when the peak exceeds 64 MiB.

use std::time::Duration;

use bytes::Bytes;
use interconnect::{Config, FilesConfig, Hub, Security};
use interconnect_benches::process::{first_arg, peak_rss_kib, scratch_dir};
use interconnect_benches::raw::{read_frame, watch_hello};
use interconnect_proto::{
    ChannelId, DEFAULT_MAX_FRAME_LEN, DeviceId, FileChunk, FileOffer, Frame, MAX_FRAME_LEN, Open,
    TransferId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_tcp::TcpListener;

const PKG: &str = "com.example.chunks";
const CHUNK: usize = 200 * 1024;

fn bytes(frame: Frame) -> Vec<u8> {
    frame
        .to_bytes(DEFAULT_MAX_FRAME_LEN)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = first_arg(2000)?;
    let dir = scratch_dir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    let mut config = Config::in_memory(DeviceId([2; 16]));
    config.session.security = Security::InsecurePlaintext;
    config.files = Some(FilesConfig::new(dir.path()));
    let hub = Hub::new(listener, config);
    let _app = hub.register(PKG, 1, None).await?;

    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let channel = ChannelId(1);
    let transfer = TransferId(1);
    let size = (mib << 20) + 1;
    let mut hello = watch_hello();
    hello.extend(bytes(Frame::Open(Open {
        channel,
        package: PKG.into(),
        signature: None,
        resume: false,
        received_seq: 0,
    })));
    hello.extend(bytes(Frame::FileOffer(FileOffer {
        channel,
        transfer,
        name: "flood.bin".into(),
        size,
        modified: 0,
    })));
    write.write_all(&hello).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut read)).await??;
        if let Ok(Frame::FileAccept(_)) = Frame::decode(frame, MAX_FRAME_LEN) {
            break;
        }
    }
    // The acknowledgements are read (and ignored), so the phone's writes never stall.
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let before = peak_rss_kib().unwrap_or(0);
    let data = Bytes::from(vec![0x5A; CHUNK]);
    let mut offset = 0u64;
    while offset + (CHUNK as u64) < size {
        let frame = bytes(Frame::FileChunk(FileChunk {
            channel,
            transfer,
            offset,
            data: data.clone(),
            digest: None,
        }));
        match tokio::time::timeout(Duration::from_secs(5), write.write_all(&frame)).await {
            Ok(Ok(())) => offset += CHUNK as u64,
            _ => break,
        }
    }
    let after = peak_rss_kib().unwrap_or(0);
    println!(
        "file chunks sent past the window: {:.0} MiB of {mib} MiB taken in; peak RSS {:.1} MiB \
         before the flood, {:.1} MiB after (ratio {:.2})",
        offset as f64 / f64::from(1 << 20),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after as f64 / before.max(1) as f64
    );
    if after > 64 * 1024 {
        return Err("peak RSS over 64 MiB: the phone buffers what it has not written".into());
    }
    Ok(())
}

//! Files of every size arrive identical, named safely, across cuts.

use super::*;

#[tokio::test(start_paused = true)]
async fn files_of_edge_sizes_arrive_identical() {
    let mut s = setup().await;
    let chunk = chunk_len();
    for (i, len) in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        roundtrip(&mut s, len, &name, &name).await;
    }
}

#[tokio::test(start_paused = true)]
async fn partial_files_untouched_for_over_a_week_go_when_the_next_file_arrives() {
    let mut s = setup().await;
    let partial_dir = s.recv_dir.path().join(".partial");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);
    let now = std::time::SystemTime::now();
    for (name, age) in [
        ("stale.part", week + Duration::from_secs(3600)),
        ("recent.part", week - Duration::from_secs(3600)),
    ] {
        let file = std::fs::File::create(partial_dir.join(name)).unwrap();
        file.set_modified(now - age).unwrap();
    }
    let path = write_file(s.send_dir.path(), "next.bin", &content(1000, 1));
    s.conn.send_file(&path).await.unwrap();
    assert!(matches!(
        next_file_event(&mut s.app_events).await,
        ConnectionEvent::File { .. }
    ));
    assert_eq!(
        partial_files(s.recv_dir.path()),
        [partial_dir.join("recent.part")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_64_mib_file_arrives_identical_with_progress() {
    let mut s = setup_with(Faults::default(), |_| {}).await;
    let len = 64 << 20;
    let data = content(len, 64);
    let path = write_file(s.send_dir.path(), "big.bin", &data);
    let transfer = s.conn.send_file(&path);
    let mut progress = transfer.progress_stream();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(p) = progress.next().await {
            seen.push(p);
            if p.total > 0 && p.bytes_done == p.total {
                break;
            }
        }
        seen
    });
    transfer.await.unwrap();
    let seen = watcher.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done),
        "progress only grows"
    );
    assert_eq!(
        seen.last().map(|p| (p.bytes_done, p.total)),
        Some((len as u64, len as u64))
    );
    // The receiving app sees progress too, one event per MiB, before the file.
    let mut received = Vec::new();
    let (path, size) = loop {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::FileProgress {
                bytes_done, total, ..
            } => {
                assert_eq!(total, len as u64);
                received.push(bytes_done);
            }
            ConnectionEvent::File { path, size, .. } => break (path, size),
            _ => {}
        }
    };
    assert!(received.is_sorted() && received.len() == 63, "{received:?}");
    assert!(received.iter().all(|b| *b < len as u64));
    assert_eq!(size, len as u64);
    assert!(std::fs::read(path).unwrap() == data);
}

#[tokio::test(start_paused = true)]
async fn same_name_twice_gets_a_numbered_name() {
    let mut s = setup().await;
    roundtrip(&mut s, 100, "photo.jpg", "photo.jpg").await;
    roundtrip(&mut s, 200, "photo.jpg", "photo (1).jpg").await;
    assert_eq!(
        stored_files(s.recv_dir.path()),
        vec!["photo (1).jpg", "photo.jpg"]
    );
}

#[tokio::test(start_paused = true)]
async fn unsafe_sender_names_are_sanitised() {
    let mut s = setup().await;
    roundtrip(&mut s, 10, "con", "_con").await;
    roundtrip(&mut s, 10, "...", "file").await;
    let long = "x".repeat(250) + ".txt";
    roundtrip(&mut s, 10, &long, &long).await;
}

#[tokio::test(start_paused = true)]
async fn a_transfer_cut_20_times_arrives_identical() {
    let mut s = setup().await;
    // Large against the window (256 KiB) and the stretches between cuts (at most 1/50):
    // progress updates coalesce when the machine is busy, and 20 cuts must fit in the
    // file even when each comes a window late (with 4 MiB, 18 cuts once sufficed).
    let len = 16 << 20;
    let data = content(len, 20);
    let path = write_file(s.send_dir.path(), "cut.bin", &data);
    let transfer = s.conn.send_file(&path);
    let mut rng = StdRng::seed_from_u64(20);
    let mut cuts = 0;
    let mut last = 0;
    let mut progress = transfer.progress_stream();
    let cutter = {
        let network = s.network.clone();
        tokio::spawn(async move {
            // Cut whenever the receiver has acknowledged another random stretch.
            let mut next_cut = rng.random_range(1..(len as u64 / 50));
            while let Some(p) = progress.next().await {
                if cuts < 20 && p.bytes_done >= last + next_cut {
                    last = p.bytes_done;
                    next_cut = rng.random_range(1..(len as u64 / 50));
                    network.cut();
                    cuts += 1;
                }
                if p.total > 0 && p.bytes_done == p.total {
                    break;
                }
            }
            cuts
        })
    };
    transfer.await.unwrap();
    assert_eq!(cutter.await.unwrap(), 20, "the link was cut 20 times");
    assert!(s.network.links_made() >= 21);
    let ConnectionEvent::File { path, .. } = next_file_event(&mut s.app_events).await else {
        panic!("expected the file");
    };
    assert!(
        std::fs::read(path).unwrap() == data,
        "identical after 20 cuts"
    );
    assert!(partial_files(s.recv_dir.path()).is_empty());
}

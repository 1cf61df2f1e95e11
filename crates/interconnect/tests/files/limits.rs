//! Limits, a full disk, cancels from either side, and messages beside files.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_file_over_the_receivers_limit_is_refused_with_4001() {
    let mut s = setup_with(mock_faults(), |c| {
        if let Some(files) = &mut c.files {
            files.max_file_size = 1000;
        }
    })
    .await;
    let path = write_file(s.send_dir.path(), "big.bin", &content(1001, 1));
    let error = s.conn.send_file(&path).await.unwrap_err();
    assert_eq!(error.code(), Code::TOO_LARGE);
    assert!(matches!(
        next_file_event(&mut s.app_events).await,
        ConnectionEvent::Error {
            code: Code::TOO_LARGE,
            ..
        }
    ));
    assert!(stored_files(s.recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_refuses_the_file_with_4005_on_both_sides() {
    let mut s = setup_with(mock_faults(), |c| {
        if let Some(files) = &mut c.files {
            files.reserve_free_bytes = u64::MAX / 2;
        }
    })
    .await;
    let path = write_file(s.send_dir.path(), "a.bin", &content(10, 1));
    let error = s.conn.send_file(&path).await.unwrap_err();
    assert_eq!(error.code(), Code::STORAGE);
    let ConnectionEvent::Error { code, message } = next_file_event(&mut s.app_events).await else {
        panic!("expected an error");
    };
    assert_eq!(code, Code::STORAGE);
    assert!(message.contains("free space"), "{message}");
    assert!(partial_files(s.recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_missing_local_file_is_a_clear_error() {
    let s = setup().await;
    let error = s
        .conn
        .send_file(s.send_dir.path().join("nope"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Io(_)), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn the_sender_can_cancel() {
    let mut s = setup().await;
    let path = write_file(s.send_dir.path(), "cancel.bin", &content(8 << 20, 3));
    let transfer = s.conn.send_file(&path);
    {
        let mut progress = transfer.progress_stream();
        while let Some(p) = progress.next().await {
            if p.bytes_done > 0 {
                break;
            }
        }
    }
    transfer.cancel();
    assert_eq!(transfer.await.unwrap_err().code(), Code::CANCELLED);
    let ConnectionEvent::Error { code, .. } = next_file_event(&mut s.app_events).await else {
        panic!("expected an error");
    };
    assert_eq!(code, Code::CANCELLED);
    // The error is reported once the partial file is gone.
    assert!(partial_files(s.recv_dir.path()).is_empty());
    assert!(stored_files(s.recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_receiver_can_cancel() {
    let mut s = setup().await;
    let path = write_file(s.send_dir.path(), "refused.bin", &content(8 << 20, 4));
    let transfer = s.conn.send_file(&path);
    loop {
        if let ConnectionEvent::FileIncoming { transfer, name, .. } =
            next_event(&mut s.app_events).await
        {
            assert_eq!(name, "refused.bin");
            s.app.cancel_incoming(transfer).unwrap();
            break;
        }
    }
    assert_eq!(transfer.await.unwrap_err().code(), Code::CANCELLED);
    assert!(stored_files(s.recv_dir.path()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn messages_are_not_held_up_by_files_and_transfers_run_together() {
    let mut s = setup().await;
    let a = write_file(s.send_dir.path(), "a.bin", &content(2 << 20, 1));
    let b = write_file(s.send_dir.path(), "b.bin", &content(2 << 20, 2));
    let first = s.conn.send_file(&a);
    let second = s.conn.send_file(&b);
    // Let both transfers get going, then send a message.
    {
        let mut progress = first.progress_stream();
        while let Some(p) = progress.next().await {
            if p.bytes_done > 0 {
                break;
            }
        }
    }
    let urgent = s.conn.send(&"urgent");
    let mut got = Vec::new();
    while got.is_empty() {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::Message(m) => got.push(m.decode::<String>().unwrap()),
            ConnectionEvent::File { name, .. } => got.push(name),
            _ => {}
        }
    }
    urgent.await.unwrap();
    assert!(
        first.progress().bytes_done < first.progress().total,
        "the message overtook the file"
    );
    // Both transfers make progress before either finishes: they run together, not one
    // after the other.
    {
        let (mut a, mut b) = (first.progress_stream(), second.progress_stream());
        loop {
            let (pa, pb) = (first.progress(), second.progress());
            if pa.bytes_done > 0 && pb.bytes_done > 0 {
                assert!(
                    pa.bytes_done < pa.total && pb.bytes_done < pb.total,
                    "one transfer finished before the other started: {pa:?} {pb:?}"
                );
                break;
            }
            assert!(
                pa.total == 0 || pa.bytes_done < pa.total,
                "the first finished before the second moved: {pb:?}"
            );
            tokio::select! {
                _ = a.next() => {}
                _ = b.next() => {}
            }
        }
    }
    first.await.unwrap();
    second.await.unwrap();
    while got.len() < 3 {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::Message(m) => got.push(m.decode::<String>().unwrap()),
            ConnectionEvent::File { name, .. } => got.push(name),
            _ => {}
        }
    }
    assert_eq!(got[0], "urgent");
    got.sort();
    assert_eq!(got, vec!["a.bin", "b.bin", "urgent"]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_takes_no_files_is_never_offered_one() {
    // 50 ms each way: a refusal by the peer would take a round trip.
    let faults = Faults {
        latency: Duration::from_millis(50),
        ..mock_faults()
    };
    let mut s = setup_with(faults, |c| c.files = None).await;
    let path = write_file(s.send_dir.path(), "a.bin", &content(10, 1));
    let started = tokio::time::Instant::now();
    let error = s.conn.send_file(&path).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "refused here, at once");
    assert_eq!(
        error,
        Error::Transfer {
            code: Code::OTHERS,
            reason: "the peer device does not accept files".into()
        }
    );
    // Messages go on as before.
    let sent = s.conn.send(&1u32);
    loop {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::Message(m) => break assert_eq!(m.decode::<u32>().unwrap(), 1),
            ConnectionEvent::Open { .. } => continue,
            other => panic!("no file event reaches the app: {other:?}"),
        }
    }
    sent.await.unwrap();
}

/// A receiving app that is asked about each file first.
async fn asking(wait: Duration) -> Setup {
    setup_with(mock_faults(), |c| {
        if let Some(files) = &mut c.files {
            files.ask = Some(wait);
        }
    })
    .await
}

/// The next `FileOffered`: its transfer, name and size.
async fn offered(events: &mut Events) -> (u32, String, u64) {
    let (transfer, name, size, _) = offered_with_meta(events).await;
    (transfer, name, size)
}

/// The next `FileOffered`, with its metadata.
async fn offered_with_meta(events: &mut Events) -> (u32, String, u64, bytes::Bytes) {
    loop {
        match next_event(events).await {
            ConnectionEvent::FileOffered {
                transfer,
                name,
                size,
                meta,
            } => return (transfer, name, size, meta),
            ConnectionEvent::FileIncoming { .. } => panic!("asked before it arrives"),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_receiving_app_refuses_a_file_with_a_code_and_reason_its_sender_gets() {
    let mut s = asking(Duration::from_secs(30)).await;
    let path = write_file(s.send_dir.path(), "holiday.mov", &content(200_000, 4));
    let transfer = s.conn.send_file(&path);
    let (id, name, size) = offered(&mut s.app_events).await;
    assert_eq!((name.as_str(), size), ("holiday.mov", 200_000));
    s.app
        .reject_file(id, Code::CANCELLED, "no room for videos")
        .unwrap();
    assert_eq!(
        transfer.await.unwrap_err(),
        Error::Transfer {
            code: Code::CANCELLED,
            reason: "no room for videos".into()
        }
    );
    assert!(stored_files(s.recv_dir.path()).is_empty());
    assert!(
        partial_files(s.recv_dir.path()).is_empty(),
        "no byte was written"
    );
}

#[tokio::test(start_paused = true)]
async fn the_receiving_app_accepts_a_file_into_a_path_it_chooses_never_over_a_file() {
    let mut s = asking(Duration::from_secs(30)).await;
    let data = content(300_000, 5);
    let chosen = s.recv_dir.path().join("chosen.bin");
    let path = write_file(s.send_dir.path(), "a.bin", &data);
    let transfer = s.conn.send_file(&path);
    let (id, _, _) = offered(&mut s.app_events).await;
    s.app.accept_file(id, Some(chosen.clone())).unwrap();
    transfer.await.unwrap();
    let ConnectionEvent::File { path: stored, .. } = next_file_event(&mut s.app_events).await
    else {
        panic!("expected the file");
    };
    assert_eq!(stored, chosen);
    assert!(std::fs::read(&chosen).unwrap() == data);

    // The same path again: the file there stays as it is; the transfer fails with 4005.
    let other = write_file(s.send_dir.path(), "b.bin", &content(1000, 6));
    let transfer = s.conn.send_file(&other);
    let (id, _, _) = offered(&mut s.app_events).await;
    s.app.accept_file(id, Some(chosen.clone())).unwrap();
    assert_eq!(transfer.await.unwrap_err().code(), Code::STORAGE);
    assert!(
        std::fs::read(&chosen).unwrap() == data,
        "never written again"
    );
}

#[tokio::test(start_paused = true)]
async fn an_offer_the_app_does_not_answer_is_accepted_once_its_time_ran_out() {
    let mut s = asking(Duration::from_secs(30)).await;
    let data = content(50_000, 7);
    let path = write_file(s.send_dir.path(), "quiet.bin", &data);
    let started = tokio::time::Instant::now();
    let transfer = s.conn.send_file(&path);
    offered(&mut s.app_events).await;
    transfer.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "it waited for the app"
    );
    let ConnectionEvent::File { path: stored, .. } = next_file_event(&mut s.app_events).await
    else {
        panic!("expected the file");
    };
    assert!(std::fs::read(stored).unwrap() == data);
}

#[tokio::test(start_paused = true)]
async fn the_receiving_app_decides_on_the_metadata_the_sender_attached() {
    let mut s = asking(Duration::from_secs(30)).await;
    let run = write_file(s.send_dir.path(), "run.gpx", &content(20_000, 8));
    let video = write_file(s.send_dir.path(), "clip.mov", &content(30_000, 9));
    let keep = s
        .conn
        .send_file_with_meta(&run, &serde_json::json!({"kind": "workout", "km": 5}));
    let drop_it = s
        .conn
        .send_file_with_meta(&video, &serde_json::json!({"kind": "video"}));
    // The accepted file may start arriving before the second offer is seen: the
    // metadata rides with its arrival too.
    let (mut decided, mut accepted, mut arrived) = (0, false, None);
    while decided < 2 || arrived.is_none() {
        match next_event(&mut s.app_events).await {
            ConnectionEvent::FileOffered {
                transfer,
                name,
                meta,
                ..
            } => {
                decided += 1;
                let meta: serde_json::Value = decode_meta(&meta).unwrap();
                if meta["kind"] == "workout" {
                    assert_eq!((name.as_str(), meta["km"].as_u64()), ("run.gpx", Some(5)));
                    s.app.accept_file(transfer, None).unwrap();
                    accepted = true;
                } else {
                    s.app
                        .reject_file(transfer, Code::CANCELLED, "no videos")
                        .unwrap();
                }
            }
            ConnectionEvent::FileIncoming { meta, .. } => {
                assert!(
                    accepted && arrived.is_none(),
                    "only the accepted file arrives, once"
                );
                arrived = Some(decode_meta::<serde_json::Value>(&meta).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(arrived.unwrap()["km"], 5);
    keep.await.unwrap();
    assert_eq!(drop_it.await.unwrap_err().code(), Code::CANCELLED);
    // Metadata past 4,096 bytes is refused before anything is offered.
    let big = serde_json::json!({"notes": "x".repeat(5000)});
    let error = s.conn.send_file_with_meta(&run, &big).await.unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { max: 4096, .. }),
        "{error:?}"
    );
}

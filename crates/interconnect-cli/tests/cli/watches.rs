//! Several watches and one phone, as a user runs them: a phone with the defaults serves
//! one watch and tells a second it is not trusted (4007, at once); a phone started with
//! `--max-watches` serves both, and each event line says which watch it came from.

use super::*;

/// A `watch` command with its own state directory (its own device and key).
fn other_watch(phone: &Phone, home: &Path, args: &[&str]) -> (bool, Vec<Value>) {
    let mut all = vec![
        "watch",
        "--connect",
        &phone.addr,
        "--package",
        "com.example.cli",
    ];
    all.extend_from_slice(args);
    run_in(home, &all)
}

#[test]
fn a_default_phone_tells_a_second_watch_4007_and_a_phone_of_several_serves_both() {
    let second_home = tempfile::tempdir().expect("temp dir");

    let phone = Phone::start();
    let (ok, out) = phone.watch(&["diagnosis"]);
    assert!(ok, "{out:?}");
    let (ok, out) = other_watch(&phone, second_home.path(), &["diagnosis"]);
    assert!(!ok, "{out:?}");
    assert_eq!(out[0]["code"], 4007, "told, not timed out: {out:?}");
    drop(phone);

    // Another phone (another key): the watches meet it as new ones.
    let second_home = tempfile::tempdir().expect("temp dir");
    let phone = Phone::start_with(&["--max-watches", "4", "--admit-secs", "60"]);
    let (ok, out) = phone.watch(&["--name", "Alice's watch", "send", r#"{"from": "first"}"#]);
    assert!(ok, "{out:?}");
    let (ok, out) = other_watch(
        &phone,
        second_home.path(),
        &["send", r#"{"from": "second"}"#],
    );
    assert!(ok, "{out:?}");
    let first = phone.expect_event("message");
    let second = phone.expect_event("message");
    assert_eq!(first["data"]["from"], "first");
    assert_eq!(first["name"], "Alice's watch", "the name it gave: {first}");
    assert_eq!(second["data"]["from"], "second");
    let (a, b) = (first["watch"].as_str(), second["watch"].as_str());
    assert!(a.is_some() && b.is_some() && a != b, "{first} {second}");
}

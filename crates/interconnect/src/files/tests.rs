//! File names, partial files and storing, on a real file system.

use super::*;
use interconnect_proto::MAX_FILE_NAME_LEN;

#[test]
fn hostile_names_stay_inside_the_folder() {
    for hostile in [
        "../../etc/passwd",
        "a/b",
        "/abs/path",
        "..",
        ".",
        "",
        "\\\\server\\share\\x",
    ] {
        let name = sanitize_file_name(hostile);
        assert!(!name.contains('/') && !name.contains('\\') && name != ".." && name != ".");
        assert!(!name.is_empty());
    }
    assert_eq!(sanitize_file_name("con"), "_con");
    assert_eq!(sanitize_file_name("LPT1.log"), "_LPT1.log");
    assert_eq!(sanitize_file_name("COMA"), "COMA");
    let long = format!("{}.txt", "é".repeat(200));
    let cut = sanitize_file_name(&long);
    assert!(cut.len() <= MAX_FILE_NAME_LEN && cut.ends_with(".txt"));
}

#[test]
fn invisible_and_direction_changing_characters_are_removed() {
    // Displayed as "exe.png", it is an .exe.
    assert_eq!(sanitize_file_name("\u{202e}gnp.exe"), "gnp.exe");
    assert_eq!(
        sanitize_file_name("re\u{200b}port\u{feff}.pdf"),
        "report.pdf"
    );
    assert_eq!(
        sanitize_file_name("a\u{2066}b\u{2069}\u{200d}.txt"),
        "ab.txt"
    );
    assert_eq!(sanitize_file_name("\u{200b}\u{202e}"), "file");
    // Visible letters of any script stay.
    assert_eq!(sanitize_file_name("фото 照片.jpg"), "фото 照片.jpg");
}

#[test]
fn the_space_of_transfers_in_progress_is_reserved() {
    let mut config = FilesConfig::new("/unused");
    config.reserve_free_bytes = 64 << 20;
    let mib = |n: u64| n << 20;
    // 100 MiB free, 64 MiB reserved: one 30 MiB file fits, a second beside it not.
    assert_eq!(check_space(mib(100), mib(30), 0, &config), Ok(()));
    assert_eq!(
        check_space(mib(100), mib(30), mib(30), &config),
        Err(mib(124))
    );
    // Once the first has written 25 MiB, 5 MiB of it are left to reserve.
    assert_eq!(check_space(mib(75), mib(5), mib(5), &config), Ok(()));
    assert_eq!(check_space(u64::MAX, u64::MAX, u64::MAX, &config), Ok(()));
}

#[test]
fn collisions_get_numbered_names() {
    let mut names = candidate_names("photo.jpg");
    assert_eq!(names.next().as_deref(), Some("photo.jpg"));
    assert_eq!(names.next().as_deref(), Some("photo (1).jpg"));
    assert_eq!(
        candidate_names("README").nth(2).as_deref(),
        Some("README (2)")
    );
}

/// The marker of a stored file answers a later offer of it: the same transfer offered
/// again (its sender never heard, by whichever process) is already stored; a new
/// transfer of the same file by the same process is sent again on purpose.
#[test]
fn a_stored_file_is_stored_again_only_when_its_sender_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("track.bin");
    std::fs::write(&stored, [7u8; 10]).unwrap();
    let marker = dir.path().join("track.stored");
    let (s1, s2) = (11, 22);
    let (t1, t2) = (TransferId(1), TransferId(3));
    write_marker(&marker, s1, t1, &stored).unwrap();
    // The sending process offers the same transfer again after the phone restarted
    // before it heard: stored already.
    assert_eq!(
        already_stored(&marker, 10, s1, t1).as_deref(),
        Some("track.bin")
    );
    // The same process sends the file again, a new transfer: stored again.
    assert_eq!(already_stored(&marker, 10, s1, t2), None);
    // A restarted sender offers it again: stored already, and the marker now names it.
    assert_eq!(
        already_stored(&marker, 10, s2, t1).as_deref(),
        Some("track.bin")
    );
    assert_eq!(
        already_stored(&marker, 10, s2, t1).as_deref(),
        Some("track.bin")
    );
    assert_eq!(already_stored(&marker, 10, s2, t2), None);
    // The stored file changed or went: nothing is already stored.
    assert_eq!(already_stored(&marker, 11, s1, t1), None);
    std::fs::remove_file(&stored).unwrap();
    assert_eq!(already_stored(&marker, 10, s2, t1), None);
}

/// A marker of an earlier release (its sender alone) still answers a restarted sender.
#[test]
fn a_marker_without_its_transfer_still_answers_another_sender() {
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("a.txt");
    std::fs::write(&stored, b"abc").unwrap();
    let marker = dir.path().join("a.stored");
    std::fs::write(&marker, format!("5\n{}", stored.display())).unwrap();
    assert_eq!(already_stored(&marker, 3, 5, TransferId(1)), None);
    assert_eq!(
        already_stored(&marker, 3, 6, TransferId(1)).as_deref(),
        Some("a.txt")
    );
}

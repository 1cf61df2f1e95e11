//! Device identities, fingerprints and the known-peers file, as files on disk.

use interconnect::IdentityFile;
use interconnect::{DeviceIdentity, Fingerprint, IdentityError, KnownPeers};
use sha2::{Digest, Sha256};

#[test]
fn the_fingerprint_is_sha256_of_the_public_key_in_colon_hex() {
    let identity = DeviceIdentity::from_private_key([7; 32]);
    let digest = Sha256::digest(identity.public_key());
    let expected: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    let text = identity.fingerprint().to_string();
    assert_eq!(text, expected.join(":"));
    assert_eq!(text.len(), 32 * 3 - 1);
    // Parsed back with or without colons, in either case.
    assert_eq!(text.parse::<Fingerprint>().unwrap(), identity.fingerprint());
    let plain = text.replace(':', "").to_lowercase();
    assert_eq!(
        plain.parse::<Fingerprint>().unwrap(),
        identity.fingerprint()
    );
    let error = "AB:CD".parse::<Fingerprint>().unwrap_err();
    assert!(error.to_string().contains("not a fingerprint"), "{error}");
}

#[test]
fn an_identity_survives_save_and_load_and_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.identity");
    let identity = DeviceIdentity::generate();
    identity.save(&path).unwrap();
    let loaded = DeviceIdentity::load(&path).unwrap();
    assert_eq!(loaded.public_key(), identity.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // load_or_generate keeps an existing identity and creates a missing one (and its folder).
    let again = DeviceIdentity::load_or_generate(&path).unwrap();
    assert_eq!(again.fingerprint(), identity.fingerprint());
    let fresh_path = dir.path().join("new/dir/device.identity");
    let fresh = DeviceIdentity::load_or_generate(&fresh_path).unwrap();
    assert_eq!(
        DeviceIdentity::load(&fresh_path).unwrap().fingerprint(),
        fresh.fingerprint()
    );
    assert_ne!(fresh.fingerprint(), identity.fingerprint());
}

#[test]
fn a_damaged_identity_file_is_a_clear_error_not_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.identity");
    std::fs::write(&path, "interconnect device identity v1\nprivate zz\n").unwrap();
    owner_only(&path);
    let error = DeviceIdentity::load(&path).unwrap_err();
    assert!(
        matches!(error, IdentityError::Malformed { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("64 hex digits"), "{error}");
    // load_or_generate must not silently replace a damaged key.
    assert!(DeviceIdentity::load_or_generate(&path).is_err());
    std::fs::write(&path, "something else").unwrap();
    assert!(DeviceIdentity::load(&path).is_err());
}

#[test]
fn known_peers_pin_once_and_reject_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let known = KnownPeers::new(dir.path().join("peers/known_peers"));
    assert_eq!(known.load().unwrap(), Vec::new(), "no file, no peers");
    let a = DeviceIdentity::from_private_key([1; 32]).fingerprint();
    let b = DeviceIdentity::from_private_key([2; 32]).fingerprint();
    known.pin(a).unwrap();
    known.pin(b).unwrap();
    known.pin(a).unwrap();
    assert_eq!(known.load().unwrap(), vec![a, b]);
    std::fs::write(known.path(), format!("# pinned\n{a}\nnot a fingerprint\n")).unwrap();
    assert!(matches!(known.load(), Err(IdentityError::Malformed { .. })));
}

#[cfg(unix)]
fn owner_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn an_identity_whose_key_does_not_match_its_fingerprint_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.identity");
    DeviceIdentity::from_private_key([3; 32])
        .save(&path)
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // One hex digit of the key changed: another key, which the fingerprint line betrays.
    let at = text.find("private ").unwrap() + "private ".len();
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).unwrap();
    owner_only(&path);
    let error = DeviceIdentity::load(&path).unwrap_err();
    assert!(error.to_string().contains("fingerprint"), "{error}");
}

#[cfg(unix)]
#[test]
fn an_identity_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.identity");
    DeviceIdentity::generate().save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = DeviceIdentity::load(&path).unwrap_err();
    assert!(error.to_string().contains("group or others"), "{error}");
}

#[test]
fn a_pin_after_a_hand_edited_line_without_newline_keeps_the_file_valid() {
    let dir = tempfile::tempdir().unwrap();
    let known = KnownPeers::new(dir.path().join("known_peers"));
    let a = DeviceIdentity::from_private_key([1; 32]).fingerprint();
    let b = DeviceIdentity::from_private_key([2; 32]).fingerprint();
    std::fs::write(known.path(), format!("# mine\n{a}")).unwrap();
    known.pin(b).unwrap();
    assert_eq!(known.load().unwrap(), vec![a, b]);
    // Pins from many threads at once all land.
    let many: Vec<_> = (10..30u8)
        .map(|k| DeviceIdentity::from_private_key([k; 32]).fingerprint())
        .collect();
    std::thread::scope(|s| {
        for f in &many {
            let known = known.clone();
            s.spawn(move || known.pin(*f).unwrap());
        }
    });
    let pins = known.load().unwrap();
    assert!(many.iter().all(|f| pins.contains(f)), "{} pins", pins.len());
}

#[cfg(not(unix))]
fn owner_only(_: &std::path::Path) {}

#[cfg(unix)]
mod local_attacker {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    use interconnect::{Config, DeviceIdentity, IdentityError, IdentityFile, KnownPeers};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_state_folder_is_created_owner_only_and_a_shared_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/phone");
        Config::new(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("state")), 0o700);
        // A folder others may write: anyone could swap the files in it.
        chmod(&dir, 0o777);
        let error = Config::new(&dir).unwrap_err();
        assert!(
            matches!(error, IdentityError::Malformed { .. })
                && error.to_string().contains("writable"),
            "{error}"
        );
        chmod(&dir, 0o755);
        Config::new(&dir).expect("a folder only its owner writes is fine");
    }

    #[test]
    fn a_known_peers_file_others_may_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let stranger = DeviceIdentity::generate();
        let known = dir.path().join("known_peers");
        std::fs::write(&known, format!("{}\n", stranger.fingerprint())).unwrap();
        chmod(&known, 0o666);
        let error = Config::new(dir.path()).unwrap_err();
        assert!(error.to_string().contains("known_peers"), "{error}");
        assert!(KnownPeers::new(&known).load().is_err());
        chmod(&known, 0o644);
        Config::new(dir.path()).expect("an owner-written file is read");
    }

    #[test]
    fn files_of_another_user_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Config::new(&state).unwrap();
        // Only root can give a file away; elsewhere this part cannot run.
        if std::os::unix::fs::chown(state.join("identity"), Some(65534), None).is_err() {
            return;
        }
        let error = Config::new(&state).unwrap_err();
        assert!(error.to_string().contains("another user"), "{error}");
        std::os::unix::fs::chown(state.join("identity"), Some(0), None).unwrap();
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        assert!(Config::new(&state).is_err());
    }

    #[test]
    fn a_symlink_planted_where_a_temporary_file_goes_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        chmod(&state, 0o700);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        for name in [
            "identity.tmp",
            "known_peers.tmp",
            ".identity.tmp",
            ".known_peers.tmp",
        ] {
            symlink(&victim, state.join(name)).unwrap();
        }
        let config = Config::new(&state).unwrap();
        let peers = config.known_peers.as_ref().unwrap();
        peers.pin(DeviceIdentity::generate().fingerprint()).unwrap();
        DeviceIdentity::generate()
            .save(&state.join("identity"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(peers.load().unwrap().len(), 1);
        // No temporary file is left behind beside the planted links.
        let planted = [
            "identity.tmp",
            "known_peers.tmp",
            ".identity.tmp",
            ".known_peers.tmp",
        ];
        let left: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") && !planted.contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

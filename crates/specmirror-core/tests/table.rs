//! Table-line parsing: every accepted form and every class of malformed line.
use specmirror_core::log::meta::generation::InitialSync;
use specmirror_core::transport::table::*;

fn words(s: &str) -> Vec<&[u8]> {
    s.split_whitespace().map(str::as_bytes).collect()
}

fn parse_str(s: &str) -> Result<TableConfig, TableError> {
    parse(words(s)).map(|p| p.config)
}

fn table_of(s: &str) -> String {
    let p = parse(words(s)).expect("valid line");
    let mut out = String::new();
    p.config
        .write_table(&mut out, std::str::from_utf8(p.data_dev).unwrap(), std::str::from_utf8(p.meta_dev).unwrap())
        .unwrap();
    out
}

#[test]
fn minimal_lines_take_defaults() {
    let c = parse_str("source /dev/loop0 /dev/m 10.0.0.2:7789").unwrap();
    assert_eq!(c.role, Role::Source);
    assert_eq!(
        c.endpoint,
        Endpoint {
            addr: Addr::V4([10, 0, 0, 2]),
            port: 7789
        }
    );
    assert_eq!(c.region_sectors, 2048);
    assert_eq!(c.ring_mb, 64);
    assert_eq!(c.mode, Mode::Speculative);
    assert_eq!(c.completion, Completion::Async);
    assert_eq!(c.hot_regions, 64);
    assert_eq!(c.chunk_sectors, 128);
    assert!(c.secret.is_none());
    let t = parse_str("target 253:1 7:9 0.0.0.0:7789").unwrap();
    assert_eq!(t.role, Role::Target);
    // Only a source refuses the unspecified addresses, mapped form included.
    assert!(parse_str("target 253:1 7:9 [::ffff:0.0.0.0]:7789").is_ok());
    assert!(parse_str("source 253:1 7:9 [::ffff:10.0.0.1]:7789").is_ok());
}

#[test]
fn every_option_is_parsed() {
    let c = parse_str(
        "source /dev/sdb /dev/m [fd00::1]:7000 12 region_size 4096 ring_mb 8 mode lock-sync completion sync hot_regions 128 secret s3cr3t!",
    )
    .unwrap();
    assert_eq!(c.region_sectors, 4096);
    assert_eq!(c.ring_mb, 8);
    assert_eq!(c.mode, Mode::LockSync);
    assert_eq!(c.completion, Completion::Sync);
    assert_eq!(c.hot_regions, 128);
    assert_eq!(c.secret.unwrap().as_bytes(), b"s3cr3t!");
    let mut v6 = [0u8; 16];
    v6[0] = 0xfd;
    v6[15] = 1;
    assert_eq!(c.endpoint.addr, Addr::V6(v6));
    let t =
        parse_str("target /dev/sdb /dev/m [::]:7000 6 region_size 1024 ring_mb 16 secret abc").unwrap();
    assert_eq!(t.region_sectors, 1024);
    let small = parse_str("target /dev/sdb /dev/m [::]:7000 2 region_size 16").unwrap();
    assert_eq!(small.chunk_sectors, 16, "a default chunk never exceeds the region");
    let c = parse_str("source /dev/sdb /dev/m 1.2.3.4:7000 4 chunk_size 8 region_size 8").unwrap();
    assert_eq!(c.chunk_sectors, 8);
    assert_eq!(c.sync_rate, 0, "no cap by default");
    let r = parse_str("source /dev/sdb /dev/m 1.2.3.4:7000 2 sync_rate 4194304").unwrap();
    assert_eq!(r.sync_rate, 4194304);
    assert_eq!(r.initial_sync, InitialSync::Full, "a new target is synced in full by default");
    let n = parse_str("source /dev/sdb /dev/m 1.2.3.4:7000 2 initial_sync none").unwrap();
    assert_eq!(n.initial_sync, InitialSync::None);
}

#[test]
fn table_status_recreates_the_line() {
    for line in [
        "source /dev/loop0 /dev/m 10.0.0.2:7789",
        "target 7:1 7:9 0.0.0.0:7789 2 ring_mb 4",
        "source 7:0 7:9 [fd00::1]:7000 12 region_size 4096 ring_mb 8 mode lock-sync completion sync hot_regions 128 secret k",
        "source 7:0 7:9 [::ffff:10.0.0.1]:1 2 mode speculative",
        "target 7:0 7:9 1.2.3.4:5 2 chunk_size 2048",
        "source 7:0 7:9 1.2.3.4:5 4 sync_rate 0 chunk_size 64",
        "source 7:0 7:9 1.2.3.4:5 2 sync_rate 10240",
        "source 7:0 7:9 1.2.3.4:5 4 initial_sync none sync_rate 1",
        "source 7:0 7:9 1.2.3.4:5 2 initial_sync full",
        "source 7:0 7:9 1.2.3.4:5 2 initial_sync checksum",
        "target 7:0 7:9 [1:0:0:2:0:0:0:3]:65535",
    ] {
        let out = table_of(line);
        assert_eq!(parse_str(&out).unwrap(), parse_str(line).unwrap(), "{line} -> {out}");
    }
    assert_eq!(
        table_of("source 7:0 7:9 [fd00:0:0:0:0:0:0:1]:7000"),
        "source 7:0 7:9 [fd00::1]:7000"
    );
    assert_eq!(
        table_of("source 7:0 7:9 [1:0:0:2:0:0:0:3]:9"),
        "source 7:0 7:9 [1:0:0:2::3]:9"
    );
}

#[test]
fn ima_never_shows_the_secret() {
    let c = parse_str("source 7:0 7:9 10.0.0.2:1 2 secret hunter2").unwrap();
    let mut out = String::new();
    c.write_ima(&mut out, "7:0", "7:9").unwrap();
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.ends_with(';') && out.contains("auth=hmac"), "{out}");
    assert_eq!(format!("{:?}", c.secret), "Some(Secret(..))");
}

#[test]
fn malformed_lines_are_rejected_precisely() {
    use TableError::*;
    let cases: &[(&str, TableError)] = &[
        ("", TooFewArgs),
        ("source", TooFewArgs),
        ("source /dev/x", TooFewArgs),
        ("source /dev/x 1.2.3.4:5", TooFewArgs),
        ("mirror /dev/x /dev/m 1.2.3.4:5", BadRole),
        ("Source /dev/x /dev/m 1.2.3.4:5", BadRole),
        ("source /dev/x /dev/m 1.2.3.4", BadAddress),
        ("source /dev/x /dev/m 1.2.3:5", BadAddress),
        ("source /dev/x /dev/m 1.2.3.4.5:5", BadAddress),
        ("source /dev/x /dev/m 256.1.1.1:5", BadAddress),
        ("source /dev/x /dev/m 1.2.3.-4:5", BadAddress),
        ("source /dev/x /dev/m 1.2.3.0004:5", BadAddress),
        ("source /dev/x /dev/m host.example:5", BadAddress),
        ("source /dev/x /dev/m fd00::1:5", BadAddress),
        ("source /dev/x /dev/m [fd00::1:5", BadAddress),
        ("source /dev/x /dev/m [fd00:::1]:5", BadAddress),
        ("source /dev/x /dev/m [1::2::3]:5", BadAddress),
        ("source /dev/x /dev/m [1:2:3:4:5:6:7:8:9]:5", BadAddress),
        ("source /dev/x /dev/m [1:2:3:4:5:6:7]:5", BadAddress),
        ("source /dev/x /dev/m [1:2:3:4::5:6:7:8]:5", BadAddress),
        ("source /dev/x /dev/m [12345::]:5", BadAddress),
        ("source /dev/x /dev/m [g::]:5", BadAddress),
        ("source /dev/x /dev/m [fe80::1%eth0]:5", BadAddress),
        ("source /dev/x /dev/m [::1]5", BadAddress),
        ("source /dev/x /dev/m 1.2.3.4:", BadPort),
        ("source /dev/x /dev/m 1.2.3.4:0", BadPort),
        ("source /dev/x /dev/m 1.2.3.4:65536", BadPort),
        ("source /dev/x /dev/m 1.2.3.4:-1", BadPort),
        ("source /dev/x /dev/m 1.2.3.4:99999999999", BadPort),
        ("source /dev/x /dev/m 0.0.0.0:5", UnspecifiedPeer),
        ("source /dev/x /dev/m [::]:5", UnspecifiedPeer),
        ("source /dev/x /dev/m [::ffff:0.0.0.0]:5", UnspecifiedPeer),
        ("source /dev/x /dev/m [0:0:0:0:0:ffff:0:0]:5", UnspecifiedPeer),
        ("source /dev/x /dev/m 1.2.3.4:5 x", BadOptCount),
        ("source /dev/x /dev/m 1.2.3.4:5 -2 a b", BadOptCount),
        ("source /dev/x /dev/m 1.2.3.4:5 2", OptCountMismatch),
        ("source /dev/x /dev/m 1.2.3.4:5 2 ring_mb", OptCountMismatch),
        ("source /dev/x /dev/m 1.2.3.4:5 4294967298 ring_mb 4", BadOptCount),
        ("source /dev/x /dev/m 1.2.3.4:5 3 ring_mb 4 x", OddOptArgs),
        ("source /dev/x /dev/m 1.2.3.4:5 2 foo 1", UnknownKey),
        ("source /dev/x /dev/m 1.2.3.4:5 2 RING_MB 1", UnknownKey),
        ("source /dev/x /dev/m 1.2.3.4:5 4 ring_mb 1 ring_mb 2", DuplicateKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 mode speculative", SourceOnlyKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 completion sync", SourceOnlyKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 hot_regions 8", SourceOnlyKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 sync_rate 1024", SourceOnlyKey),
        ("source /dev/x /dev/m 1.2.3.4:5 2 sync_rate 4194305", BadSyncRate),
        ("source /dev/x /dev/m 1.2.3.4:5 2 sync_rate -1", BadSyncRate),
        ("source /dev/x /dev/m 1.2.3.4:5 4 sync_rate 1 sync_rate 2", DuplicateKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 initial_sync none", SourceOnlyKey),
        ("source /dev/x /dev/m 1.2.3.4:5 2 initial_sync sha1", BadInitialSync),
        ("source /dev/x /dev/m 1.2.3.4:5 2 initial_sync Full", BadInitialSync),
        ("source /dev/x /dev/m 1.2.3.4:5 4 initial_sync none initial_sync full", DuplicateKey),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 1000", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 4", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 0", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 4194304", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 0x800", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 region_size 99999999999999999999", BadRegionSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 ring_mb 0", BadRingMb),
        ("source /dev/x /dev/m 1.2.3.4:5 2 ring_mb 4097", BadRingMb),
        ("source /dev/x /dev/m 1.2.3.4:5 2 ring_mb +4", BadRingMb),
        ("source /dev/x /dev/m 1.2.3.4:5 2 mode fast", BadMode),
        ("source /dev/x /dev/m 1.2.3.4:5 2 completion 1", BadCompletion),
        ("source /dev/x /dev/m 1.2.3.4:5 2 hot_regions 0", BadHotRegions),
        ("source /dev/x /dev/m 1.2.3.4:5 2 hot_regions 65537", BadHotRegions),
        ("source /dev/x /dev/m 1.2.3.4:5 2 al_regions 0", BadAlRegions),
        ("source /dev/x /dev/m 1.2.3.4:5 2 al_regions 65537", BadAlRegions),
        ("source /dev/x /dev/m 1.2.3.4:5 4 al_regions 8 al_regions 9", DuplicateKey),
        ("target /dev/x /dev/m 1.2.3.4:5 2 al_regions 8", SourceOnlyKey),
        ("source /dev/x /dev/m 1.2.3.4:5 2 chunk_size 12", BadChunkSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 chunk_size 4", BadChunkSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 chunk_size 4096", BadChunkSize),
        ("target /dev/x /dev/m 1.2.3.4:5 4 chunk_size 64 region_size 32", BadChunkSize),
        ("source /dev/x /dev/m 1.2.3.4:5 2 secret 0123456789012345678901234567890123456789012345678901234567890123456789", BadSecret),
    ];
    for (line, want) in cases {
        assert_eq!(parse_str(line), Err(*want), "line: {line:?}");
        let m = want.message_nul();
        assert!(m.ends_with('\0') && !want.message().contains('\0'));
    }
    // Non-printable secret bytes, which whitespace splitting cannot produce.
    let w: Vec<&[u8]> = vec![
        b"source",
        b"/dev/x",
        b"/dev/m",
        b"1.2.3.4:5",
        b"2",
        b"secret",
        b"a\x01b",
    ];
    assert_eq!(parse(w).err(), Some(TableError::BadSecret));
    let w: Vec<&[u8]> = vec![b"source", b"/dev/x", b"/dev/m", b"1.2.3.4:5", b"2", b"secret", b""];
    assert_eq!(parse(w).err(), Some(TableError::BadSecret));
}

#[test]
fn ipv6_forms() {
    let cases: &[(&str, [u16; 8])] = &[
        ("::1", [0, 0, 0, 0, 0, 0, 0, 1]),
        ("1::", [1, 0, 0, 0, 0, 0, 0, 0]),
        ("::", [0; 8]),
        ("fe80::1:2", [0xfe80, 0, 0, 0, 0, 0, 1, 2]),
        ("1:2:3:4:5:6:7:8", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("1:2:3:4:5:6::8", [1, 2, 3, 4, 5, 6, 0, 8]),
        ("::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]),
        ("ABCD::Ef", [0xabcd, 0, 0, 0, 0, 0, 0, 0xef]),
    ];
    for (s, g) in cases {
        let mut want = [0u8; 16];
        for (i, v) in g.iter().enumerate() {
            want[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
        }
        assert_eq!(parse_ipv6(s.as_bytes()), Some(want), "{s}");
    }
    for bad in [
        "",
        ":",
        ":::",
        "1:2",
        "1::2::3",
        "::1.2.3",
        "1.2.3.4::",
        "::g",
        "1:2:3:4:5:6:7:8::",
    ] {
        assert_eq!(parse_ipv6(bad.as_bytes()), None, "{bad}");
    }
}

proptest::proptest! {
    // Any bytes at all: parsing never panics, and what it accepts it prints
    // back into a line that parses to the same config.
    #[test]
    fn arbitrary_words_never_panic(ws in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..24), 0..12)) {
        let refs: Vec<&[u8]> = ws.iter().map(|w| w.as_slice()).collect();
        if let Ok(p) = parse(refs) {
            if let (Ok(dev), Ok(meta)) = (std::str::from_utf8(p.data_dev), std::str::from_utf8(p.meta_dev)) {
                let word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
                if word(dev) && word(meta) {
                    let mut out = String::new();
                    p.config.write_table(&mut out, dev, meta).unwrap();
                    proptest::prop_assert_eq!(parse_str(&out), Ok(p.config));
                }
            }
        }
    }
}

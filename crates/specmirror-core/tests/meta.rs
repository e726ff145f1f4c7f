//! Metadata: layout arithmetic, the superblock's two copies under torn
//! writes, the refusals a table load can meet, bitmap blocks, and the
//! generation rules checked against a model of both sides with crashes.

mod common;

use common::Crc;
use proptest::prelude::*;
use specmirror_core::log::meta::bitmap::{self, Bitmap, BlockState, BITS_BYTES, CHUNKS_PER_BLOCK};
use specmirror_core::log::meta::generation::{
    decide, plan, Generations, InitialSync, Refusal, Rule, SyncPlan, HISTORY,
};
use specmirror_core::log::meta::superblock::{
    choose, decode, load, Copy, Expect, Loaded, MetaError, MetaRole, Superblock, FLAG_CONSISTENT,
};
use specmirror_core::log::meta::{Layout, AL_BLOCKS, BLOCK_SIZE};
use specmirror_core::vec_pages::VecPages;

const SECT: usize = 512;

fn block() -> Box<[u8; BLOCK_SIZE]> {
    Box::new([0u8; BLOCK_SIZE])
}

fn enc(sb: &Superblock) -> Box<[u8; BLOCK_SIZE]> {
    let mut b = block();
    sb.encode(&mut b, &Crc);
    b
}

fn source_sb(gen: u64) -> Superblock {
    let l = Layout::new(1 << 21, 128).expect("layout");
    Superblock::format(MetaRole::Source, &l, gen)
}

#[test]
fn layout_of_one_tebibyte_in_64k_chunks() {
    let l = Layout::new(1 << 31, 128).expect("layout");
    assert_eq!(l.chunks, 1 << 24);
    assert_eq!(l.bitmap_blocks, (1u64 << 24).div_ceil(CHUNKS_PER_BLOCK));
    assert_eq!(l.bitmap_blocks, 515);
    assert_eq!(l.blocks(), 2 + 515 + AL_BLOCKS);
    assert_eq!(l.sectors(), l.blocks() * 8);
}

/// The "Size needed" table of Documentation/metadata-format.rst.
#[test]
fn layout_sizes_match_the_documented_table() {
    let gib = 1u64 << 21;
    for (data, bitmap_blocks, kib) in [
        (gib, 1, 268),
        (100 * gib, 51, 468),
        (1024 * gib, 515, 2324),
        (16384 * gib, 8225, 33164),
    ] {
        let l = Layout::new(data, 128).expect("layout");
        assert_eq!(
            (l.bitmap_blocks, l.sectors() / 2),
            (bitmap_blocks, kib),
            "{data} sectors"
        );
    }
}

#[test]
fn layout_last_chunk_is_short_and_bad_sizes_are_refused() {
    let l = Layout::new(1000, 128).expect("layout");
    assert_eq!(l.chunks, 8);
    assert_eq!(l.chunk_extent(7), Some((896, 104)));
    assert_eq!(l.chunk_extent(8), None);
    assert_eq!(l.chunks_of(127, 2), Some((0, 1)));
    assert_eq!(l.chunks_of(999, 2), None);
    assert_eq!(l.chunks_of(5, 0), None);
    assert_eq!(Layout::new(1000, 4), None, "below 4 KiB");
    assert_eq!(Layout::new(1000, 96), None, "not a power of two");
    assert_eq!(Layout::new(0, 128), None, "empty data device");
}

#[test]
fn superblock_round_trips() {
    let mut sb = source_sb(0xfeed);
    sb.seq = 7;
    sb.gens.bitmap = 0xbeef;
    sb.gens.history = [1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(decode(&enc(&sb), &Crc), Copy::Valid(sb));
    let t = Superblock {
        role: MetaRole::Target,
        flags: FLAG_CONSISTENT,
        ..sb
    };
    assert_eq!(decode(&enc(&t), &Crc), Copy::Valid(t));
}

#[test]
fn superblock_decode_classifies_what_it_reads() {
    assert_eq!(decode(&block(), &Crc), Copy::Zero);
    let mut foreign = block();
    foreign[1000] = 1;
    assert_eq!(decode(&foreign, &Crc), Copy::Foreign);
    let good = enc(&source_sb(9));
    let mut flipped = good.clone();
    flipped[200] ^= 1;
    assert_eq!(decode(&flipped, &Crc), Copy::Torn);
    // A well-sealed block with fields no writer produces.
    let reseal = |f: &dyn Fn(&mut [u8; BLOCK_SIZE])| {
        let mut b = good.clone();
        f(&mut b);
        b[8..12].fill(0);
        let c = crc32c::crc32c(&b[..]);
        b[8..12].copy_from_slice(&c.to_le_bytes());
        decode(&b, &Crc)
    };
    assert_eq!(reseal(&|b| b[4] = 2), Copy::Version(2));
    assert_eq!(reseal(&|b| b[24] = 3), Copy::Malformed, "role");
    assert_eq!(reseal(&|b| b[12] = 2), Copy::Malformed, "unknown flag");
    assert_eq!(reseal(&|b| b[4000] = 1), Copy::Malformed, "reserved byte");
    assert_eq!(reseal(&|b| b[120] ^= 1), Copy::Malformed, "bitmap size");
    assert_eq!(
        reseal(&|b| b[40..48].fill(0)),
        Copy::Malformed,
        "source without generation"
    );
}

#[test]
fn formatting_writes_two_good_copies() {
    let [a, b] = specmirror_core::log::meta::superblock::format_copies(&source_sb(9));
    assert_eq!((a.seq, a.slot(), b.seq, b.slot()), (0, 0, 1, 1));
    let z = block();
    let want = want(MetaRole::Source);
    assert_eq!(load(&enc(&a), &enc(&b), &Crc, &want, 1), Ok((b, false)));
    let mut torn_b = enc(&b);
    torn_b[300] ^= 1;
    assert_eq!(load(&enc(&a), &torn_b, &Crc, &want, 1), Ok((a, false)), "a crash between the two writes");
    let mut torn_a = enc(&a);
    torn_a[300] ^= 1;
    assert_eq!(load(&torn_a, &enc(&b), &Crc, &want, 1), Ok((b, false)), "one damaged block later");
    assert_eq!(load(&torn_a, &z, &Crc, &want, 1), Err(MetaError::Corrupt));
}

#[test]
fn choose_takes_the_newer_valid_copy() {
    let a = source_sb(5);
    let b = a.next();
    assert_eq!(
        choose(Copy::Valid(a), Copy::Valid(b)),
        Ok(Loaded::Current(b))
    );
    assert_eq!(
        choose(Copy::Valid(b), Copy::Valid(a)),
        Ok(Loaded::Current(b))
    );
    assert_eq!(choose(Copy::Torn, Copy::Valid(a)), Ok(Loaded::Current(a)));
    assert_eq!(choose(Copy::Valid(a), Copy::Zero), Ok(Loaded::Current(a)));
    assert_eq!(choose(Copy::Zero, Copy::Zero), Ok(Loaded::Blank));
    assert_eq!(choose(Copy::Torn, Copy::Torn), Err(MetaError::Corrupt));
    assert_eq!(choose(Copy::Torn, Copy::Zero), Err(MetaError::Corrupt));
    assert_eq!(choose(Copy::Foreign, Copy::Zero), Err(MetaError::Foreign));
    assert_eq!(
        choose(Copy::Version(3), Copy::Torn),
        Err(MetaError::Version)
    );
    assert_eq!(
        choose(Copy::Malformed, Copy::Foreign),
        Err(MetaError::Corrupt)
    );
}

fn want(role: MetaRole) -> Expect {
    Expect {
        role,
        data_sectors: 1 << 21,
        chunk_sectors: 128,
        meta_sectors: 1 << 12,
    }
}

#[test]
fn load_formats_a_blank_device_and_refuses_everything_else() {
    let z = block();
    let (sb, blank) = load(&z, &z, &Crc, &want(MetaRole::Source), 42).expect("blank source");
    assert!(blank);
    assert_eq!(sb.gens.current, 42);
    let (t, blank) = load(&z, &z, &Crc, &want(MetaRole::Target), 42).expect("blank target");
    assert!(blank);
    assert_eq!(
        t.gens,
        Generations::default(),
        "a new target holds no generation"
    );
    assert!(!t.consistent());

    let written = enc(&sb);
    assert_eq!(
        load(&written, &z, &Crc, &want(MetaRole::Source), 1),
        Ok((sb, false))
    );
    assert_eq!(
        load(&written, &z, &Crc, &want(MetaRole::Target), 1),
        Err(MetaError::WrongRole)
    );
    let bigger = Expect {
        data_sectors: 1 << 22,
        ..want(MetaRole::Source)
    };
    assert_eq!(
        load(&written, &z, &Crc, &bigger, 1),
        Err(MetaError::WrongDataSize)
    );
    let chunk = Expect {
        chunk_sectors: 256,
        ..want(MetaRole::Source)
    };
    assert_eq!(
        load(&written, &z, &Crc, &chunk, 1),
        Err(MetaError::WrongChunkSize)
    );
    let small = Expect {
        meta_sectors: 64,
        ..want(MetaRole::Source)
    };
    assert_eq!(
        load(&written, &z, &Crc, &small, 1),
        Err(MetaError::TooSmall)
    );
    assert_eq!(
        load(&z, &z, &Crc, &small, 1),
        Err(MetaError::TooSmall),
        "not even formatted"
    );
    let mut ext4ish = block();
    ext4ish[0x38] = 0x53;
    ext4ish[0x39] = 0xef;
    assert_eq!(
        load(&ext4ish, &z, &Crc, &want(MetaRole::Source), 1),
        Err(MetaError::Foreign)
    );
    for e in [
        MetaError::Foreign,
        MetaError::Corrupt,
        MetaError::Version,
        MetaError::WrongRole,
        MetaError::WrongDataSize,
        MetaError::WrongChunkSize,
        MetaError::TooSmall,
    ] {
        assert!(e.message_nul().ends_with('\0') && !e.message().contains('\0'));
    }
}

/// A write of `new` over `old` that reached only the sectors in `mask`
/// (bit i: sector i of the block), as a power loss can leave it.
fn torn(old: &[u8; BLOCK_SIZE], new: &[u8; BLOCK_SIZE], mask: u8) -> Box<[u8; BLOCK_SIZE]> {
    let mut b = Box::new(*old);
    for i in 0..BLOCK_SIZE / SECT {
        if mask & (1 << i) != 0 {
            b[i * SECT..(i + 1) * SECT].copy_from_slice(&new[i * SECT..(i + 1) * SECT]);
        }
    }
    b
}

proptest! {
    /// A run of superblock updates where the last write is torn at any
    /// sector subset: loading yields exactly the last completed update or
    /// the torn one (only if every sector that differs landed), never an
    /// error or a mix.
    #[test]
    fn torn_superblock_write_leaves_the_previous_state(updates in 1usize..6, mask in any::<u8>(), gens in proptest::collection::vec(1u64.., 6)) {
        let mut slots = [block(), block()];
        let mut sb = source_sb(gens[0]);
        slots[sb.slot() as usize] = enc(&sb);
        for g in gens.iter().take(updates).skip(1) {
            sb = sb.next();
            sb.gens.rotate(*g);
            slots[sb.slot() as usize] = enc(&sb);
        }
        let mut next = sb.next();
        next.gens.bitmap = 77;
        let s = next.slot() as usize;
        let whole = enc(&next);
        slots[s] = torn(&slots[s], &whole, mask);
        let got = load(&slots[0], &slots[1], &Crc, &want(MetaRole::Source), 1);
        // Sectors the two versions share need not land for the write to be whole.
        let expect = if slots[s] == whole { next } else { sb };
        prop_assert_eq!(got, Ok((expect, false)));
    }

    /// The same with a tear inside a sector (a device without atomic
    /// sectors): only a prefix of `cut` bytes of the update landed.
    #[test]
    fn superblock_write_torn_mid_sector_leaves_the_previous_state(cut in 0usize..BLOCK_SIZE, g in 2u64..) {
        let mut slots = [block(), block()];
        let mut sb = source_sb(1);
        slots[0] = enc(&sb);
        sb = sb.next();
        slots[1] = enc(&sb);
        let mut next = sb.next();
        next.gens.rotate(g);
        next.gens.bitmap = 1;
        let whole = enc(&next);
        slots[0][..cut].copy_from_slice(&whole[..cut]);
        let got = load(&slots[0], &slots[1], &Crc, &want(MetaRole::Source), 1);
        let expect = if slots[0] == whole { next } else { sb };
        prop_assert_eq!(got, Ok((expect, false)));
    }

    /// A torn first write after formatting (the other copy still zero)
    /// loads as blank again or as the full write, never as garbage.
    #[test]
    fn torn_first_write_is_blank_or_whole(mask in any::<u8>()) {
        let z = block();
        let sb = source_sb(3);
        let whole = enc(&sb);
        let t = torn(&z, &whole, mask);
        let got = load(&t, &z, &Crc, &want(MetaRole::Source), 3);
        if t == whole {
            prop_assert_eq!(got, Ok((sb, false)));
        } else if t == z {
            prop_assert_eq!(got, Ok((sb, true)));
        } else {
            prop_assert!(matches!(got, Err(MetaError::Corrupt) | Err(MetaError::Foreign)));
        }
    }
}

#[test]
fn bitmap_sets_clears_counts_and_names_changed_blocks() {
    let chunks = CHUNKS_PER_BLOCK * 2 + 10;
    let mut m = Bitmap::new(VecPages::filled(3, 0xff), chunks).expect("bitmap");
    assert_eq!(m.count(), 0, "new pages are cleared");
    assert_eq!(
        m.set_range(CHUNKS_PER_BLOCK - 2, CHUNKS_PER_BLOCK + 1),
        Some((0, 1))
    );
    assert_eq!(
        m.set_range(CHUNKS_PER_BLOCK - 2, CHUNKS_PER_BLOCK + 1),
        None,
        "already set"
    );
    assert_eq!(m.count(), 4);
    assert_eq!(m.next_dirty(0), Some(CHUNKS_PER_BLOCK - 2));
    assert_eq!(m.clear(CHUNKS_PER_BLOCK - 2), Some(0));
    assert_eq!(m.clear(CHUNKS_PER_BLOCK - 2), None);
    assert_eq!(m.next_dirty(0), Some(CHUNKS_PER_BLOCK - 1));
    assert_eq!(
        m.set_range(chunks - 1, u64::MAX),
        Some((2, 2)),
        "clamped to the device"
    );
    assert!(!m.test(chunks), "past the end");
    m.set_all();
    assert_eq!(m.count(), chunks);
    assert!(Bitmap::new(VecPages::new(2), chunks).is_none());
}

#[test]
fn bitmap_blocks_round_trip_and_damage_means_dirty() {
    let chunks = CHUNKS_PER_BLOCK + 100;
    let mut m = Bitmap::new(VecPages::new(2), chunks).expect("bitmap");
    m.set_range(5, 9);
    m.set_range(CHUNKS_PER_BLOCK + 3, CHUNKS_PER_BLOCK + 3);
    let b0 = Box::new(*m.store_block(0, &Crc).expect("block 0"));
    let b1 = Box::new(*m.store_block(1, &Crc).expect("block 1"));
    assert!(m.store_block(2, &Crc).is_none());
    // The page is the block as encode_block writes it.
    let mut bits = vec![0u8; BITS_BYTES];
    assert_eq!(bitmap::decode_block(1, &b1, &mut bits, &Crc), BlockState::Valid);
    let mut again = block();
    bitmap::encode_block(1, &bits, &mut again, &Crc);
    assert_eq!(again, b1);

    let mut r = Bitmap::new(VecPages::new(2), chunks).expect("bitmap");
    assert_eq!(r.load_block(0, &b0, &Crc), BlockState::Valid);
    assert_eq!(r.load_block(1, &block(), &Crc), BlockState::Zero);
    assert_eq!(r.count(), 5);
    assert_eq!(r.load_block(1, &b1, &Crc), BlockState::Valid);
    assert_eq!(r.count(), 6);
    // A block read at the wrong index, or torn, is all dirty: the last
    // block only as far as chunks exist.
    assert_eq!(r.load_block(1, &b0, &Crc), BlockState::Damaged);
    assert_eq!(r.count(), 5 + 100);
    let mut t = b0.clone();
    t[BLOCK_SIZE - 1] ^= 0x80;
    assert_eq!(r.load_block(0, &t, &Crc), BlockState::Damaged);
    assert_eq!(r.count(), chunks);
    let mut bits = vec![0u8; BITS_BYTES];
    assert_eq!(
        bitmap::decode_block(0, &b0, &mut bits, &Crc),
        BlockState::Valid
    );
}

#[test]
fn decide_applies_each_rule() {
    let src = Generations {
        current: 30,
        bitmap: 20,
        history: [20, 10, 0, 0, 0, 0, 0, 0],
    };
    let h = |g: &[u64]| {
        let mut a = [0u64; HISTORY];
        a[..g.len()].copy_from_slice(g);
        a
    };
    let tgt = |current, history| Generations {
        current,
        bitmap: 0,
        history,
    };
    assert_eq!(decide(&src, &tgt(0, h(&[])), false), Rule::Initial);
    assert_eq!(decide(&src, &tgt(20, h(&[10])), true), Rule::Resync);
    assert_eq!(
        decide(&src, &tgt(20, h(&[10])), false),
        Rule::Resync,
        "an interrupted sync resumes"
    );
    assert_eq!(
        decide(&src, &tgt(30, h(&[20])), true),
        Rule::Resync,
        "bits still tracked"
    );
    assert_eq!(
        decide(&src, &tgt(10, h(&[])), true),
        Rule::Full,
        "an ancestor"
    );
    assert_eq!(
        decide(&src, &tgt(99, h(&[30, 20])), true),
        Rule::Refuse(Refusal::TargetAhead)
    );
    assert_eq!(
        decide(&src, &tgt(99, h(&[98])), true),
        Rule::Refuse(Refusal::Unrelated)
    );
    let clean = Generations {
        current: 30,
        bitmap: 0,
        history: [20, 10, 0, 0, 0, 0, 0, 0],
    };
    assert_eq!(decide(&clean, &tgt(30, h(&[20])), true), Rule::Resume);
    assert_eq!(
        decide(&clean, &tgt(30, h(&[20])), false),
        Rule::Full,
        "inconsistent at current"
    );
    assert_eq!(
        plan(Rule::Initial, InitialSync::None),
        SyncPlan::AssumeEqual
    );
    assert_eq!(
        plan(Rule::Full, InitialSync::None),
        SyncPlan::All,
        "none never skips a stale target"
    );
    assert_eq!(plan(Rule::Full, InitialSync::Checksum), SyncPlan::Checksum);
    assert_eq!(plan(Rule::Resync, InitialSync::None), SyncPlan::Dirty);
    assert_eq!(Rule::Refuse(Refusal::Unrelated).as_str(), "unrelated");
}

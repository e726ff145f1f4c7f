//! Driving the source and target machines by hand over a
//! [`Pair`]: the pair shakes hands (and runs everything when a test says
//! so), these helpers move one kind of traffic at a time, so that a test
//! can look between the steps. Every call goes through the machines'
//! public thread steps, as the kernel glue would make it.

use specmirror_core::log::record::{
    decode_frame, decode_header, encode_frame, Header, Hello, Kind, HEADER_LEN,
};
use specmirror_core::pair::{gather, Pair, Src, Tgt};
use specmirror_core::transport::proto::auth::{self, decode_challenge, encode_challenge, MacLabel};
use specmirror_core::transport::proto::hot::HotSlot;
use specmirror_core::transport::proto::inflight::InflightSlot;
use specmirror_core::transport::proto::source::{
    self, HostOp, HostWrite, RxVerdict as SRx, SenderStep as SStep, Source, SourceConfig, Submit,
};
use specmirror_core::transport::proto::target::{
    Accept, ListenerStep, RxStep, RxVerdict as TRx, SenderStep as TStep, Target, TargetConfig,
    SEND_FRAMES,
};
use specmirror_core::transport::proto::wake::Instant;
use specmirror_core::transport::proto::{encode_hello, Completion, Mode, MAX_CONTROL_FRAME};
use specmirror_core::transport::table::Secret;

use super::{filter, window, Crc, VecPages};
use specmirror_core::log::locks::LockSlot;

/// Device size of the helpers' machines (sectors).
pub(crate) const DEV: u64 = 1 << 20;
/// Region size of the helpers' machines (sectors).
pub(crate) const REGION: u32 = 64;
/// Generation of the helpers' sources.
pub(crate) const GEN: u64 = 9;

/// A source configuration over [`DEV`] and [`REGION`].
pub(crate) fn src_cfg(mode: Mode, completion: Completion) -> SourceConfig {
    SourceConfig {
        region_sectors: REGION,
        mode,
        completion,
        dev_sectors: DEV,
        generation: GEN,
        secret: None,
    }
}

/// A target configuration over [`DEV`] and [`REGION`] (ACK every 4).
pub(crate) fn tgt_cfg() -> TargetConfig {
    TargetConfig {
        region_sectors: REGION,
        dev_sectors: DEV,
        ack_every: 4,
        secret: None,
    }
}

/// A source over `ring_pages` pages with `hot` hot regions, 8 in-flight
/// slots and payloads aligned to `align`.
pub(crate) fn source_with(cfg: SourceConfig, ring_pages: usize, hot: usize, align: usize) -> Src {
    let mut s = Source::new(
        cfg,
        VecPages::filled(ring_pages, 0xA5),
        1,
        vec![HotSlot::default(); hot],
        vec![InflightSlot::default(); 8],
    )
    .unwrap();
    s.set_payload_align(align).unwrap();
    s
}

/// [`source_with`] at the kernel's sector alignment.
pub(crate) fn source(mode: Mode, completion: Completion, ring_pages: usize, hot: usize) -> Src {
    source_with(src_cfg(mode, completion), ring_pages, hot, 512)
}

/// A target over `log_pages` pages, 16 lock slots, payloads aligned to
/// `align`.
pub(crate) fn target_with(cfg: TargetConfig, log_pages: usize, align: usize) -> Tgt {
    let mut t = Target::new(
        cfg,
        VecPages::filled(log_pages, 0x5A),
        window(),
        filter(),
        vec![LockSlot::EMPTY; 16],
    )
    .unwrap();
    t.set_payload_align(align).unwrap();
    t
}

/// [`target_with`] the default configuration at sector alignment.
pub(crate) fn target(log_pages: usize) -> Tgt {
    target_with(tgt_cfg(), log_pages, 512)
}

/// A secret.
pub(crate) fn secret(s: &str) -> Option<Secret> {
    Some(Secret::new(s.as_bytes()).expect("valid secret"))
}

/// A pair of `s` and `t`, connected (panics if the handshake fails).
pub(crate) fn connected(s: Src, t: Tgt) -> Pair<Crc> {
    let mut p = Pair::new(s, t, Crc);
    assert!(p.connect(), "no handshake: {:?}", p.s.link_state());
    p
}

/// A host write of `count` sectors at `sector`.
pub(crate) fn hw(op: HostOp, sector: u64, count: u32, flags: u16) -> HostWrite {
    HostWrite {
        op,
        sector,
        count,
        flags,
    }
}

/// Offers a write of `count` sectors of `byte` at `sector`.
pub(crate) fn write(s: &mut Src, sector: u64, count: u32, byte: u8) -> Submit {
    let data = vec![byte; count as usize * 512];
    s.submit(&Crc, &hw(HostOp::Write, sector, count, 0), 0, |wr| {
        wr.write(&data)
    })
}

/// Offers the head of the deferred list again: the same write.
pub(crate) fn retry(s: &mut Src, sector: u64, count: u32, byte: u8) -> Submit {
    let data = vec![byte; count as usize * 512];
    s.retry_deferred(&Crc, &hw(HostOp::Write, sector, count, 0), 0, |wr| {
        wr.write(&data)
    })
}

/// One frame.
pub(crate) fn frame(h: &Header, payload: &[u8]) -> Vec<u8> {
    super::frame(h, payload)
}

/// A target-to-source control frame (`ACK`, `NAK`, lock replies).
pub(crate) fn ctl(kind: Kind, seq: u64, sector: u64) -> Vec<u8> {
    let mut h = Header::new(kind);
    h.seq = seq;
    h.sector = sector;
    frame(&h, &[])
}

/// Splits a buffer of whole frames.
pub(crate) fn split_frames(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (h, _) = decode_header(buf).expect("whole frames");
        let (f, rest) = buf.split_at(h.frame_len());
        out.push(f.to_vec());
        buf = rest;
    }
    out
}

/// Header of a frame (panics on a bad one).
pub(crate) fn header(f: &[u8]) -> Header {
    decode_frame(&Crc, f).expect("valid frame").0
}

/// The frames of one sender step of the source (a record batch or a
/// control frame), reported sent; `None` when the sender sleeps, closes
/// or exits (steps it repeats when asked again: ask `poll_sender` which).
pub(crate) fn source_send(p: &mut Pair<Crc>) -> Option<Vec<Vec<u8>>> {
    let now = p.now;
    match p.s.poll_sender(&Crc, now) {
        SStep::Records { conn, batch } => {
            let views: Vec<_> = p.s.batch_views(&batch).collect();
            assert_eq!(views.len(), batch.count as usize, "lease covers the batch");
            let mut frames = Vec::new();
            for v in views {
                let mut f = Vec::with_capacity(v.frame_len);
                if batch.corrupt == Some(v.seq) {
                    f.extend_from_slice(&p.s.corrupt_header(v.seq));
                    let mut all = Vec::new();
                    gather(p.s.ring().pages(), v.chunks(), &mut all);
                    f.extend_from_slice(&all[HEADER_LEN..]);
                } else {
                    gather(p.s.ring().pages(), v.chunks(), &mut f);
                }
                assert_eq!(f.len(), v.frame_len);
                frames.push(f);
            }
            p.s.on_sent(conn, true, now);
            Some(frames)
        }
        SStep::Control { conn, frame } => {
            let f = frame.as_bytes().to_vec();
            p.s.on_sent(conn, true, now);
            Some(vec![f])
        }
        SStep::Connect { conn } => panic!("connect {conn} in the middle of a test step"),
        SStep::Sleep { .. } | SStep::Close { .. } | SStep::Exit => None,
    }
}

/// Offers `f` to the target's receiver.
/// A long WRITE goes the kernel receiver's way: CRC checked first, payload
/// copied into the commit log after the machine took it (`Fill`).
pub(crate) fn to_target(p: &mut Pair<Crc>, f: &[u8]) -> TRx {
    use specmirror_core::log::record::{decode_frame, decode_header, DecodeError, HEADER_LEN};
    use specmirror_core::transport::proto::target::copies_outside;
    let conn = p.t.conn();
    let now = p.now;
    if !decode_header(f).is_ok_and(|(h, _)| copies_outside(&h) && h.frame_len() == f.len()) {
        return p.t.on_frame(&Crc, conn, f, now);
    }
    let ok = !matches!(decode_frame(&Crc, f), Err(DecodeError::BadCrc));
    match p.t.on_frame_checked(&Crc, conn, f, ok, now) {
        TRx::Fill { seq } => {
            assert!(p.t.fill_payload(seq, &f[HEADER_LEN..]), "reserved record {seq} takes its payload");
            TRx::Continue
        }
        v => v,
    }
}

/// Offers `f` to the source's receiver.
pub(crate) fn to_source(p: &mut Pair<Crc>, f: &[u8]) -> SRx {
    let conn = p.s.conn();
    let now = p.now;
    p.s.on_frame(&Crc, conn, f, now)
}

/// Sends everything the source may send now straight into the target
/// (no replies, no device I/O); returns the headers delivered. A frame
/// the target has no room for is left for the pair's receiver, with what
/// followed it (`p.to_t`, `p.t_busy`).
pub(crate) fn send_all(p: &mut Pair<Crc>) -> Vec<Header> {
    let mut out = Vec::new();
    if p.t_busy {
        // Frames left by a full target go first, once it has room.
        match p.t.poll_receiver() {
            RxStep::Retry => p.t_busy = false,
            RxStep::Sleep => return out,
            RxStep::Stop => panic!("receiver stopped"),
        }
    }
    let mut pending: Vec<Vec<u8>> = p.to_t.drain(..).collect();
    loop {
        let frames = if pending.is_empty() {
            match source_send(p) {
                Some(f) => f,
                None => break,
            }
        } else {
            std::mem::take(&mut pending)
        };
        let mut it = frames.into_iter();
        while let Some(f) = it.next() {
            match to_target(p, &f) {
                TRx::Continue => out.push(header(&f)),
                TRx::Busy => {
                    p.to_t.push_back(f);
                    p.to_t.extend(it);
                    p.t_busy = true;
                    return out;
                }
                TRx::Stop => panic!("target stopped on {:?}", header(&f)),
                TRx::Fill { .. } => unreachable!("to_target fills"),
            }
        }
    }
    out
}

/// Applies everything the target may apply now (every I/O succeeds);
/// returns the data records' seqs.
pub(crate) fn apply_all(p: &mut Pair<Crc>) -> Vec<u64> {
    let mut done = Vec::new();
    let now = p.now;
    while let Some(v) = p.t.poll_issue() {
        assert!(p.t.io_done(
            v.seq,
            specmirror_core::transport::proto::target::IoStatus::Ok,
            now
        ));
        done.push(v.seq);
    }
    flush_all(p);
    done
}

/// Runs the target's flushes for its durable point (the device has no
/// volatile cache here: each ends at once).
pub(crate) fn flush_all(p: &mut Pair<Crc>) {
    let now = p.now;
    while let specmirror_core::transport::proto::target::ApplierStep::Flush { upto } = p.t.poll_applier(now) {
        p.t.flush_done(upto, true, now);
    }
}

/// The frames of one target sender step (reported sent); `Err` with any
/// other step.
pub(crate) fn target_send(p: &mut Pair<Crc>) -> Result<Vec<Vec<u8>>, TStep> {
    let mut buf = vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME];
    let now = p.now;
    match p.t.poll_sender(&Crc, now, &mut buf) {
        TStep::Send { conn, len } => {
            p.t.on_sent(conn, true, now);
            Ok(split_frames(&buf[..len]))
        }
        other => Err(other),
    }
}

/// Delivers every frame the target's sender has now to the source;
/// returns their headers.
pub(crate) fn deliver_tgt(p: &mut Pair<Crc>) -> Vec<Header> {
    let mut out = Vec::new();
    while let Ok(frames) = target_send(p) {
        for f in frames {
            assert_eq!(to_source(p, &f), SRx::Continue, "{:?}", header(&f));
            out.push(header(&f));
        }
    }
    out
}

/// One round trip by hand: send, apply, reply.
pub(crate) fn round(p: &mut Pair<Crc>) {
    send_all(p);
    apply_all(p);
    deliver_tgt(p);
}

// ---- A scripted peer for each machine (handshake frame by frame). ----

/// Random bytes a scripted connection hands the target: CHALLENGE nonce
/// `[0x11; 16]`, reply nonce `[0x12; 16]`.
pub(crate) const T_RANDOM: [u8; 32] = {
    let mut r = [0x11; 32];
    let mut i = 16;
    while i < 32 {
        r[i] = 0x12;
        i += 1;
    }
    r
};
/// The target's CHALLENGE nonce on a scripted connection.
pub(crate) const T_NONCE: [u8; 16] = [0x11; 16];
/// The source's HELLO nonce on a scripted connection.
pub(crate) const S_NONCE: [u8; 16] = [0x22; 16];

/// The target accepts a scripted connection and sends its CHALLENGE;
/// returns the connection and the challenge's nonce.
pub(crate) fn accept(t: &mut Tgt, now: Instant) -> (u64, [u8; 16]) {
    assert_eq!(t.poll_listener(now), ListenerStep::Accept);
    let Accept::Serve { conn } = t.on_accept(now, T_RANDOM) else {
        panic!("refused")
    };
    let mut buf = vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME];
    let TStep::Send { conn: c, len } = t.poll_sender(&Crc, now, &mut buf) else {
        panic!("no CHALLENGE")
    };
    assert_eq!(c, conn);
    t.on_sent(conn, true, now);
    (
        conn,
        decode_challenge(&Crc, &buf[..len]).expect("a CHALLENGE"),
    )
}

/// The HELLO a source with `cfg` would send (unsigned, nonce [`S_NONCE`]).
pub(crate) fn hello_of(cfg: &SourceConfig, last_applied: u64) -> Hello {
    Hello {
        proto_version: u32::from(specmirror_core::log::record::VERSION),
        dev_sectors: cfg.dev_sectors,
        region_sectors: cfg.region_sectors,
        generation: cfg.generation,
        last_applied,
        nonce: S_NONCE,
        mac: [0; 32],
        flags: 0,
        block_size: 0,
        gens: Default::default(),
    }
}

/// Sends `hello` (as it is: sign it first) on scripted connection `conn`;
/// returns the receiver's verdict and the HELLO_REPLY the target sent, if
/// any.
pub(crate) fn send_hello(
    t: &mut Tgt,
    conn: u64,
    hello: &Hello,
    now: Instant,
) -> (TRx, Option<Hello>) {
    let mut b = [0u8; MAX_CONTROL_FRAME];
    let n = encode_hello(&Crc, hello, false, &mut b).unwrap();
    let v = t.on_frame(&Crc, conn, &b[..n], now);
    let mut buf = vec![0u8; SEND_FRAMES * MAX_CONTROL_FRAME];
    let reply = match t.poll_sender(&Crc, now, &mut buf) {
        TStep::Send { conn: c, len } => {
            t.on_sent(c, true, now);
            let frames = split_frames(&buf[..len]);
            let (h, payload) = decode_frame(&Crc, &frames[0]).unwrap();
            assert_eq!(h.kind, Kind::HelloReply);
            Some(Hello::decode(payload).unwrap())
        }
        _ => None,
    };
    (v, reply)
}

/// Signs `hello` as a source with `secret` answering challenge `nonce`.
pub(crate) fn sign_hello(secret: Option<&str>, nonce: &[u8; 16], hello: &mut Hello) {
    auth::sign(secret.map(str::as_bytes), MacLabel::Hello, nonce, hello);
}

/// The source connects (scripted): returns the connection.
pub(crate) fn src_connect(s: &mut Src, now: Instant) -> u64 {
    let SStep::Connect { conn } = s.poll_sender(&Crc, now) else {
        panic!("no connect")
    };
    let mut random = [0x22u8; 32];
    random[16..].fill(0x23);
    assert!(s.on_connect(conn, Some(random), now));
    conn
}

/// A CHALLENGE carrying `nonce` reaches the source; returns the HELLO it
/// answers with.
pub(crate) fn src_challenge(s: &mut Src, conn: u64, nonce: &[u8; 16], now: Instant) -> Hello {
    let mut b = [0u8; 64];
    let n = encode_challenge(&Crc, nonce, &mut b).unwrap();
    assert_eq!(s.on_frame(&Crc, conn, &b[..n], now), SRx::Continue);
    let SStep::Control { conn: c, frame } = s.poll_sender(&Crc, now) else {
        panic!("no HELLO")
    };
    assert_eq!(c, conn);
    s.on_sent(conn, true, now);
    let (h, payload) = decode_frame(&Crc, frame.as_bytes()).unwrap();
    assert_eq!(h.kind, Kind::Hello);
    let hello = Hello::decode(payload).unwrap();
    assert_eq!(hello.nonce, S_NONCE);
    hello
}

/// A HELLO_REPLY (signed here as a target with `secret`) reaches the
/// source.
pub(crate) fn src_reply(
    s: &mut Src,
    conn: u64,
    secret: Option<&str>,
    mut reply: Hello,
    now: Instant,
) -> SRx {
    auth::sign(
        secret.map(str::as_bytes),
        MacLabel::Reply,
        &S_NONCE,
        &mut reply,
    );
    let mut b = [0u8; MAX_CONTROL_FRAME];
    let n = encode_hello(&Crc, &reply, true, &mut b).unwrap();
    s.on_frame(&Crc, conn, &b[..n], now)
}

/// The accepting reply a target over [`DEV`] and [`REGION`] would send.
pub(crate) fn reply_of(last_applied: u64) -> Hello {
    Hello {
        proto_version: u32::from(specmirror_core::log::record::VERSION),
        dev_sectors: DEV,
        region_sectors: REGION,
        generation: GEN,
        last_applied,
        nonce: [0x33; 16],
        mac: [0; 32],
        flags: 0,
        block_size: 0,
        gens: Default::default(),
    }
}

/// Encodes a record frame `h` with `payload` (for crafted streams).
pub(crate) fn record(kind: Kind, seq: u64, sector: u64, count: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = Header::new(kind);
    h.seq = seq;
    h.sector = sector;
    h.count = count;
    h.len = payload.len() as u32;
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    let n = encode_frame(&Crc, &h, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The source's link state shorthand.
pub(crate) fn link(p: &Pair<Crc>) -> source::LinkState {
    p.s.link_state()
}

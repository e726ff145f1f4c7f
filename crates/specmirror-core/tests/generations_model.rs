//! The generation rules against a model of both sides' disks (invariant
//! I8): random host writes, disconnects, syncs, crashes of either side
//! between any two persisted steps, and an operator who replaces the
//! target with a second one and later brings the first back; at every handshake the rule that fires
//! must be safe for the images the model holds, and once crashes stop a
//! sync brings the two images level.
//!
//! Model assumptions (the parts issue 19 makes true in the module): a
//! write streamed while connected is durable on the target before the host
//! sees it complete, and every persisted step (a superblock or a bitmap
//! bit) is atomic, which `tests/meta.rs` shows for the superblock copies.

use specmirror_core::log::meta::generation::{
    decide, plan, Generations, InitialSync, Refusal, Rule, SyncPlan,
};

/// xorshift64*: deterministic, seed printed on failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CHUNKS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Down,
    Syncing,
    Streaming,
}

struct Model {
    rng: Rng,
    /// Source: persisted generations and bitmap, data versions per chunk.
    src: Generations,
    bits: [bool; CHUNKS],
    src_data: [u64; CHUNKS],
    /// Target: persisted generations, consistent flag, data.
    tgt: Generations,
    consistent: bool,
    tgt_data: [u64; CHUNKS],
    phase: Phase,
    /// The other target's disk (generations, consistent, data), swapped in
    /// by the operator while the link is down.
    spare: (Generations, bool, [u64; CHUNKS]),
    /// Persisted steps left before the injected crash (None: no crash).
    crash_in: Option<u32>,
    version: u64,
    /// Every generation the source ever held or based a sync on.
    ever: Vec<u64>,
    /// Targets refused as older than the source's history, then wiped by
    /// the operator as the docs tell them to.
    too_old: u64,
    /// The source's memory of the ids its last full sync drew (as
    /// `gens.rs` keeps it): whether the SYNC_START naming the base, and
    /// the SYNC_DONE naming the current generation, may have left it. A
    /// source restart forgets it.
    minted: Option<(bool, bool)>,
    log: Vec<String>,
}

/// A crash cut the event short.
struct Crashed;

impl Model {
    fn new(seed: u64) -> Model {
        let mut rng = Rng(seed | 1);
        let first = rng.next() | 1;
        Model {
            rng,
            src: Generations {
                current: first,
                ..Generations::default()
            },
            bits: [false; CHUNKS],
            src_data: [0; CHUNKS],
            tgt: Generations::default(),
            consistent: false,
            tgt_data: [0; CHUNKS],
            phase: Phase::Down,
            spare: (Generations::default(), false, [0; CHUNKS]),
            crash_in: None,
            version: 0,
            ever: vec![first],
            too_old: 0,
            minted: None,
            log: Vec::new(),
        }
    }

    fn fresh_gen(&mut self) -> u64 {
        let g = self.rng.next() | 1;
        self.ever.push(g);
        g
    }

    /// One persisted step; a due crash happens before it takes effect.
    fn step(&mut self) -> Result<(), Crashed> {
        match self.crash_in {
            Some(0) => {
                self.crash_in = None;
                self.phase = Phase::Down;
                if self.rng.below(2) == 0 {
                    self.minted = None;
                    self.log.push("  crash (the source restarts)".into());
                } else {
                    self.log.push("  crash (the link or the target)".into());
                }
                Err(Crashed)
            }
            Some(n) => {
                self.crash_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn write(&mut self, c: usize) -> Result<(), Crashed> {
        self.version += 1;
        let v = self.version;
        self.log
            .push(format!("write chunk {c} v{v} ({:?})", self.phase));
        if self.phase == Phase::Down {
            // Tracking begins (superblock), then the bit, then the data.
            self.step()?;
            let g = self.fresh_gen();
            self.src.begin_tracking(g);
            self.step()?;
            self.bits[c] = true;
        }
        self.step()?;
        self.src_data[c] = v;
        if self.phase != Phase::Down {
            // Streamed, durable on the target before the host's completion.
            self.tgt_data[c] = v;
        }
        Ok(())
    }

    fn connect(&mut self, mode: InitialSync) -> Result<(), String> {
        let rule = decide(&self.src, &self.tgt, self.consistent);
        self.log.push(format!(
            "connect: {} (src {:?}, tgt {:?} consistent {})",
            rule.as_str(),
            self.src,
            self.tgt,
            self.consistent
        ));
        let differ: Vec<usize> = (0..CHUNKS)
            .filter(|&c| self.src_data[c] != self.tgt_data[c])
            .collect();
        match rule {
            Rule::Resume if !differ.is_empty() => {
                return Err(format!(
                    "resume over an image that differs in chunks {differ:?}"
                ))
            }
            Rule::Resync => {
                if let Some(c) = differ.iter().find(|&&c| !self.bits[c]) {
                    return Err(format!(
                        "resync would miss chunk {c}, which differs and is clean in the bitmap"
                    ));
                }
            }
            Rule::Refuse(Refusal::Unrelated)
                if self.ever.contains(&self.tgt.current)
                    && !self.src.in_history(self.tgt.current) =>
            {
                self.log.push(
                    "  older than the history: the operator wipes the target's metadata".into(),
                );
                self.too_old += 1;
                self.tgt = Generations::default();
                self.consistent = false;
                return Ok(());
            }
            Rule::Refuse(r) => {
                return Err(format!("refused ({}) two halves of one mirror", r.as_str()))
            }
            _ => {}
        }
        let p = plan(rule, mode);
        if p == SyncPlan::Stream {
            self.phase = Phase::Streaming;
            return Ok(());
        }
        let _ = self.start_sync(p);
        Ok(())
    }

    fn start_sync(&mut self, p: SyncPlan) -> Result<(), Crashed> {
        let full = p == SyncPlan::All || p == SyncPlan::Checksum;
        if full {
            // Every bit first, then the new base: a crash between leaves
            // extra bits, never a base without them.
            self.step()?;
            self.bits = [true; CHUNKS];
        }
        self.step()?;
        let base = match (full, self.minted) {
            // The last full sync's ids never left the source: kept.
            (true, Some((false, _))) => self.src.bitmap,
            (true, m) => {
                let (b, g) = (self.fresh_gen(), self.fresh_gen());
                self.minted = Some((false, false));
                if m == Some((true, false)) {
                    self.src.restart_full(b, g)
                } else {
                    self.src.begin_full(b, g)
                }
            }
            (false, _) => {
                let g = self.fresh_gen();
                self.src.begin_tracking(g)
            }
        };
        // SYNC_START leaves the source, then the target takes it.
        if let Some(m) = self.minted.as_mut() {
            m.0 = true;
        }
        self.step()?;
        self.tgt.target_sync_started(base);
        self.consistent = false;
        self.phase = Phase::Syncing;
        Ok(())
    }

    /// Sends one dirty chunk, or ends the sync when none is left.
    fn sync_step(&mut self) -> Result<(), Crashed> {
        if let Some(c) = (0..CHUNKS).find(|&c| self.bits[c]) {
            // Checksum mode would skip equal chunks; sending them is the
            // same end state.
            self.step()?;
            self.tgt_data[c] = self.src_data[c];
            self.step()?;
            self.bits[c] = false;
            self.log.push(format!("  synced chunk {c}"));
            return Ok(());
        }
        if let Some(m) = self.minted.as_mut() {
            m.1 = true;
        }
        self.step()?;
        self.tgt.target_sync_started(self.src.current);
        self.consistent = true;
        self.step()?;
        self.src.bitmap = 0;
        self.minted = None;
        self.phase = Phase::Streaming;
        self.log.push("  sync done".into());
        Ok(())
    }

    fn check_consistent(&self) -> Result<(), String> {
        // I9: a consistent target outside a sync holds the source's image
        // whenever the stream is up (writes reach both).
        if self.consistent && self.phase == Phase::Streaming && self.src_data != self.tgt_data {
            return Err("consistent and streaming, but the images differ".into());
        }
        Ok(())
    }

    fn run(&mut self, events: usize) -> Result<(), String> {
        let mode = if self.rng.below(2) == 0 {
            InitialSync::Full
        } else {
            InitialSync::Checksum
        };
        for _ in 0..events {
            if self.crash_in.is_none() && self.rng.below(8) == 0 {
                self.crash_in = Some(self.rng.below(4) as u32);
            }
            match (self.phase, self.rng.below(10)) {
                (_, 0..=3) => {
                    let c = self.rng.below(CHUNKS as u64) as usize;
                    let _ = self.write(c);
                }
                (Phase::Down, 4) => {
                    self.log.push("operator swaps the target".into());
                    let cur = (self.tgt, self.consistent, self.tgt_data);
                    (self.tgt, self.consistent, self.tgt_data) = self.spare;
                    self.spare = cur;
                }
                (Phase::Down, _) => self.connect(mode)?,
                (Phase::Syncing, 4..=8) => {
                    let _ = self.sync_step();
                }
                (_, 9) | (Phase::Streaming, _) => {
                    self.log.push("disconnect".into());
                    self.phase = Phase::Down;
                }
                _ => {}
            }
            self.check_consistent()?;
        }
        // Faults stop: connect and sync to the end.
        self.crash_in = None;
        self.phase = Phase::Down;
        self.connect(mode)?;
        if self.phase == Phase::Down {
            self.connect(mode)?;
        }
        for _ in 0..CHUNKS + 2 {
            if self.phase == Phase::Syncing {
                let _ = self.sync_step();
            }
        }
        if self.phase != Phase::Streaming || !self.consistent || self.src_data != self.tgt_data {
            return Err(format!(
                "after the final sync: phase {:?}, consistent {}, images equal {}",
                self.phase,
                self.consistent,
                self.src_data == self.tgt_data
            ));
        }
        Ok(())
    }
}

#[test]
fn generation_rules_never_resume_or_resync_over_a_missed_chunk() {
    let seeds = std::env::var("DMSM_GEN_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u64);
    let mut too_old = 0;
    for seed in 1..=seeds {
        let mut m = Model::new(seed);
        if let Err(e) = m.run(60) {
            panic!("seed {seed}: {e}\n{}", m.log.join("\n"));
        }
        too_old += m.too_old;
    }
    println!("{seeds} seeds, {too_old} targets refused as older than the history");
    assert!(
        too_old * 100 <= seeds,
        "history too short: {too_old} refusals in {seeds} seeds"
    );
}

//! The chunk digests of checksum sync and verify, as the simulated devices
//! compute them.
//!
//! The kernel hashes chunks with the core's `auth::Sha256`. The simulator
//! hashes far more bytes than any other step of a seed (a quarter of its
//! run time went there), so it uses the `sha2` crate, which runs on the
//! CPU's SHA instructions where there are some. Both are SHA-256: the test
//! below holds them to the same digests, so a seed runs exactly as it would
//! with the core's code.

/// SHA-256 of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use specmirror_core::transport::proto::auth::Sha256;

    use crate::rng::Rng;

    #[test]
    fn same_digests_as_the_core() {
        let mut rng = Rng::new(7);
        for len in (0..300).chain([4096, 65536, 65536 + 13, 1 << 20]) {
            let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            assert_eq!(super::digest(&data), Sha256::digest(&data), "length {len}");
        }
    }
}

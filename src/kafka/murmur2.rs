//! Kafka's Java client partitioner: murmur2 of the key bytes.
//!
//! librdkafka's default partitioner (`consistent_random`, CRC32) puts a key on a different
//! partition than the Java producer does. tidemark configures librdkafka's `murmur2_random`,
//! which is the Java algorithm, so a key lands where any Java producer (Debezium, Kafka
//! Connect, Kafka Streams) would put it. This module is the same algorithm in Rust, checked
//! against Kafka's own test vectors, so tests (and tools) can say which partition a key
//! must be on.

/// `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h = SEED ^ length as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java producer picks for `key` among `partitions`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_own_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        for (key, expected) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_non_negative_and_in_range() {
        for key in [&b""[..], b"x", b"{\"id\":1}", b"\xff\xff\xff\xff"] {
            let p = java_partition(key, 7);
            assert!((0..7).contains(&p));
        }
    }
}

//! Encoding a batch of events on several threads, in the batch's order.
//!
//! Snapshot rows reach the output in batches of a few thousand (see
//! [`EventOutput::send_batch`](super::EventOutput::send_batch)). Encoding them (Avro or
//! JSON) is most of the CPU a row costs in tidemark, and it used to run on one thread, the
//! snapshot's emitter, while the COPY workers waited on it. [`encode_batch`] splits a batch
//! into contiguous parts, encodes each part on its own scoped thread with its own clone of
//! the encoder (encoders keep scratch buffers, so they are not shared), and returns the
//! records in the batch's order: the output produces them exactly as if they had been
//! encoded one by one. Batches too small to be worth a thread are encoded on the caller's
//! thread.
//!
//! The caller's thread blocks while the parts are encoded (a few milliseconds for a batch
//! of the snapshot's batch size); the threads are scoped, so nothing
//! outlives the call and a panic in one is not swallowed.

use std::ops::Range;
use std::sync::OnceLock;

/// Fewest events a part is given: below this a thread costs more than it saves.
pub const MIN_PART: usize = 256;

/// Threads used to encode one batch: the machine's cores, at most four.
pub fn encode_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(1)
            .clamp(1, 4)
    })
}

/// One encoded record: where its key (if it has one) and value are in the part's bytes.
#[derive(Debug, Clone)]
struct Span {
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// The records of one contiguous part of a batch, in one buffer.
#[derive(Debug, Default)]
struct Part {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

/// A batch's records, encoded, in the batch's order.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    parts: Vec<Part>,
}

impl EncodedBatch {
    /// Each record as (key, value), in the batch's order; the key is `None` for a keyless
    /// record.
    pub fn records(&self) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
        self.parts.iter().flat_map(|part| {
            part.spans.iter().map(move |span| {
                (
                    span.key.clone().map(|k| &part.bytes[k]),
                    &part.bytes[span.value.clone()],
                )
            })
        })
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.spans.len()).sum()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of keys and values together.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }
}

/// Encodes `items` in order with clones of `encoder`, on up to [`encode_threads`] threads.
///
/// `encode` writes one item's key and value into the buffers it is given (both empty) and
/// returns whether the item has a key. The first error (in the batch's order) is returned;
/// nothing of a failed batch is kept.
pub fn encode_batch<E, T, Err, F>(items: &[T], encoder: &E, encode: F) -> Result<EncodedBatch, Err>
where
    E: Clone + Send + Sync,
    T: Sync,
    Err: Send,
    F: Fn(&mut E, &T, &mut Vec<u8>, &mut Vec<u8>) -> Result<bool, Err> + Sync,
{
    let threads = encode_threads().min(items.len() / MIN_PART).max(1);
    let encode_part = |items: &[T]| -> Result<Part, Err> {
        let mut own = encoder.clone();
        let mut part = Part {
            bytes: Vec::with_capacity(items.len() * 128),
            spans: Vec::with_capacity(items.len()),
        };
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for item in items {
            key.clear();
            value.clear();
            let has_key = encode(&mut own, item, &mut key, &mut value)?;
            let start = part.bytes.len();
            part.bytes.extend_from_slice(&key);
            let key_range = has_key.then_some(start..part.bytes.len());
            let value_start = part.bytes.len();
            part.bytes.extend_from_slice(&value);
            part.spans.push(Span {
                key: key_range,
                value: value_start..part.bytes.len(),
            });
        }
        Ok(part)
    };
    if threads == 1 {
        return Ok(EncodedBatch {
            parts: vec![encode_part(items)?],
        });
    }
    let size = items.len().div_ceil(threads);
    let mut chunks = items.chunks(size);
    let first = chunks.next().unwrap_or_default();
    let results: Vec<Result<Part, Err>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .map(|chunk| scope.spawn(|| encode_part(chunk)))
            .collect();
        let mut results = vec![encode_part(first)];
        for handle in handles {
            // A panic in an encoder is a bug; pass it on rather than lose the batch silently.
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        results
    });
    let parts = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(EncodedBatch { parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Counter {
        calls: usize,
    }

    fn encode(
        counter: &mut Counter,
        item: &u32,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, String> {
        counter.calls += 1;
        if *item >= u32::MAX - 1 {
            return Err(format!("item {item} refused"));
        }
        value.extend_from_slice(&item.to_be_bytes());
        if item % 3 == 0 {
            key.extend_from_slice(format!("k{item}").as_bytes());
            return Ok(true);
        }
        Ok(false)
    }

    #[test]
    fn a_large_batch_comes_back_in_order_with_its_keys() {
        let items: Vec<u32> = (0..5000).collect();
        let batch = encode_batch(&items, &Counter::default(), encode).unwrap();
        assert_eq!(batch.len(), 5000);
        for (i, (key, value)) in batch.records().enumerate() {
            assert_eq!(value, (i as u32).to_be_bytes());
            match key {
                Some(key) => {
                    assert_eq!(i % 3, 0);
                    assert_eq!(key, format!("k{i}").as_bytes());
                }
                None => assert_ne!(i % 3, 0),
            }
        }
        assert_eq!(
            batch.bytes(),
            5000 * 4
                + (0..5000)
                    .filter(|i| i % 3 == 0)
                    .map(|i: u32| format!("k{i}").len())
                    .sum::<usize>()
        );
    }

    #[test]
    fn a_small_batch_and_an_empty_one_are_encoded_too() {
        let batch = encode_batch(&[7u32, 9], &Counter::default(), encode).unwrap();
        let values: Vec<_> = batch.records().map(|(_, v)| v.to_vec()).collect();
        assert_eq!(
            values,
            vec![7u32.to_be_bytes().to_vec(), 9u32.to_be_bytes().to_vec()]
        );
        let empty = encode_batch(&[] as &[u32], &Counter::default(), encode).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn the_first_error_in_order_is_returned() {
        let mut items: Vec<u32> = (0..4000).collect();
        items[1500] = u32::MAX;
        items[3999] = u32::MAX - 1;
        let error = encode_batch(&items, &Counter::default(), encode).unwrap_err();
        assert_eq!(error, format!("item {} refused", u32::MAX));
        items[1500] = 1500;
        let error = encode_batch(&items, &Counter::default(), encode).unwrap_err();
        assert_eq!(error, format!("item {} refused", u32::MAX - 1));
    }
}

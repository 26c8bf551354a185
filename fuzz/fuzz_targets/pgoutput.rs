//! Arbitrary bytes into the pgoutput decoder: it must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, message)) = data.split_first() else {
        return;
    };
    let bytes = bytes::Bytes::copy_from_slice(message);
    let _ = tidemark::source::pgoutput::decode(&bytes, flag & 1 == 1);
});

//! The request-head sniffer (`src/server/sniff.rs`) on arbitrary bytes, as a caller's
//! connection delivers them.
//!
//! Never panics; its verdicts do not depend on how the bytes were split into reads (TCP may
//! split them anywhere), and there is never more than one verdict per blank line in the stream.
//!
//! Input: byte 0 picks the read size (1 to 64), byte 1 the field limit (1 to 200), the rest is
//! the stream.
#![no_main]

use authrelay::fuzzing::sniff;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [piece, fields, stream @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece % 64) + 1;
    let max_fields = usize::from(*fields % 200) + 1;
    let whole = sniff(stream, stream.len().max(1), max_fields);
    let split = sniff(stream, piece, max_fields);
    assert_eq!(whole, split, "verdicts depend on the read size {piece}");
    let blank_lines = stream.windows(4).filter(|w| *w == b"\r\n\r\n").count();
    assert!(whole.0.len() <= blank_lines, "{} verdicts, {blank_lines} blank lines", whole.0.len());
});

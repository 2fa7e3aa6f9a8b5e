//! The readers of user arrays: `.npy`, safetensors and CSV, fed arbitrary bytes. The property is the project's rule
//! for bad input: a result or an error, never a panic or an abort (`scripts/fuzz.sh` runs it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the reader, so that one corpus serves all three.
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(t) = gradleak::arrays::parse_npy(bytes) {
                // What the readers do next with an array: a size and a conversion.
                let _ = t.size();
                let _ = t.f_to_kind(tch::Kind::Double);
            }
        }
        1 => {
            if let Ok(named) = gradleak::arrays::parse_safetensors(bytes) {
                for (_, t) in named {
                    let _ = t.f_to_kind(tch::Kind::Double);
                }
            }
        }
        _ => {
            let _ = gradleak::arrays::parse_csv(&String::from_utf8_lossy(bytes));
        }
    }
});

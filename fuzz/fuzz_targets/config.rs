//! The config parser must answer every input with a config or an error naming the file, and never
//! panic. `cargo +nightly fuzz run config -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = teal::config::Config::parse(text, Some(std::path::Path::new("f.toml"))) {
            assert!(e.to_string().starts_with("f.toml"));
        }
    }
});

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaycast_fuzz::tracker_json(data));

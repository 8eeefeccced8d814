#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipetrail_fuzz::github_audit(data));

//! Any bytes as a command line on a cpq_listener: see `pvo_proto::cpq::check_command_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pvo_proto::cpq::check_command_line(data);
});

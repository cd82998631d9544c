//! The connection-protocol parser (slimgate::ssh::wire::parse_channel_msg,
//! RFC 4254) on arbitrary bytes. Properties: never panics; data fits in the
//! input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::ssh::wire::{ChannelMsg, parse_channel_msg};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(ChannelMsg::Data { data: d, .. } | ChannelMsg::ExtendedData { data: d, .. })) =
        parse_channel_msg(data)
    {
        assert!(d.len() + 9 <= data.len());
    }
});

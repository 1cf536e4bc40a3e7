//! Wire formats: fixed layouts and checked views. Nothing here is `unsafe`.
#![forbid(unsafe_code)]

pub mod device;
pub mod fbex;
pub mod fc;
pub mod info;
pub mod nlmsg;
pub mod record;
pub mod rtnl;
pub mod uevent;

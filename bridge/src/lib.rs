//! faultbridge

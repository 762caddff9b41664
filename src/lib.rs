#![doc = include_str!("../README.md")]

pub use ssehub_core::*;

/// The in-memory backend (feature `memory`, on by default).
#[cfg(feature = "memory")]
pub use ssehub_memory as memory;
#[cfg(feature = "memory")]
pub use ssehub_memory::MemoryBroker;

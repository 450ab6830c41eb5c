//! The WebAssembly module's exports (feature `wasm`), for the Worker.
//!
//! No bindings generator and no allocator: the module owns one fixed input
//! buffer. The JavaScript side asks for its address and size
//! (`input_ptr`, `input_capacity`), writes one question in the [`wire`]
//! format there, and calls `route(len)`, which answers the cluster's index,
//! -1 (no cluster may serve) or -2 (malformed input).
//!
//! The buffer is an array of `AtomicU8` so that no `unsafe` block is
//! needed: its address may be handed out safely, and bytes written there
//! from outside Rust (the host, while no Rust code runs) are read back with
//! plain atomic loads, never through a `&[u8]` that the host could change.
//! The only thing the `unsafe_code` lint flags here is `#[no_mangle]`,
//! which an export needs to keep its name; it is allowed on those three
//! functions alone.
//!
//! [`wire`]: crate::wire

use core::sync::atomic::{AtomicU8, Ordering};

use crate::wire::{route_wire, MALFORMED};

/// Size of the input buffer: 64 clusters with 255-byte names take 16.7 KiB,
/// which leaves the Worker room for accounts of up to 4 KiB and more.
const INPUT_CAPACITY: usize = 32 * 1024;

static INPUT: [AtomicU8; INPUT_CAPACITY] = [const { AtomicU8::new(0) }; INPUT_CAPACITY];

/// Address of the input buffer in the module's memory.
#[allow(unsafe_code)] // #[no_mangle]: the export's name is its contract.
#[no_mangle]
pub extern "C" fn input_ptr() -> *const AtomicU8 {
    INPUT.as_ptr()
}

/// Size of the input buffer in bytes.
#[allow(unsafe_code)] // #[no_mangle]: the export's name is its contract.
#[no_mangle]
pub extern "C" fn input_capacity() -> u32 {
    INPUT_CAPACITY as u32
}

/// Answers the question in the first `len` bytes of the input buffer.
#[allow(unsafe_code)] // #[no_mangle]: the export's name is its contract.
#[no_mangle]
pub extern "C" fn route(len: u32) -> i32 {
    let len = len as usize;
    if len > INPUT_CAPACITY {
        return MALFORMED;
    }
    let mut copy = [0u8; INPUT_CAPACITY];
    for (dst, src) in copy[..len].iter_mut().zip(&INPUT) {
        *dst = src.load(Ordering::Relaxed);
    }
    route_wire(&copy[..len])
}

/// A panic cannot happen on any input (decoding is checked, indexing is
/// bounded), but a `no_std` module must say what one would do: trap, which
/// the Worker sees as an exception and answers 500.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

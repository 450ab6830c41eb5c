//! Memory hints. Large arrays the engine indexes at random (the id
//! registry, its hash index, resting orders) are asked to be backed by
//! transparent huge pages, which cuts TLB misses on exactly those random
//! accesses. A hint changes no value and no output; where the kernel
//! ignores it (THP off, another OS) nothing changes but speed.

/// Smallest array worth a hint (one 2 MiB huge page).
const MIN_BYTES: usize = 2 << 20;

/// Hints that the buffer of `v` (its whole capacity) be backed by huge pages.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // madvise wants a page-aligned start: round up inside the buffer.
        let start = v.as_ptr() as usize;
        let aligned = (start + 4095) & !4095;
        let len = (start + bytes).saturating_sub(aligned) & !4095;
        if len == 0 {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: [aligned, aligned + len) lies inside the live allocation of
        // `v`; MADV_HUGEPAGE only changes how the kernel backs those pages,
        // never their contents, and an error (e.g. THP unsupported) is
        // harmless, so the return value is ignored.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

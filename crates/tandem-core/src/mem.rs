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
        // The hint covers whole pages: from the page the buffer starts in
        // to the page it ends in. A buffer this large is its own mapping
        // (glibc's malloc maps it, with a 16-byte header before the
        // buffer), and the hint must cover all of that mapping: advising
        // only the whole pages inside the buffer split it in two (the
        // header's page not advised), and then `realloc` could no longer
        // move it with `mremap`: every doubling of the id registry copied
        // it into a new mapping (31-34 ms at 1 M ids, measured with
        // strace: `mremap` failed with EFAULT, then mmap and a copy).
        let start = v.as_ptr() as usize & !4095;
        let end = (v.as_ptr() as usize + bytes + 4095) & !4095;
        #[allow(unsafe_code)]
        // SAFETY: [start, end) is the pages that hold the live allocation
        // of `v`, which are mapped. MADV_HUGEPAGE only changes how the
        // kernel backs pages, never their contents, so it is harmless to
        // whatever else shares the first or last page; an error (e.g. THP
        // unsupported) is harmless too, so the return value is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#if os(Linux)
import CMalloc
#endif

/// How a broker process asks the C allocator to treat large blocks.
public enum ProcessMemory {
    /// Blocks of 256 KiB and more (a release's columns, envelopes, hash tables) are mapped on
    /// their own and returned to the system as soon as they are freed. Without it glibc raises
    /// this threshold as large blocks are freed (up to 32 MiB) and keeps their memory for reuse,
    /// so one large release would leave its peak resident. Called once, when the process starts.
    public static func returnLargeBlocksToTheSystem() {
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 256 * 1024)
        #endif
    }
}

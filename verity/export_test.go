package verity

// DisableSIMD makes Format, Builder and Verify hash with crypto/sha256 one
// block at a time, so the compatibility tests cover the portable path (the
// one the VM tier's CPU model takes) on machines with SHA-NI or AVX-512.
func DisableSIMD(o *Options) { o.noSIMD = true }

package verity

import "golang.org/x/sys/cpu"

// block2 runs the SHA-256 compression function over n 64-byte chunks of
// two independent messages at once (SHA-NI, two interleaved lanes).
//
//go:noescape
func block2(sa, sb *[8]uint32, pa, pb *byte, n int)

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// haveSHA256x2 reports whether the CPU has the SHA extensions (CPUID leaf 7,
// EBX bit 29) and the SSSE3/SSE4.1 instructions block2 uses.
var haveSHA256x2 = func() bool {
	if !cpu.X86.HasSSSE3 || !cpu.X86.HasSSE41 {
		return false
	}
	if max, _, _, _ := cpuid(0, 0); max < 7 {
		return false
	}
	_, b, _, _ := cpuid(7, 0)
	return b&(1<<29) != 0
}()

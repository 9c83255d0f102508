//go:build !amd64

package verity

const haveSHA256x2 = false

func block2(sa, sb *[8]uint32, pa, pb *byte, n int) { panic("unreachable") }

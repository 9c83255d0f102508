//go:build race

package verity_test

// raceEnabled: the race detector allocates on its own; allocation counts
// are meaningless under it.
const raceEnabled = true

package layer

import (
	"context"
	"io"
)

// Test hooks (see place.go).

// SetNoInsertRange makes tar-index conversions move the tar instead of
// inserting room with FALLOC_FL_INSERT_RANGE; the returned func restores.
func SetNoInsertRange(v bool) func() {
	old := testNoInsertRange
	testNoInsertRange = v
	return func() { testNoInsertRange = old }
}

// OnPlaced reports how each tar-index conversion with an output placed its
// tar ("insert-range", "move" or "copy"); the returned func restores.
func OnPlaced(fn func(method string)) func() {
	old := testPlaced
	testPlaced = fn
	return func() { testPlaced = old }
}

// MoveUp is moveUp, for its own tests.
func MoveUp(ctx context.Context, f interface {
	io.ReaderAt
	io.WriterAt
}, n, by int64) error {
	return moveUp(ctx, f, n, by, func(int64, int64) {})
}

// MoveBuf is moveUp's unit.
const MoveBuf = moveBuf

// DecodeReader is the reader Convert puts between the decompressor and the
// tar reader, for its own tests.
func DecodeReader(r io.Reader, kind Compression) io.Reader {
	return &decodeReader{r: r, kind: kind}
}

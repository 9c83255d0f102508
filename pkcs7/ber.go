package pkcs7

import "fmt"

// toDER re-encodes a BER element (the whole input must be exactly one) with
// definite, minimal lengths and with constructed OCTET STRINGs flattened to
// primitive ones, which is what encoding/asn1 and crypto/x509 need. DER input
// comes back unchanged. Like the kernel's ASN.1 decoder it refuses
// high-tag-number identifiers and lengths beyond 32 bits.
//
// It works in one output buffer (no per-level copies), so memory stays
// proportional to the input: every element takes at least two input bytes
// and at most six header bytes in the output.
func toDER(in []byte) ([]byte, error) {
	out := make([]byte, 0, len(in)+8)
	out, rest, err := berElement(out, in, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(rest))
	}
	return out, nil
}

// berElement converts the element at the start of in, appends it to out and
// returns the rest of in.
func berElement(out, in []byte, depth int) ([]byte, []byte, error) {
	if depth > maxDepth {
		return nil, nil, fmt.Errorf("%w: nesting deeper than %d", ErrTooLarge, maxDepth)
	}
	if len(in) < 2 {
		return nil, nil, fmt.Errorf("%w: truncated element", ErrMalformed)
	}
	tag := in[0]
	if tag&0x1f == 0x1f {
		return nil, nil, fmt.Errorf("%w: high-tag-number identifier", ErrMalformed)
	}
	if tag == 0 {
		return nil, nil, fmt.Errorf("%w: unexpected end-of-contents", ErrMalformed)
	}
	constructed := tag&0x20 != 0
	l := in[1]
	in = in[2:]
	var body []byte
	indefinite := false
	switch {
	case l < 0x80:
		if int(l) > len(in) {
			return nil, nil, fmt.Errorf("%w: length beyond input", ErrMalformed)
		}
		body, in = in[:l], in[l:]
	case l == 0x80:
		if !constructed {
			return nil, nil, fmt.Errorf("%w: indefinite length on a primitive element", ErrMalformed)
		}
		indefinite = true
	default:
		n := int(l & 0x7f)
		if n > 4 || n > len(in) {
			return nil, nil, fmt.Errorf("%w: length of length %d", ErrMalformed, n)
		}
		size := 0
		for _, b := range in[:n] {
			size = size<<8 | int(b)
		}
		in = in[n:]
		if size > len(in) {
			return nil, nil, fmt.Errorf("%w: length beyond input", ErrMalformed)
		}
		body, in = in[:size], in[size:]
	}
	if !constructed {
		return appendTLV(out, tag, body), in, nil
	}
	// Constructed: convert the children in place after a header slot of
	// the largest size, then write the real header and move the body
	// down. A constructed OCTET STRING becomes a primitive one holding its
	// segments' contents.
	flatten := tag == 0x24
	if flatten {
		tag = 0x04
	}
	hdrPos := len(out)
	out = append(out, tag, 0, 0, 0, 0, 0)
	bodyStart := len(out)
	src := body
	if indefinite {
		src = in
	}
	for {
		if indefinite {
			if len(src) < 2 {
				return nil, nil, fmt.Errorf("%w: missing end-of-contents", ErrMalformed)
			}
			if src[0] == 0 && src[1] == 0 {
				src = src[2:]
				break
			}
		} else if len(src) == 0 {
			break
		}
		childStart := len(out)
		var err error
		out, src, err = berElement(out, src, depth+1)
		if err != nil {
			return nil, nil, err
		}
		if flatten {
			if out[childStart] != 0x04 {
				return nil, nil, fmt.Errorf("%w: constructed OCTET STRING holds tag %#x", ErrMalformed, out[childStart])
			}
			_, h := parseDERHeader(out[childStart:])
			n := copy(out[childStart:], out[childStart+h:])
			out = out[:childStart+n]
		}
	}
	if indefinite {
		in = src
	}
	n := len(out) - bodyStart
	hdr := appendTLVHeader(out[hdrPos:hdrPos], tag, n)
	copy(out[hdrPos+len(hdr):], out[bodyStart:])
	return out[:hdrPos+len(hdr)+n], in, nil
}

// parseDERHeader returns the body length and header length of a DER element
// that berElement produced (so it is known to be well-formed).
func parseDERHeader(b []byte) (int, int) {
	l := b[1]
	if l < 0x80 {
		return int(l), 2
	}
	n := int(l & 0x7f)
	size := 0
	for _, c := range b[2 : 2+n] {
		size = size<<8 | int(c)
	}
	return size, 2 + n
}

func appendTLV(out []byte, tag byte, body []byte) []byte {
	return append(appendTLVHeader(out, tag, len(body)), body...)
}

// appendTLVHeader appends a DER identifier and definite length (at most six
// bytes).
func appendTLVHeader(out []byte, tag byte, n int) []byte {
	out = append(out, tag)
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 1<<8:
		out = append(out, 0x81, byte(n))
	case n < 1<<16:
		out = append(out, 0x82, byte(n>>8), byte(n))
	case n < 1<<24:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		out = append(out, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return out
}

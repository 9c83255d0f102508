package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--file", "nocolon", "prog"},
		{"--mode"},
		{"--no-such-flag", "prog"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--mode", "bogus", "/bin/true"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unknown mode") {
		t.Errorf("bogus mode: exit %d: %s", code, errb.String())
	}
}

package main

import "testing"

func TestDbgQuickstart(t *testing.T) {
	needRegistryCommand(t)
	code, out, stderr := runCLI(t, "quickstart", "--dir", t.TempDir(), "--no-mount")
	t.Logf("code %d\nOUT %q\nERR %q", code, out, stderr)
}

package main

import "github.com/intact-project/intact/internal/atomicfile"

// checkOutputs refuses, before any work, output paths that exist and are
// not regular files (atomicfile would refuse them at the end). "" and "-"
// (standard output) are skipped.
func checkOutputs(paths ...string) error {
	for _, p := range paths {
		if p == "" || p == "-" {
			continue
		}
		if err := atomicfile.CheckTarget(p); err != nil {
			return err
		}
	}
	return nil
}

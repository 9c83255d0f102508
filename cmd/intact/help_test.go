package main

import (
	"context"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpNamesOnlyRealCommands: every "intact CMD [SUB]" that a help text
// mentions, and every kind of output the root help promises, exists.
func TestHelpNamesOnlyRealCommands(t *testing.T) {
	e := &env{ctx: context.Background(), stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	root := newRootCmd(e)
	// A command is quoted ('intact x y', `intact x y`) or starts an example
	// line; prose such as "intact builds" is not a command.
	mention := regexp.MustCompile("(?m)(?:^[ \\t]+|['`])intact ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, text := range []string{c.Short, c.Long, c.Example} {
			for _, m := range mention.FindAllStringSubmatch(text, -1) {
				top, _, err := root.Find([]string{m[1]})
				if err != nil || top == root {
					t.Errorf("%q help mentions %q: no command %q", c.CommandPath(), m[0], m[1])
					continue
				}
				if m[2] != "" && top.HasSubCommands() {
					if sub, _, err := top.Find([]string{m[2]}); err != nil || sub == top {
						t.Errorf("%q help mentions %q: %q has no subcommand %q", c.CommandPath(), m[0], m[1], m[2])
					}
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	// What the root help says intact builds must be there to build.
	for _, c := range []struct{ phrase, cmd string }{
		{"dm-verity hash trees", "verity"}, {"fs-verity digests", "fsverity"}, {"EROFS layer images", "layer"},
		{"IPE policies", "policy"}, {"signed images", "image"}, {"immutable host images", "host"},
		{"UKI", "uki"}, {"kernel modules", "module"}, {"driver", "driver"}, {"Authenticode", "efi"},
	} {
		if !strings.Contains(root.Long, c.phrase) {
			continue
		}
		if sub, _, err := root.Find([]string{c.cmd}); err != nil || sub == root {
			t.Errorf("the root help promises %s, but there is no %q command", c.phrase, c.cmd)
		}
	}
}

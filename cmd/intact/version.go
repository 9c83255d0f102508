package main

import (
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() { register(newVersionCmd) }

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the intact version and the Go toolchain it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := struct {
				Version string `json:"version"`
				Go      string `json:"go"`
			}{Version: "(devel)"}
			if bi, ok := debug.ReadBuildInfo(); ok {
				v.Go = bi.GoVersion
				if bi.Main.Version != "" {
					v.Version = bi.Main.Version
				}
			}
			if e.json {
				return e.printJSON(v)
			}
			e.printf("intact %s (%s)\n", v.Version, v.Go)
			return nil
		},
	}
}

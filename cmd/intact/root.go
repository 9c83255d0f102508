package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// env carries what every handler needs: streams, global flags and a logger.
// A fresh env and command tree are built per run, so tests can call run
// in-process.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	json  bool // --json: machine-readable output on stdout
	quiet bool // --quiet: only errors and requested data
	debug bool // --debug: debug logging to stderr

	log *slog.Logger
}

// commandGroups holds the constructors of the top-level subcommands; each
// file registers its own in init().
var commandGroups []func(*env) *cobra.Command

func register(f func(*env) *cobra.Command) { commandGroups = append(commandGroups, f) }

// subcommands holds constructors of subcommands that a file adds to a group
// owned by another file (for example `verity sign`, which lives with the
// pkcs7 commands), keyed by the group's name.
var subcommands = map[string][]func(*env) *cobra.Command{}

func registerSub(group string, f func(*env) *cobra.Command) {
	subcommands[group] = append(subcommands[group], f)
}

// exitError ends the program with a specific code after the command has
// already reported what went wrong (for example `policy lint` printing a
// verdict per file). Its message, if any, is printed like any error.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError marks errors in how the command was called (exit status 2):
// cobra's flag and argument validation (wrapped by newRootCmd) and usagef
// in handlers. Every other error is exit status 1, whatever its text says.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "intact",
		Short: "Code integrity for Linux container hosts, from firmware to every container",
		Long: `intact builds and checks the pieces of a code-integrity chain for container
hosts: dm-verity hash trees and root-hash signatures, fs-verity digests,
EROFS layer images, IPE policies and signed container images; Authenticode
signed UKIs and immutable host images for Secure Boot; signed kernel modules
and driver volumes.

Every command answers --help. Global flags: --json for machine-readable output
on stdout, --quiet to print only what was asked for, --debug for debug logs.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelInfo
			if e.quiet {
				level = slog.LevelWarn
			}
			if e.debug {
				level = slog.LevelDebug
			}
			e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
		},
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetContext(e.ctx)
	root.PersistentFlags().BoolVar(&e.json, "json", false, "print machine-readable JSON on stdout")
	root.PersistentFlags().BoolVarP(&e.quiet, "quiet", "q", false, "print only errors and the requested data")
	root.PersistentFlags().BoolVar(&e.debug, "debug", false, "print debug logs on stderr")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	// Command groups get a handler (typedUsageErrors) only to refuse
	// unknown subcommands: their usage shows the subcommands, not a
	// "[flags]" form of their own.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.CompletionOptions.DisableDefaultCmd = true
	for _, f := range commandGroups {
		g := f(e)
		for _, sf := range subcommands[g.Name()] {
			g.AddCommand(sf(e))
		}
		root.AddCommand(g)
	}
	typedUsageErrors(root)
	return root
}

// typedUsageErrors makes every argument-validation error of the tree a
// usageError, so that run can tell usage errors by type. A command group
// (subcommands, no handler of its own) gets a handler that prints its help
// when called alone and a usage error for an unknown subcommand: cobra
// would otherwise print the help and exit 0 for "intact verity frmat".
func typedUsageErrors(c *cobra.Command) {
	if !c.Runnable() && c.HasSubCommands() {
		c.Args = cobra.NoArgs
		c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	}
	if v := c.Args; v != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := v(cmd, args); err != nil {
				return &usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		typedUsageErrors(sub)
	}
}

// run executes the CLI with args and returns the process exit status:
// 0 success, 1 failure, 2 usage error, 130 interrupted (ctx cancelled), or
// the code of an exitError.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, nil))}
	root := newRootCmd(e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		// Interrupted (Ctrl-C, SIGTERM): whatever the command was doing
		// failed because of it; say so once, with the shell's status.
		e.log.Debug("interrupted", "err", err)
		fmt.Fprintln(stderr, "intact: interrupted")
		return 130
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "intact: "+oneLine(ee.msg))
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "intact: "+oneLine(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'intact --help' or add --help to the command for usage.")
		return 2
	}
	return 1
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// printJSON writes v as indented JSON followed by a newline.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printf writes human-oriented output; it is the same stream as data output
// but is suppressed by --quiet.
func (e *env) printf(format string, args ...any) {
	if e.quiet {
		return
	}
	fmt.Fprintf(e.stdout, format, args...)
}

// infof writes progress and notes to stderr unless --quiet or --json.
func (e *env) infof(format string, args ...any) {
	if e.quiet {
		return
	}
	fmt.Fprintf(e.stderr, format, args...)
}

// isTerminal reports whether w is a terminal (for progress bars).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

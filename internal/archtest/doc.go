// Package archtest holds tests that enforce the project's architecture rules
// over the whole module: every raw syscall goes through internal/linux, and
// every package says in its doc comment which format or kernel interface it
// owns. It has no code of its own.
package archtest

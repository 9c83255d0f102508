// Package kmod owns the Linux kernel module file as far as trust is
// concerned: the appended module signature (include/linux/module_signature.h:
// a detached PKCS#7 SignedData, a 12-byte struct module_signature with the
// PKCS#7 length, and the marker "~Module signature appended~\n"), the
// .modinfo section (name, version, vermagic, depends), the xz and zstd
// compression distributions ship modules in (the signature sits inside the
// compression), and loading through finit_module(2) / init_module(2).
//
// Sign appends a signature the way the kernel's scripts/sign-file does (with
// NoCerts the bytes are identical to sign-file's for RSA keys); by default it
// embeds the signer's certificate and chain, which is what lets Linux trust a
// vendor leaf issued by a CA in one of its keyrings. Verify predicts the
// kernel's answer (kernel/module/signing.c, certs/system_keyring.c,
// crypto/asymmetric_keys/pkcs7_verify.c of Linux 6.12 with Debian's
// platform-keyring retry), including the errno and the log line, from the
// certificates the kernel trusts and the certificate hashes it has revoked.
//
// Parsers take untrusted input: sizes are bounded (MaxModuleSize,
// MaxCompressedSize) and every offset is checked.
package kmod

// Package ipe owns Linux's Integrity Policy Enforcement (IPE) LSM as seen
// from userspace: the policy language (parse, lint, format, generate,
// evaluate), signed policy blobs (PKCS#7 SignedData with the policy text
// attached), the securityfs interface under /sys/kernel/security/ipe
// (new_policy, policies/<name>/{pkcs7,policy,name,version,active,update,
// delete}, enforce, success_audit) and IPE's audit records (types 1420
// IPE_ACCESS, 1421 IPE_CONFIG_CHANGE, 1422 IPE_POLICY_LOAD and 1404
// MAC_STATUS).
//
// The parser is a faithful model of Linux 6.12's security/ipe/policy_parser.c
// (read at Debian's linux 6.12.107-1 source): it accepts and rejects the same
// policies and reports the same errno the kernel's new_policy write returns
// (EBADMSG, EINVAL or ERANGE), and adds what the kernel never says: line,
// column, the offending token, what was expected and a hint. Checks the
// kernel makes outside the parser (the PKCS#7 envelope, the securityfs
// directory name, the size of the write, name collisions with loaded
// policies) are modelled by Lint and documented in docs/formats.md
// ("IPE policies"), each with the kernel function that decides it.
//
// Evaluation follows security/ipe/eval.c: per operation, rules in file
// order, properties ANDed, first match wins, then the operation's DEFAULT,
// then the global DEFAULT. Inspect computes a file's IPE properties from
// userspace as far as that is possible; what userspace cannot know is listed
// in the result rather than guessed.
package ipe

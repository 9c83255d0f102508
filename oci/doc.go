// Package oci owns intact's signed dm-verity referrer artifact for OCI images
// and the registry access around it.
//
// The artifact is the one Azure Linux's containerd2 (2.3.4-2) consumes: for
// each platform manifest, one OCI image manifest whose subject is that
// platform manifest, artifactType application/vnd.containerd.erofs.dmverity.v1,
// the empty JSON config, an org.opencontainers.image.created annotation, and
// per image layer three descriptors: the detached PKCS#7 signature of the
// layer's dm-verity root hash, the tar-index EROFS metadata blob and the
// dm-verity hash tree (superblock at offset 0). docs/formats.md
// ("Referrer artifact") lists every field.
//
// The package builds such referrers (BuildReferrer), parses and selects them
// exactly as the consumer does (ParseBundle, SelectBundle: newest created,
// ties to the smallest digest, at most 64 referrers, 4 MiB per manifest,
// 16 MiB in total, any malformed candidate fails), checks a referrer against
// every rule of the interop contract (CheckConformance), and signs and
// verifies whole images on a registry or an OCI image layout through
// oras-go (Signer, Verifier, Inspect). Layer conversion, root-hash
// signatures and hash trees come from the layer, pkcs7 and verity packages.
package oci

// Package snapshotter owns intactd's containerd snapshotter and differ: the
// snapshots API (containerd's snapshots.Snapshotter: Prepare, View, Commit,
// Mounts, Remove, ...) and the diff API's Apply (diff.Applier), served to an
// unmodified containerd v2 as proxy plugins, so that every image layer a
// container runs from is an EROFS image on a dm-verity device whose root
// hash the kernel verified.
//
// Pull path. containerd prepares an extraction snapshot for each layer,
// passing the image reference and platform manifest digest as
// containerd.io/snapshot/cri.* labels (the proxy plugin's
// enable_remote_snapshot_annotations export), then asks the differ to apply
// the layer blob into it. Apply selects the image's dm-verity referrer
// (package oci: the Azure Linux containerd2 schema, newest created wins, at
// most 64 candidates, any malformed one fails) from the registry through
// containerd's own resolver and hosts.toml, fetches the layer's tar-index
// EROFS metadata and hash tree, writes the data device (metadata ‖ the
// layer's tar, decompressed once from containerd's content store and hashed
// against its diff_id while it streams ‖ zeros to 4096) with the tree
// behind it, checks the tree's top-level hash against the signed root hash
// and the metadata against the tree, then opens dm-verity with the PKCS#7
// root-hash signature (root_hash_sig_key_desc: the kernel checks it against
// its trusted keyrings) and mounts the EROFS read-only. Commit records the
// snapshot; its mounts are overlayfs with those verified mounts as lower
// directories. An image without a referrer is refused unless the
// configuration allows unsigned images for its repository; then the layer is
// converted here (the full profile) and opened without a signature.
//
// Layers are kept once per verified root hash, in <root>/layers/<id>: data
// (data device then hash tree), sig (the PKCS#7 signature, if any),
// layer.json (the record) and fs (the EROFS mount point). The device-mapper
// device is intact-<tag>-<id>, tag being derived from the root directory so
// that several snapshotters on one host never collide. A layer lives as long
// as a snapshot refers to it; New reconciles the store with the kernel's
// device-mapper and mount state after a restart or a crash: it re-opens and
// re-mounts what the metadata says should exist (the kernel checks the
// signature again) and removes what should not (half-built layers, devices
// and mounts nobody refers to).
package snapshotter

package vmtest

import "github.com/intact-project/intact/internal/vmassets"

// The VM inputs live in package vmassets (no test code, so production
// commands can use them); these names keep the tests' spelling.
type (
	Assets       = vmassets.Assets
	Deb          = vmassets.Deb
	FetchOptions = vmassets.FetchOptions
	Kbuild       = vmassets.Kbuild
	ModuleBuild  = vmassets.ModuleBuild
)

// KernelMetaPackage: see vmassets.KernelMetaPackage.
const KernelMetaPackage = vmassets.KernelMetaPackage

// Functions and values of package vmassets.
var (
	Fetch             = vmassets.Fetch
	FetchPackages     = vmassets.FetchPackages
	FetchKbuild       = vmassets.FetchKbuild
	DefaultCacheDir   = vmassets.DefaultCacheDir
	RepoRoot          = vmassets.RepoRoot
	CheckKernelConfig = vmassets.CheckKernelConfig
	SourceDigest      = vmassets.SourceDigest
	Ukify             = vmassets.Ukify
	UkifyPackages     = vmassets.UkifyPackages
	VirtFirmware      = vmassets.VirtFirmware

	ErrFetch        = vmassets.ErrFetch
	ErrVerify       = vmassets.ErrVerify
	ErrKernelConfig = vmassets.ErrKernelConfig
)

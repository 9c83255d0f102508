package efi

// Exported for the external tests (package efi_test), which need the VM
// tier's assets (internal/vmtest imports this package).
var (
	MinimalPE         = minimalPE
	EmbeddedSignature = embeddedSignature
)

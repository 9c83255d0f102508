package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/atomicfile"
)

func init() { register(newHostCmd) }

// hostSubcommands are the `intact host` subcommands; each file adds its own.
var hostSubcommands []func(*env) *cobra.Command

func newHostCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "host",
		Short: "Build, sign and boot immutable hosts (Secure Boot UKI + dm-verity root)",
		Long: `Immutable container hosts: Secure Boot keys, a disk image with a signed
UKI and a signed dm-verity EROFS root that boots with IPE enforcing, and a
QEMU runner to try it.

  keys create   make PK, KEK, db and a signing key (with .auth updates)
  keys enroll   enroll them into the firmware (setup mode, efivarfs)
  build         build the disk image from a root tree, tar or OCI image
  run           boot a built disk under QEMU with OVMF Secure Boot

See docs/host.md.`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newHostKeysCmd(e))
	for _, f := range hostSubcommands {
		g.AddCommand(f(e))
	}
	return g
}

func newHostKeysCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "keys",
		Short: "Create and enroll Secure Boot keys",
		Args:  cobra.NoArgs,
	}
	g.AddCommand(newHostKeysCreateCmd(e), newHostKeysEnrollCmd(e))
	return g
}

func newHostKeysCreateCmd(e *env) *cobra.Command {
	var dir, name string
	c := &cobra.Command{
		Use:   "create --dir DIR",
		Short: "Generate PK, KEK, db and a signing key",
		Long: `Generate a Secure Boot key hierarchy in DIR (created with mode 0700):

  PK.key PK.crt     platform key (self-signed RSA-2048 CA)
  KEK.key KEK.crt   key exchange key (self-signed)
  db.key db.crt     db key: enrolled in db, signs UKIs; Linux loads db
                    certificates into its platform keyring
  signing.key/.crt  a leaf issued by db (authorityKeyIdentifier = db's key
                    id, as Linux chains it) for dm-verity root hashes,
                    layers and IPE policies
  PK.auth KEK.auth db.auth
                    signed variable updates for enrollment (PK and KEK
                    signed by PK, db by KEK)
  GUID              the signature owner GUID

Private keys are PKCS#8 PEM, mode 0600. An existing key set is never
overwritten. Keep PK.key and KEK.key offline once the keys are enrolled.
Note that firmware also runs EFI binaries signed by the signing key (it
chains to db); see docs/host.md for the trade-off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			ks, err := efi.GenerateKeys(efi.KeyOptions{Name: name})
			if err != nil {
				return err
			}
			if err := ks.WriteDir(dir); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(struct {
					Dir   string `json:"dir"`
					Owner string `json:"owner_guid"`
				}{dir, ks.Owner})
			}
			e.printf("created PK, KEK, db and signing keys in %s (owner %s)\n", dir, ks.Owner)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory for the key set (required)")
	c.Flags().StringVar(&name, "name", "intact", "prefix of the certificates' common names")
	return c
}

func newHostKeysEnrollCmd(e *env) *cobra.Command {
	var dir, efivars, export string
	c := &cobra.Command{
		Use:   "enroll --dir DIR",
		Short: "Enroll db, KEK and PK into the firmware (setup mode only)",
		Long: `Enroll the key set in DIR into the UEFI firmware through efivarfs: db,
then KEK, then PK (writing PK ends setup mode; after the next boot Secure
Boot enforces and only images signed by db boot). Uses the signed updates
DIR/{db,KEK,PK}.auth.

Refused unless the firmware is in setup mode (clear the platform key in the
firmware setup first): enrolling over existing keys is never attempted.
Needs root and efivarfs at /sys/firmware/efi/efivars (--efivars to point
elsewhere).

--export OUT writes the signature lists (PK.esl, KEK.esl, db.esl) and the
signed updates (.auth) to OUT instead, for firmware setup menus or
virt-fw-vars.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			ks, err := efi.LoadKeys(dir)
			if err != nil {
				return err
			}
			auth := map[string][]byte{}
			for _, vr := range efi.EnrollOrder {
				b, err := os.ReadFile(filepath.Join(dir, vr.Name+".auth"))
				if err != nil {
					return err
				}
				auth[vr.Name] = b
			}
			if export != "" {
				esl, _, err := ks.Updates()
				if err != nil {
					return err
				}
				if err := os.MkdirAll(export, 0o755); err != nil {
					return err
				}
				for n := range esl {
					if err := atomicfile.WriteFile(filepath.Join(export, n+".esl"), esl[n], 0o644); err != nil {
						return err
					}
					if err := atomicfile.WriteFile(filepath.Join(export, n+".auth"), auth[n], 0o644); err != nil {
						return err
					}
				}
				if e.json {
					return e.printJSON(struct {
						Export string `json:"export"`
						Owner  string `json:"owner_guid"`
					}{export, ks.Owner})
				}
				e.printf("wrote PK, KEK and db .esl and .auth files to %s\n", export)
				return nil
			}
			v := efi.EFIVars{Dir: efivars}
			var done []string
			err = v.Enroll(cmd.Context(), auth, func(vr efi.Variable) {
				done = append(done, vr.Name)
				e.infof("enrolled %s\n", vr.Name)
			})
			if err != nil {
				return err
			}
			st, _ := v.State()
			if e.json {
				return e.printJSON(struct {
					Enrolled []string  `json:"enrolled"`
					State    efi.State `json:"state"`
				}{done, st})
			}
			e.printf("enrolled db, KEK and PK from %s; setup mode %v: reboot to boot with Secure Boot enforcing\n", dir, st.SetupMode)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "key set directory (from 'keys create'; required)")
	c.Flags().StringVar(&efivars, "efivars", "", "efivarfs directory (default "+efi.DefaultEFIVars+")")
	c.Flags().StringVar(&export, "export", "", "write .esl and .auth files to this directory instead of enrolling")
	return c
}

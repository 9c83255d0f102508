package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/snapshotter"
)

// DefaultConfigPath is read when --config is not given (and skipped when it
// does not exist).
const DefaultConfigPath = "/etc/intact/intactd.toml"

// config is intactd.toml. Every key is also a flag of the same name with
// dashes (root -> --root, require_signatures -> --require-signatures); a
// flag given on the command line wins over the file.
type config struct {
	Root              string   `toml:"root"`
	Address           string   `toml:"address"`
	ContainerdAddress string   `toml:"containerd_address"`
	ContainerdRoot    string   `toml:"containerd_root"`
	HostsDir          string   `toml:"hosts_dir"`
	RegistryAuth      string   `toml:"registry_auth"`
	RequireSignatures bool     `toml:"require_signatures"`
	AllowUnsigned     []string `toml:"allow_unsigned"`
	TrustAnchors      []string `toml:"trust_anchors"`
	MaxLayerSize      int64    `toml:"max_layer_size"`
	LogLevel          string   `toml:"log_level"`
}

func defaultConfig() config {
	return config{
		Root:              "/var/lib/intact",
		Address:           "/run/intact/intactd.sock",
		ContainerdAddress: "/run/containerd/containerd.sock",
		ContainerdRoot:    "/var/lib/containerd",
		HostsDir:          "/etc/containerd/certs.d",
		RequireSignatures: true,
		LogLevel:          "info",
	}
}

// flags binds a flag for every key; the defaults shown are the built-in
// ones.
func (c *config) flags(fs *pflag.FlagSet) {
	d := defaultConfig()
	fs.StringVar(&c.Root, "root", d.Root, "directory for the metadata database, snapshots and verified layers")
	fs.StringVar(&c.Address, "address", d.Address, "unix socket intactd serves containerd's snapshots and diff APIs on")
	fs.StringVar(&c.ContainerdAddress, "containerd-address", d.ContainerdAddress, "containerd's socket, to read layer blobs and manifests from its content store")
	fs.StringVar(&c.ContainerdRoot, "containerd-root", d.ContainerdRoot, "containerd's root directory: layer blobs are read from its content store files when they are there (faster than the content API); \"\" to always use the API")
	fs.StringVar(&c.HostsDir, "hosts-dir", d.HostsDir, "registry host configuration in containerd's config_path layout (<dir>/<host>/hosts.toml: mirrors, plain-http, CA, client certificates); \"\" for containerd's defaults")
	fs.StringVar(&c.RegistryAuth, "registry-auth", "", "Docker-style config.json with registry credentials (auths) for fetching referrers; \"\" for anonymous access")
	fs.BoolVar(&c.RequireSignatures, "require-signatures", d.RequireSignatures, "refuse every layer without a signed dm-verity referrer, except repositories named by --allow-unsigned")
	fs.StringSliceVar(&c.AllowUnsigned, "allow-unsigned", nil, "repository allowed to be unsigned (its layers are converted here and opened without a signature): host/repo, host/path/*, host/* or *; repeatable")
	fs.StringSliceVar(&c.TrustAnchors, "trust-anchor", nil, "PEM file of CA certificates a root-hash signature must chain to before the kernel is asked (an early, explained refusal; the kernel's keyrings stay the authority); repeatable")
	fs.Int64Var(&c.MaxLayerSize, "max-layer-size", 0, "largest decompressed layer in bytes (0: 64 GiB)")
	fs.StringVar(&c.LogLevel, "log-level", d.LogLevel, "debug, info, warn or error")
}

// flagKeys maps flag names to the TOML keys they override.
var flagKeys = map[string]string{
	"root": "root", "address": "address", "containerd-address": "containerd_address", "containerd-root": "containerd_root",
	"hosts-dir": "hosts_dir", "registry-auth": "registry_auth", "require-signatures": "require_signatures",
	"allow-unsigned": "allow_unsigned", "trust-anchor": "trust_anchors", "max-layer-size": "max_layer_size",
	"log-level": "log_level",
}

// load reads the configuration: built-in defaults, then the file (path, or
// DefaultConfigPath when path is "" and it exists), then the flags set on
// the command line.
func load(path string, fs *pflag.FlagSet, fromFlags config) (config, error) {
	c := defaultConfig()
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		dec := toml.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			var sm *toml.StrictMissingError
			if errors.As(err, &sm) {
				return c, fmt.Errorf("%s: unknown key: %s", path, strings.TrimSpace(sm.String()))
			}
			var de *toml.DecodeError
			if errors.As(err, &de) {
				row, col := de.Position()
				return c, fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
			}
			return c, fmt.Errorf("%s: %w", path, err)
		}
	case explicit || !errors.Is(err, os.ErrNotExist):
		return c, fmt.Errorf("config: %w", err)
	}
	fs.Visit(func(f *pflag.Flag) {
		switch flagKeys[f.Name] {
		case "root":
			c.Root = fromFlags.Root
		case "address":
			c.Address = fromFlags.Address
		case "containerd_address":
			c.ContainerdAddress = fromFlags.ContainerdAddress
		case "containerd_root":
			c.ContainerdRoot = fromFlags.ContainerdRoot
		case "hosts_dir":
			c.HostsDir = fromFlags.HostsDir
		case "registry_auth":
			c.RegistryAuth = fromFlags.RegistryAuth
		case "require_signatures":
			c.RequireSignatures = fromFlags.RequireSignatures
		case "allow_unsigned":
			c.AllowUnsigned = fromFlags.AllowUnsigned
		case "trust_anchors":
			c.TrustAnchors = fromFlags.TrustAnchors
		case "max_layer_size":
			c.MaxLayerSize = fromFlags.MaxLayerSize
		case "log_level":
			c.LogLevel = fromFlags.LogLevel
		}
	})
	return c, c.validate()
}

func (c *config) validate() error {
	for _, p := range []struct{ key, v string }{{"root", c.Root}, {"address", c.Address}, {"containerd_address", c.ContainerdAddress}} {
		if p.v == "" || !filepath.IsAbs(p.v) {
			return fmt.Errorf("config: %s must be an absolute path, got %q", p.key, p.v)
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	for _, p := range c.AllowUnsigned {
		if err := snapshotter.CheckPattern(p); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	if c.MaxLayerSize < 0 {
		return fmt.Errorf("config: max_layer_size must not be negative")
	}
	if !c.RequireSignatures && len(c.AllowUnsigned) > 0 {
		return fmt.Errorf("config: allow_unsigned names exceptions to require_signatures, which is off: every unsigned image is allowed already")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("config: log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// trustAnchors loads the CA certificates of trust_anchors.
func (c *config) trustAnchors() (*x509.CertPool, error) {
	if len(c.TrustAnchors) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for _, p := range c.TrustAnchors {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("trust anchor: %w", err)
		}
		certs, err := pkcs7.ParseCertificates(b)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("trust anchor %s: no certificate: %v", p, err)
		}
		for _, cert := range certs {
			pool.AddCert(cert)
		}
	}
	return pool, nil
}

// credentials returns the registry credential function of registry_auth.
func (c *config) credentials(ctx context.Context) (func(string) (string, string, error), error) {
	if c.RegistryAuth == "" {
		return nil, nil
	}
	if _, err := os.Stat(c.RegistryAuth); err != nil {
		return nil, fmt.Errorf("registry_auth: %w", err)
	}
	store, err := credentials.NewFileStore(c.RegistryAuth)
	if err != nil {
		return nil, fmt.Errorf("registry_auth %s: %w", c.RegistryAuth, err)
	}
	return func(host string) (string, string, error) {
		cred, err := store.Get(ctx, host)
		if err != nil {
			return "", "", err
		}
		if cred.RefreshToken != "" {
			return "", cred.RefreshToken, nil
		}
		return cred.Username, cred.Password, nil
	}, nil
}

// options turns the configuration into the snapshotter's.
func (c *config) options(ctx context.Context, log *slog.Logger) (snapshotter.Options, error) {
	pool, err := c.trustAnchors()
	if err != nil {
		return snapshotter.Options{}, err
	}
	creds, err := c.credentials(ctx)
	if err != nil {
		return snapshotter.Options{}, err
	}
	hostsDir := c.HostsDir
	if hostsDir != "" {
		if _, err := os.Stat(hostsDir); errors.Is(err, os.ErrNotExist) {
			log.Debug("hosts directory absent: containerd's registry defaults apply", "hosts_dir", hostsDir)
			hostsDir = ""
		}
	}
	contentDir := ""
	if c.ContainerdRoot != "" {
		contentDir = filepath.Join(c.ContainerdRoot, "io.containerd.content.v1.content")
	}
	return snapshotter.Options{
		Root:              c.Root,
		ContentDir:        contentDir,
		RequireSignatures: c.RequireSignatures,
		AllowUnsigned:     c.AllowUnsigned,
		TrustAnchors:      pool,
		Hosts:             snapshotter.RegistryHosts(ctx, hostsDir, creds),
		MaxLayerSize:      c.MaxLayerSize,
		Logger:            log,
	}, nil
}

package keyring

import (
	"bytes"
	"errors"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// TestUserKeyAgainstKeyctl adds a user key to the session keyring (shared
// with child processes) and checks it with the keyctl tool, then reads,
// describes, searches and removes it.
func TestUserKeyAgainstKeyctl(t *testing.T) {
	keyctl := testutil.RequireTool(t, "keyctl")
	runtime.LockOSThread() // see the package doc: keyrings follow the thread's credentials
	defer runtime.UnlockOSThread()
	if _, err := Resolve(Session, false); err != nil {
		testutil.Unavailable(t, "no session keyring: "+err.Error())
	}
	payload := []byte("root-hash-signature\x00\x01binary")
	id, err := AddUser("intact:test-key", payload, Session)
	if err != nil {
		t.Fatal(err)
	}
	defer Invalidate(id)
	out, err := exec.Command(keyctl, "pipe", strconv.Itoa(int(id))).Output()
	if err != nil || !bytes.Equal(out, payload) {
		t.Errorf("keyctl pipe: %q %v", out, err)
	}
	out, err = exec.Command(keyctl, "rdescribe", strconv.Itoa(int(id))).Output()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Describe(id)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); want != strings.Join([]string{d.Type, strconv.Itoa(int(d.UID)), strconv.Itoa(int(d.GID)), strconv.FormatUint(uint64(d.Perm), 16), d.Description}, ";") {
		t.Errorf("describe %+v, keyctl rdescribe %q", d, want)
	}
	if d.Type != "user" || d.Description != "intact:test-key" {
		t.Errorf("describe: %+v", d)
	}
	if got, err := Read(id); err != nil || !bytes.Equal(got, payload) {
		t.Errorf("read: %q %v", got, err)
	}
	if s, err := Search(Session, "user", "intact:test-key"); err != nil || s != id {
		t.Errorf("search: %d %v, want %d", s, err, id)
	}
	members, err := Members(Session)
	if err != nil || !contains(members, id) {
		t.Errorf("members of the session keyring: %v %v", members, err)
	}
	pk, err := ProcKeys()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range pk {
		if k.ID == id {
			found = k.Type == "user" && strings.HasPrefix(k.Description, "intact:test-key")
		}
	}
	if !found {
		t.Error("key not in /proc/keys")
	}
	if err := Unlink(id, Session); err != nil {
		t.Fatal(err)
	}
	if _, err := Search(Session, "user", "intact:test-key"); !errors.Is(err, ErrNotFound) {
		t.Errorf("search after unlink: %v, want ErrNotFound", err)
	}
	if _, err := AddUser("has space", nil, Session); err == nil {
		t.Error("description with whitespace accepted")
	}
}

func contains(ids []ID, id ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestParseProcKeys(t *testing.T) {
	in := "0c643ea4 I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1\n" +
		"2ab1ded6 I------     1 perm 1f0b0000     0     0 keyring   .platform: 1\n" +
		"0fd008cb I------     1 perm 1f010000     0     0 asymmetri intact test db root CA: f1815c5c: X509.rsa 383c4197 []\n" +
		"1643e6a8 I--Q--i     1 perm 3f010000     0     0 user      intact:veritydev-26: 1548\n"
	keys, err := ParseProcKeys(strings.NewReader(in))
	if err != nil || len(keys) != 4 {
		t.Fatalf("%v %v", keys, err)
	}
	if k := keys[2]; k.ID != 0x0fd008cb || k.Type != "asymmetri" || k.Description != "intact test db root CA: f1815c5c: X509.rsa 383c4197 []" || k.Perm != 0x1f010000 {
		t.Errorf("%+v", k)
	}
	if k := keys[3]; k.Flags != "I--Q--i" || k.Description != "intact:veritydev-26: 1548" {
		t.Errorf("%+v", k)
	}
	for _, bad := range []string{"zz I 1 perm 1 0 0 user x", "1 I x perm 1 0 0 user x", "1 I 1 perm"} {
		if _, err := ParseProcKeys(strings.NewReader(bad)); !errors.Is(err, ErrParse) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseProcKeys(f *testing.F) {
	f.Add("2ab1ded6 I------     1 perm 1f0b0000     0     0 keyring   .platform: 1\n")
	f.Add("1 I 1 perm 1 0 0 user\n")
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseProcKeys(strings.NewReader(s))
		if err == nil && len(keys) > strings.Count(s, "\n")+1 {
			t.Fatalf("%d keys from %d lines", len(keys), strings.Count(s, "\n")+1)
		}
	})
}

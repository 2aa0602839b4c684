package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TreeHash hashes a directory tree: every entry's path, type, mode and
// contents (a symlink's target), so that two trees hash alike only when
// they are alike byte for byte.
func TreeHash(t testing.TB, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(h, "-> %s\n", target)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: hash %s: %v", root, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// NeedRestic fails the test when restic is missing, saying how to get
// it.
func NeedRestic(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("restic"); err != nil {
		t.Fatal("restic is missing (Debian package restic; make test's scripts/test-deps.sh installs it)")
	}
}

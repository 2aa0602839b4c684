package updates

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompareVersions: moat orders versions as the real dpkg does.
func TestCompareVersions(t *testing.T) {
	pairs := [][2]string{
		{"1.0", "1.0"}, {"1.0", "1.1"}, {"1.0~rc1", "1.0"}, {"1.0", "1.0+b1"}, {"1:0.9", "1.0"}, {"2.36-9+deb12u7", "2.36-9+deb12u8"},
		{"1.10.1-3", "1.10.1-3+deb12u1"}, {"5.2.15-2+b8", "5.2.15-2+b13"}, {"1.0a", "1.0-1"}, {"1.0-1", "1.0-1~bpo1"}, {"0.9~~", "0.9~"},
		{"10", "9"}, {"1.002", "1.2"}, {"7.88.1-10+deb12u5", "7.88.1-10+deb12u14"}, {"3.0.11-1~deb12u2", "3.0.15-1~deb12u1"},
	}
	for _, p := range pairs {
		got := CompareVersions(p[0], p[1])
		want := 0
		for _, op := range []struct {
			name string
			sign int
		}{{"lt", -1}, {"gt", 1}} {
			if exec.Command("dpkg", "--compare-versions", p[0], op.name, p[1]).Run() == nil {
				want = op.sign
			}
		}
		if sign(got) != want {
			t.Errorf("%s vs %s: %d, dpkg says %d", p[0], p[1], sign(got), want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// TestSecurityPending: on a root with dpkg's status and a security
// archive's list, the packages with a newer security version are found;
// on this machine the answer is apt's own (apt-get -s upgrade).
func TestSecurityPending(t *testing.T) {
	ctx := context.Background()
	h := root(t, true)
	os.MkdirAll(filepath.Join(h.Root, "var/lib/dpkg"), 0o755)
	os.MkdirAll(filepath.Join(h.Root, "var/lib/apt/lists"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "var/lib/dpkg/status"), []byte(`Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u7
Description: GNU C Library
 continuation

Package: openssl
Status: install ok installed
Architecture: amd64
Version: 3.0.15-1~deb12u1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
`), 0o644)
	os.WriteFile(filepath.Join(h.Root, "var/lib/apt/lists/deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages"), []byte(`Package: libc6
Architecture: amd64
Version: 2.36-9+deb12u8

Package: openssl
Architecture: amd64
Version: 3.0.11-1~deb12u2

Package: tzdata
Architecture: all
Version: 2025b-0+deb12u1

Package: removed
Architecture: amd64
Version: 2.0
`), 0o644)
	got, err := h.SecurityPending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"libc6 2.36-9+deb12u7 → 2.36-9+deb12u8", "tzdata 2024a-0+deb12u1 → 2025b-0+deb12u1"}
	if !slices.Equal(got, want) {
		t.Errorf("pending: %v, want %v", got, want)
	}

	// This machine, against apt's own resolver.
	if _, err := os.Stat("/var/lib/apt/lists"); err != nil {
		return
	}
	mine, err := Host{}.SecurityPending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade").Output()
	if err != nil {
		t.Fatalf("apt-get -s upgrade: %v", err)
	}
	var apts []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Inst" && strings.Contains(line, "-security") {
			apts = append(apts, f[1])
		}
	}
	var names []string
	for _, m := range mine {
		names = append(names, strings.Fields(m)[0])
	}
	slices.Sort(apts)
	for _, a := range apts {
		if !slices.Contains(names, a) {
			t.Errorf("apt would install %s from a security archive; moat does not list it", a)
		}
	}
	t.Logf("security updates pending here: %d (apt-get -s upgrade: %d)", len(names), len(apts))
}

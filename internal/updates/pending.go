package updates

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// SecurityPending lists the installed packages that a security
// archive's package list has a newer version of, as "name old → new":
// what unattended-upgrades would install next. It reads apt's lists
// (decompressed by apt-helper) and dpkg's status, in well under a
// second, where apt-get -s upgrade takes several.
func (h Host) SecurityPending(ctx context.Context) ([]string, error) {
	status, err := os.ReadFile(h.path("var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("updates: dpkg's status: %w", err)
	}
	installed := map[string]string{} // name:arch → version
	for _, st := range stanzas(status) {
		if strings.HasSuffix(st["Status"], " installed") {
			installed[st["Package"]+":"+st["Architecture"]] = st["Version"]
		}
	}
	lists, _ := filepath.Glob(h.path("var/lib/apt/lists/*security*_Packages*"))
	newest := map[string]string{}
	for _, l := range lists {
		if strings.HasSuffix(l, ".diff_Index") {
			continue
		}
		b, err := catFile(ctx, l)
		if err != nil {
			return nil, err
		}
		for _, st := range stanzas(b) {
			key := st["Package"] + ":" + st["Architecture"]
			if _, ok := installed[key]; !ok {
				if _, ok = installed[st["Package"]+":all"]; ok {
					key = st["Package"] + ":all"
				} else {
					continue
				}
			}
			if v := newest[key]; v == "" || CompareVersions(st["Version"], v) > 0 {
				newest[key] = st["Version"]
			}
		}
	}
	var out []string
	for key, v := range newest {
		if have := installed[key]; CompareVersions(v, have) > 0 {
			name, _, _ := strings.Cut(key, ":")
			out = append(out, name+" "+have+" → "+v)
		}
	}
	slices.Sort(out)
	return out, nil
}

// catFile reads one of apt's lists, which apt may keep compressed
// (lz4, gz, xz): apt's own helper decompresses whatever it wrote.
func catFile(ctx context.Context, path string) ([]byte, error) {
	if !strings.Contains(filepath.Base(path), ".") || strings.HasSuffix(path, "_Packages") {
		return os.ReadFile(path)
	}
	out, err := exec.CommandContext(ctx, "/usr/lib/apt/apt-helper", "cat-file", path).Output()
	if err != nil {
		return nil, fmt.Errorf("updates: reading %s: %w", path, err)
	}
	return out, nil
}

// stanzas reads a deb822 file (dpkg's status, apt's Packages) into its
// paragraphs' single-line fields.
func stanzas(b []byte) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(cur) > 0 {
				out = append(out, cur)
				cur = map[string]string{}
			}
		case line[0] == ' ' || line[0] == '\t':
			// a continuation line: not a field moat reads
		default:
			if k, v, ok := strings.Cut(line, ":"); ok {
				cur[k] = strings.TrimSpace(v)
			}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// CompareVersions orders Debian package versions as dpkg does:
// [epoch:]upstream[-revision], each part compared by dpkg's rules (runs
// of non-digits by character, where ~ sorts before everything and
// letters before other characters, then runs of digits as numbers).
func CompareVersions(a, b string) int {
	ea, ua, ra := splitVersion(a)
	eb, ub, rb := splitVersion(b)
	if c := compareNumber(ea, eb); c != 0 {
		return c
	}
	if c := compareVersionPart(ua, ub); c != 0 {
		return c
	}
	return compareVersionPart(ra, rb)
}

func splitVersion(v string) (epoch, upstream, revision string) {
	if e, rest, ok := strings.Cut(v, ":"); ok {
		epoch, v = e, rest
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

func order(c byte) int {
	switch {
	case c == '~':
		return -1
	case c >= '0' && c <= '9':
		return 0
	case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return int(c)
	}
	return int(c) + 256
}

func compareVersionPart(a, b string) int {
	for a != "" || b != "" {
		// The non-digit runs, a character at a time; an ended string
		// counts as 0 (so ~ sorts before it).
		for (a != "" && !isDigit(a[0])) || (b != "" && !isDigit(b[0])) {
			ca, cb := 0, 0
			if a != "" && !isDigit(a[0]) {
				ca, a = order(a[0]), a[1:]
			}
			if b != "" && !isDigit(b[0]) {
				cb, b = order(b[0]), b[1:]
			}
			if ca != cb {
				return ca - cb
			}
		}
		da, db := digits(a), digits(b)
		a, b = a[len(da):], b[len(db):]
		if c := compareNumber(da, db); c != 0 {
			return c
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func digits(s string) string {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i]
}

func compareNumber(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

package backup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ReadEnv reads a credentials file: NAME=value lines (blank lines and
// # comments skipped), each NAME one of allowed. The file holds secrets,
// so one that others may read is refused.
func ReadEnv(path string, allowed []string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s is readable by others (mode %04o): chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("credentials file %s, line %d: not NAME=value", path, n)
		case !slices.Contains(allowed, name):
			// The value is never quoted: it may be a secret.
			return nil, fmt.Errorf("credentials file %s, line %d: %s is not one moat passes to restic; the names are %s", path, n, name, strings.Join(allowed, ", "))
		}
		env = append(env, line)
	}
	return env, nil
}

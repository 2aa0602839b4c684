package firewall

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// SSHDPorts reads the ports sshd listens on from its configuration at
// path and the files it includes: Port lines, and ListenAddress lines that
// carry a port; without any, 22. The note says what was assumed, if
// anything. (sshd takes "Keyword value" and "Keyword=value" alike.)
func SSHDPorts(path string) ([]uint16, string) {
	var ports []uint16
	if err := readSSHDPorts(path, filepath.Dir(path), &ports, 0); err != nil {
		return []uint16{22}, fmt.Sprintf("could not read sshd's configuration (%v), so SSH is assumed on port 22; if sshd listens elsewhere, run moat firewall allow PORT/tcp before moat serve", err)
	}
	if len(ports) == 0 {
		return []uint16{22}, ""
	}
	return ports, ""
}

func readSSHDPorts(path, base string, ports *[]uint16, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%s: Include nested too deep", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	add := func(s string) {
		if n, err := strconv.ParseUint(s, 10, 16); err == nil && n > 0 && !slices.Contains(*ports, uint16(n)) {
			*ports = append(*ports, uint16(n))
		}
	}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		if k, v, ok := strings.Cut(key, "="); ok {
			key, value = k, v+" "+value
		}
		key, value = strings.TrimSpace(key), strings.Trim(strings.TrimSpace(value), "= \t")
		switch strings.ToLower(key) {
		case "match":
			return nil // what follows applies to some connections only
		case "include":
			for _, pattern := range strings.Fields(value) {
				if !filepath.IsAbs(pattern) {
					pattern = filepath.Join(base, pattern)
				}
				matches, _ := filepath.Glob(pattern)
				for _, m := range matches {
					if err := readSSHDPorts(m, base, ports, depth+1); err != nil {
						return err
					}
				}
			}
		case "port":
			add(strings.Fields(value + " x")[0])
		case "listenaddress":
			if _, p, err := net.SplitHostPort(strings.Fields(value + " x")[0]); err == nil {
				add(p)
			}
		}
	}
	return nil
}

package apps

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"moat/internal/config"
)

// Published is a port a Compose service publishes on the host.
type Published struct {
	Service string
	// Port is the host's side, like 8080/tcp or 6000-6005/udp.
	Port string
	// HostIP is the address it is bound to; empty for every address.
	HostIP string
}

// Loopback reports whether only this machine reaches the port.
func (p Published) Loopback() bool {
	a, err := netip.ParseAddr(strings.Trim(p.HostIP, "[]"))
	return err == nil && a.IsLoopback()
}

// composeFile is what moat reads of a Compose file.
type composeFile struct {
	Services map[string]struct {
		Ports []yaml.Node `yaml:"ports"`
	} `yaml:"services"`
}

// ComposePorts reads the ports a Compose file's services publish on the
// host, in the short syntax ("8080:80", "127.0.0.1:5432:5432",
// "53:53/udp") and the long one ({target, published, host_ip,
// protocol}). A port published to no fixed host port ("3000") is left
// out: Docker picks one at random.
func ComposePorts(data []byte) ([]Published, error) {
	var f composeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("compose file: %w", err)
	}
	names := make([]string, 0, len(f.Services))
	for n := range f.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []Published
	for _, name := range names {
		for i, n := range f.Services[name].Ports {
			at := fmt.Sprintf("services.%s.ports[%d]", name, i)
			p, ok, err := composePort(n)
			if err != nil {
				return nil, fmt.Errorf("compose file: %s: %w", at, err)
			}
			if ok {
				p.Service = name
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func composePort(n yaml.Node) (Published, bool, error) {
	if n.Kind == yaml.MappingNode {
		var long struct {
			Published string `yaml:"published"`
			HostIP    string `yaml:"host_ip"`
			Protocol  string `yaml:"protocol"`
		}
		if err := n.Decode(&long); err != nil {
			return Published{}, false, err
		}
		if long.Published == "" {
			return Published{}, false, nil
		}
		return published(long.Published, long.Protocol, long.HostIP)
	}
	var short string
	if err := n.Decode(&short); err != nil {
		return Published{}, false, err
	}
	spec, proto, _ := strings.Cut(short, "/")
	// [HOST_IP:]HOST:CONTAINER, where an IPv6 host IP is in brackets.
	host := ""
	if strings.HasPrefix(spec, "[") {
		end := strings.Index(spec, "]:")
		if end < 0 {
			return Published{}, false, fmt.Errorf("%q: an IPv6 address is written [::1]:8080:80", short)
		}
		host, spec = spec[:end+1], spec[end+2:]
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		return Published{}, false, nil // no fixed host port
	case 2:
	case 3:
		if host != "" {
			return Published{}, false, fmt.Errorf("%q: not HOST_IP:HOST_PORT:CONTAINER_PORT", short)
		}
		host, parts = parts[0], parts[1:]
	default:
		return Published{}, false, fmt.Errorf("%q: not HOST_IP:HOST_PORT:CONTAINER_PORT", short)
	}
	if parts[0] == "" {
		return Published{}, false, nil
	}
	return published(parts[0], proto, host)
}

// published checks a host port (or range) and protocol.
func published(port, proto, host string) (Published, bool, error) {
	if strings.Contains(port, "$") {
		return Published{}, false, fmt.Errorf("%q uses a variable: moat does not read .env files; write the port, or give it with --port", port)
	}
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return Published{}, false, fmt.Errorf("protocol %q: moat's firewall knows tcp and udp", proto)
	}
	lo, hi, isRange := strings.Cut(port, "-")
	for _, v := range []string{lo, hi} {
		if !isRange && v == hi {
			continue
		}
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			return Published{}, false, fmt.Errorf("host port %q is not a port from 1 to 65535", port)
		}
	}
	return Published{Port: port + "/" + proto, HostIP: host}, true, nil
}

// ComposeRun is the lifecycle of a Compose project, by its file.
func ComposeRun(file string) config.Run {
	abs, _ := filepath.Abs(file)
	dc := "docker compose -f " + shellQuote(abs)
	return config.Run{
		Start:   dc + " up -d",
		Stop:    dc + " stop",
		Restart: dc + " restart",
		Upgrade: dc + " pull && " + dc + " up -d",
		Remove:  dc + " down",
		Status:  dc + " ps",
	}
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

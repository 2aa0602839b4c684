package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// DockerSocket is where the Docker Engine API answers by default.
const DockerSocket = "/var/run/docker.sock"

// Container is a Docker container, as the audit judges it.
type Container struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Image string `json:"image"`
	State string `json:"state"` // running, created, exited…
	// Published are its ports published on the host.
	Published []Published `json:"published,omitempty"`
	// Privileged, Root (no user, or user 0), HostNetwork (network_mode:
	// host) and DockerSocket (the Engine's socket mounted in it) are
	// what gives it the host.
	Privileged   bool `json:"privileged,omitempty"`
	Root         bool `json:"root,omitempty"`
	HostNetwork  bool `json:"host_network,omitempty"`
	DockerSocket bool `json:"docker_socket,omitempty"`
}

// Published is a container's port published on the host.
type Published struct {
	Host          netip.AddrPort `json:"host"`
	Proto         string         `json:"proto"`
	ContainerPort uint16         `json:"container_port"`
	Scope         Scope          `json:"scope"`
}

// Containers lists the containers of the Docker Engine at socket, with
// what their inspection says; nil with no error when no Docker runs
// there.
func Containers(ctx context.Context, socket string) ([]Container, error) {
	if socket == "" {
		socket = DockerSocket
	}
	if _, err := os.Stat(socket); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	get := func(path string, out any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(out)
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := get("/containers/json?all=1", &list); err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil // a socket left by a Docker that is gone
		}
		return nil, fmt.Errorf("docker at %s: %w", socket, err)
	}
	var out []Container
	for _, l := range list {
		var in struct {
			ID     string `json:"Id"`
			Name   string
			Config struct {
				Image string
				User  string
			}
			State struct {
				Status string
			}
			HostConfig struct {
				Privileged  bool
				NetworkMode string
			}
			Mounts []struct {
				Source string
			}
			NetworkSettings struct {
				Ports map[string][]struct {
					HostIP   string `json:"HostIp"`
					HostPort string
				}
			}
		}
		if err := get("/containers/"+l.ID+"/json", &in); err != nil {
			return nil, fmt.Errorf("docker at %s: %w", socket, err)
		}
		ct := Container{ID: in.ID[:min(12, len(in.ID))], Name: strings.TrimPrefix(in.Name, "/"), Image: in.Config.Image, State: in.State.Status,
			Privileged: in.HostConfig.Privileged, HostNetwork: in.HostConfig.NetworkMode == "host"}
		user, _, _ := strings.Cut(in.Config.User, ":")
		ct.Root = user == "" || user == "0" || user == "root"
		for _, m := range in.Mounts {
			if strings.HasSuffix(m.Source, "/docker.sock") {
				ct.DockerSocket = true
			}
		}
		for spec, binds := range in.NetworkSettings.Ports {
			port, proto, _ := strings.Cut(spec, "/")
			var cport uint16
			fmt.Sscan(port, &cport)
			for _, b := range binds {
				ip, err := netip.ParseAddr(b.HostIP)
				if err != nil {
					ip = netip.IPv4Unspecified()
				}
				var hp uint16
				fmt.Sscan(b.HostPort, &hp)
				ct.Published = append(ct.Published, Published{Host: netip.AddrPortFrom(ip, hp), Proto: proto, ContainerPort: cport, Scope: ScopeOf(ip)})
			}
		}
		out = append(out, ct)
	}
	if out == nil {
		out = []Container{}
	}
	return out, nil
}

package audit

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"moat/internal/testenv"
)

// TestDocker: with a real dockerd (in a namespace of the test's own), a
// port published with the userland proxy off has no listening socket
// and is found through Docker, with the container's name; with the
// proxy on, its docker-proxy socket is judged as the container's, not
// twice; a privileged container with the Docker socket and the host's
// network is flagged for each.
func TestDocker(t *testing.T) {
	ctx := context.Background()
	for _, proxy := range []bool{false, true} {
		t.Run("userland proxy "+strconv.FormatBool(proxy), func(t *testing.T) {
			d := testenv.StartDockerd(t, proxy)
			d.Docker(t, "run", "-d", "--name", "redis", "-p", "6379:80", "moat-test/busybox", "/bin/httpd", "-f", "-p", "80")
			d.Docker(t, "run", "-d", "--name", "local", "-p", "127.0.0.1:8080:80", "--user", "1000", "moat-test/busybox", "/bin/httpd", "-f", "-p", "80")
			// Created, not started: this sandbox may not grant a
			// privileged container its capabilities; Docker still says it
			// is one.
			d.Docker(t, "create", "--name", "admin", "--privileged", "--network", "host", "-v", d.Socket+":/var/run/docker.sock", "moat-test/busybox", "/bin/sleep", "600")

			cs, err := Containers(ctx, d.Socket)
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]Container{}
			for _, c := range cs {
				byName[c.Name] = c
			}
			if r := byName["redis"]; r.State != "running" || len(r.Published) == 0 || r.Published[0].Host.Port() != 6379 || r.Published[0].Scope != Wildcard || !r.Root {
				t.Errorf("redis: %+v", r)
			}
			if a := byName["admin"]; !a.Privileged || !a.HostNetwork || !a.DockerSocket {
				t.Errorf("admin: %+v", a)
			}
			// The sockets of dockerd's namespace: the test's host.
			host, err := Sockets("/proc", d.PID)
			if err != nil {
				t.Fatal(err)
			}
			// With the proxy, docker-proxy listens; without, this dockerd
			// (20.10) holds the port to reserve it, and a newer one holds
			// none at all.
			for _, l := range host {
				if l.Addr.Port() == 6379 && (proxy && l.Process != "docker-proxy" || !proxy && l.Process != "dockerd") {
					t.Errorf("6379 is held by %q, with the userland proxy %v", l.Process, proxy)
				}
			}

			r := Run(Host{Listeners: host, Docker: cs}, testNow)
			got := map[string]string{}
			for _, f := range r.Findings {
				got[f.Check+" "+f.Subject] = f.Finding + " | " + f.Fix
			}
			for key, want := range map[string]string{
				"docker.published redis 0.0.0.0:6379/tcp": "port 6379/tcp is published by container redis on 0.0.0.0 and reachable from the internet",
				"docker.privileged admin":                 "container admin runs --privileged",
				"docker.socket admin":                     "has the Docker socket mounted",
				"docker.host-network admin":               "uses the host's network",
				"docker.root redis":                       "container redis runs as root",
			} {
				if !strings.Contains(got[key], want) {
					t.Errorf("%s: %q, want %q", key, got[key], want)
				}
			}
			for key := range got {
				if strings.HasPrefix(key, "listen.") && strings.Contains(key, ":6379/") {
					t.Errorf("docker-proxy's socket judged as a listener too: %s", key)
				}
				if strings.Contains(key, " local") {
					t.Errorf("a container on loopback, as a user, flagged: %s", key)
				}
			}
		})
	}
}

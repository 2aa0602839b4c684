package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/certs"
	"moat/internal/config"
	"moat/internal/store"
	"moat/internal/testenv"
)

// Changes applied while clients are busy drop no request: the listeners
// stay, routes swap atomically.
func TestReloadUnderLoadDropsNothing(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())

	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // also when the test stops early
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := c.Get(e.url(e.host("app"), "/"))
				if err != nil {
					failed.Add(1)
					t.Logf("request: %v", err)
					continue
				}
				buf := make([]byte, 64)
				n, _ := resp.Body.Read(buf)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(buf[:n]), "hello from "+e.host("app")) {
					failed.Add(1)
					t.Logf("response: %d %q", resp.StatusCode, buf[:n])
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := range 30 {
		var res api.ChangeResponse
		var err error
		switch i % 3 {
		case 0:
			err = e.client.Do(ctx, "POST", "/v1/apps", config.App{Name: fmt.Sprintf("other%d", i), Domains: []string{fmt.Sprintf("other%d.test", i)}, Upstream: e.upstream}, &res)
		case 1:
			err = e.client.Do(ctx, "PATCH", "/v1/apps/app", api.AppPatch{Headers: map[string]string{"X-Frame-Options": fmt.Sprintf("DENY%d", i)}}, &res)
		case 2:
			err = e.client.Do(ctx, "DELETE", fmt.Sprintf("/v1/apps/other%d?confirm=other%d", i-2, i-2), nil, &res)
		}
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if len(res.Plan) != 1 || res.Warning != "" {
			t.Fatalf("change %d: plan %v, warning %q", i, res.Plan, res.Warning)
		}
		time.Sleep(30 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if failed.Load() > 0 || ok.Load() < 50 {
		t.Errorf("%d requests failed, %d succeeded across 30 reloads", failed.Load(), ok.Load())
	}
	resp, _ := get(t, c, e.url(e.host("app"), "/"))
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY28" {
		t.Errorf("X-Frame-Options %q after the last change, want DENY28", got)
	}
}

// A change the daemon refuses (invalid, or one it could not serve) leaves
// the store and the running edge as they were.
func TestRefusedChangeKeepsServing(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	c := e.httpsClient(e.pebble.Roots())

	var before api.StateResponse
	if err := e.client.Do(context.Background(), "GET", "/v1/state", nil, &before); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	good, err := config.Marshal(before.State)
	if err != nil {
		t.Fatal(err)
	}
	y := string(good)
	dup := before.State.Clone()
	dup.Apps = append(dup.Apps, config.App{Name: "copy", Domains: []string{e.host("app")}, Upstream: "http://127.0.0.1:1"})
	dupFile, err := config.Marshal(dup)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, want string
	}{
		{"duplicate domain", string(dupFile), "apps[1].domains[0]"},
		{"unknown key", strings.Replace(y, "upstream:", "upstrem:", 1), "apps[0].upstrem"},
		{"port in use", strings.Replace(y, fmt.Sprintf("127.0.0.1:%d", e.httpPort), busy.Addr().String(), 1), "server.listen.http"},
		{"CA roots missing", strings.Replace(y, "pebble-api.pem", "missing.pem", 1), "server.acme.ca_roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.client.Do(context.Background(), "PUT", "/v1/state", []byte(tt.file), nil)
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want a 400 naming %s", err, tt.want)
			}
			var after api.StateResponse
			if err := e.client.Do(context.Background(), "GET", "/v1/state", nil, &after); err != nil {
				t.Fatal(err)
			}
			if after.Revision != before.Revision {
				t.Errorf("revision %d -> %d: the refused change was stored", before.Revision, after.Revision)
			}
			resp, body := get(t, c, e.url(e.host("app"), "/"))
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from "+e.host("app")) {
				t.Errorf("after the refused change: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// Moving the HTTPS port takes effect without a restart: the new port
// serves, the old one is closed.
func TestListenAddressChange(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	old := e.httpsPort
	e.httpsPort = testenv.FreePort(t)
	e.change(func(s *config.State) { s.Server.Listen.HTTPS = fmt.Sprintf("127.0.0.1:%d", e.httpsPort) })
	resp, body := get(t, e.httpsClient(e.pebble.Roots()), e.url(e.host("app"), "/"))
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from "+e.host("app")) {
		t.Errorf("new port: %d %q", resp.StatusCode, body)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", old), time.Second); err == nil {
		c.Close()
		t.Errorf("old port %d still accepts connections", old)
	}
}

// Removing domains while certmagic checks renewals must not deadlock:
// its renewal check holds its cache lock and asks moat for the config,
// while removing a domain asks certmagic's cache to drop it.
func TestRemoveDomainsDuringRenewalChecks(t *testing.T) {
	t.Parallel()
	e := startEnv(t, withRenewCheck(time.Millisecond))
	e.dns.Set(e.host("app"), loopback)
	e.addApp("app", e.host("app"))
	e.waitCert(e.host("app"), 30*time.Second, isValid)
	for i := range 150 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		name := fmt.Sprintf("tmp%d", i)
		err := e.client.Do(ctx, "POST", "/v1/apps", config.App{Name: name, Domains: []string{e.host(name)}, Upstream: e.upstream}, nil)
		if err == nil {
			err = e.client.Do(ctx, "DELETE", "/v1/apps/"+name+"?confirm="+name, nil, nil)
		}
		cancel()
		if err != nil {
			t.Fatalf("change %d: %v (a hang here is a deadlock)", i, err)
		}
	}
	resp, _ := get(t, e.httpsClient(e.pebble.Roots()), e.url(e.host("app"), "/"))
	if resp.StatusCode != 200 {
		t.Errorf("after the changes: %d", resp.StatusCode)
	}
}

// Changing the ACME settings restarts the certificate workers; one that
// was waiting for DNS must not report its cancelled lookup as a finding.
func TestRestartedWorkersRaiseNoFalseAlerts(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	e.addApp("app", e.host("app")) // no DNS record: waiting-dns
	e.waitCert(e.host("app"), 15*time.Second, func(s certs.Status) bool { return s.State == certs.WaitingDNS })
	for i := range 10 {
		e.change(func(s *config.State) { s.Server.Email = fmt.Sprintf("admin%d@moat.test", i) })
	}
	time.Sleep(500 * time.Millisecond)
	var log []store.Entry
	if err := e.client.Do(context.Background(), "GET", "/v1/activity?limit=500", nil, &log); err != nil {
		t.Fatal(err)
	}
	for _, en := range log {
		if strings.Contains(en.Detail, "cancel") {
			t.Errorf("activity entry from a cancelled worker: %+v", en)
		}
	}
	if st := e.waitCert(e.host("app"), 5*time.Second, func(s certs.Status) bool { return s.State == certs.WaitingDNS }); strings.Contains(st.Message, "cancel") {
		t.Errorf("status after restarts: %+v", st)
	}
}

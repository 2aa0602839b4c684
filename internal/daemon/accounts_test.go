package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/smtp"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/firewall"
)

var mailedCode = regexp.MustCompile(`Your moat code is (\d{6})`)

// TestSignInThroughTheEdge: the HTTPS API answers on the admin host with
// a certificate of its own; a sign-in takes the password and the code
// mailed through moat's queue to a real SMTP server; the fifth wrong
// password from one address bans it in the kernel and at the edge, and
// another address still signs in.
func TestSignInThroughTheEdge(t *testing.T) {
	l := newGuardLab(t)
	l.host.Accepting(t, "tcp", ":9000")
	e := startMailEnv(t, withFirewall(firewall.NewManager(l.nft)))
	admin := e.host("admin")
	e.dns.Set(admin, loopbackAddr)
	e.change(func(s *config.State) {
		s.Server.AdminDomain = admin
		s.Server.TrustedProxies = []string{"127.0.0.1"}
		s.Firewall.Rules = []config.FirewallRule{{Port: "9000/tcp"}}
	})
	if err := e.client.Do(context.Background(), "POST", "/v1/firewall/apply", api.ApplyRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if !reaches(l.attacker, labHost, 9000) || !reaches(l.other, labHost2, 9000) {
		t.Fatal("before any failure, a client cannot reach the server")
	}
	var nu api.NewUser
	if err := e.client.Do(context.Background(), "POST", "/v1/users", api.UserRequest{Email: "owner@example.com", Role: auth.RoleAdmin, Password: "correct horse battery 9"}, &nu); err != nil {
		t.Fatal(err)
	}
	e.waitCert(admin, 60*time.Second, isValid)

	// The relay's STARTTLS presents moat's certificate too: the server's
	// own name has none here, so the admin host's.
	sc, err := smtp.Dial(e.relayAddr())
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.StartTLS(&tls.Config{ServerName: admin, RootCAs: e.pebble.Roots()}); err != nil {
		t.Errorf("STARTTLS to the relay, checked as %s against the ACME CA: %v", admin, err)
	}
	sc.Close()

	post := func(c *http.Client, from, path string, body any, csrf string) (*http.Response, []byte) {
		t.Helper()
		j, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", e.url(admin, path), bytes.NewReader(j))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", from)
		if csrf != "" {
			req.Header.Set(api.CSRFHeader, csrf)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return resp, buf.Bytes()
	}
	browser := func() *http.Client {
		c := e.httpsClient(e.pebble.Roots())
		c.Jar, _ = cookiejar.New(nil)
		return c
	}

	// The owner signs in with the mailed code.
	owner := browser()
	if resp, body := post(owner, labOther, "/v1/auth/signin", api.SignInRequest{Email: "owner@example.com", Password: "correct horse battery 9"}, ""); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	var code string
	deadline := time.Now().Add(30 * time.Second)
	for code == "" && time.Now().Before(deadline) {
		for _, m := range e.sink.Messages() {
			if len(m.To) == 1 && m.To[0] == "owner@example.com" {
				if c := mailedCode.FindSubmatch(m.Data); c != nil {
					code = string(c[1])
				}
			}
		}
		e.sink.Wait(len(e.sink.Messages())+1, 200*time.Millisecond)
	}
	if code == "" {
		t.Fatal("no code reached the mail server")
	}
	resp, body := post(owner, labOther, "/v1/auth/second", api.SecondRequest{Factor: auth.FactorEmail, Code: code}, "")
	var in api.SignInResponse
	if resp.StatusCode != 200 || json.Unmarshal(body, &in) != nil || in.Stage != auth.StageFull {
		t.Fatalf("code: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get(t, owner, e.url(admin, "/v1/me")); resp.StatusCode != 200 {
		t.Fatalf("GET /v1/me signed in: %d", resp.StatusCode)
	}

	// The attacker guesses, through a proxy moat trusts (the address is
	// the client's, from X-Forwarded-For): the guard bans it at the
	// fifth failure.
	attacker := browser()
	fails := 0
	for i := 0; fails < 5 && i < 20; i++ {
		resp, body := post(attacker, labAttacker, "/v1/auth/signin", api.SignInRequest{Email: "owner@example.com", Password: "guess " + strconv.Itoa(i)}, "")
		switch resp.StatusCode {
		case 401:
			fails++
		case 429:
			s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(s) * time.Second)
		default:
			t.Fatalf("guess %d: %d %s", i, resp.StatusCode, body)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		resp, body := post(attacker, labAttacker, "/v1/auth/signin", api.SignInRequest{Email: "owner@example.com", Password: "correct horse battery 9"}, "")
		if resp.StatusCode == 403 && bytes.Contains(body, []byte("banned")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 failures the attacker is not banned: %d %s", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	found := false
	bans := e.guardStatus().Bans
	for _, b := range bans {
		found = found || b.Jail == config.JailMoat && b.Prefix == netip.MustParsePrefix(labAttacker+"/32")
	}
	if !found {
		t.Errorf("no moat-jail ban of the attacker: %+v", bans)
	}
	if reaches(l.attacker, labHost, 9000) {
		t.Error("the attacker banned by the moat jail still reaches the server: the ban is not in the kernel")
	}
	if !reaches(l.other, labHost2, 9000) {
		t.Error("the owner's address no longer reaches the server")
	}
	// The owner, elsewhere, still reaches the API.
	if resp, _ := post(owner, labOther, "/v1/auth/signout", nil, in.CSRF); resp.StatusCode != 200 {
		t.Errorf("sign-out: %d", resp.StatusCode)
	}
}

// TestPasskeySite: passkeys are bound to the admin host, at the port the
// edge answers HTTPS on.
func TestPasskeySite(t *testing.T) {
	tests := []struct {
		name    string
		s       config.Server
		id      string
		origins []string
	}{
		{"default", config.Server{Domain: "example.com"}, "moat.example.com", []string{"https://moat.example.com"}},
		{"own name at 8443", config.Server{AdminDomain: "admin.example.com", Listen: config.Listen{HTTPS: ":8443"}}, "admin.example.com", []string{"https://admin.example.com", "https://admin.example.com:8443"}},
		{"at 443", config.Server{AdminDomain: "admin.example.com", Listen: config.Listen{HTTPS: "203.0.113.1:443"}}, "admin.example.com", []string{"https://admin.example.com"}},
		{"off", config.Server{Domain: "example.com", AdminDomain: "off"}, "", nil},
		{"no domain", config.Server{}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rp := passkeySite(tt.s)
			if rp.ID != tt.id || !slices.Equal(rp.Origins, tt.origins) {
				t.Errorf("passkeySite = %+v, want %s %v", rp, tt.id, tt.origins)
			}
		})
	}
}

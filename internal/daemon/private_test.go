package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/gate"
)

// TestPrivateApps: a private app sends a browser to moat's sign-in and,
// after it, opens with the account in X-Moat-User and X-Moat-Email (and
// moat's cookie kept from it); another private app that the account may
// not use refuses it in plain words, and the first app's session opens
// neither that app nor the admin host. What a client sends as X-Moat-*
// never reaches an app.
func TestPrivateApps(t *testing.T) {
	e := startMailEnv(t)
	ctx := context.Background()
	echo := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><title>app</title><p id=\"seen\">%s user=%q email=%q cookie=%q</p>", r.Host, r.Header.Get("X-Moat-User"), r.Header.Get("X-Moat-Email"), r.Header.Get("Cookie"))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go echo.Serve(ln)
	t.Cleanup(func() { echo.Close() })
	upstream := "http://" + ln.Addr().String()

	admin, grafana, pma, public := e.host("admin"), e.host("grafana"), e.host("pma"), e.host("www")
	for _, h := range []string{admin, grafana, pma, public} {
		e.dns.Set(h, loopbackAddr)
	}
	e.change(func(st *config.State) {
		st.Server.AdminDomain = admin
		st.Apps = append(st.Apps,
			config.App{Name: "grafana", Domains: []string{grafana}, Upstream: upstream, Access: config.AccessPrivate, Allow: []string{"owner@example.com"}},
			config.App{Name: "pma", Domains: []string{pma}, Upstream: upstream, Access: config.AccessPrivate, Allow: []string{"dba@example.com", "operator"}},
			config.App{Name: "www", Domains: []string{public}, Upstream: upstream})
	})
	const password = "correct horse battery 9"
	if err := e.client.Do(ctx, "POST", "/v1/users", api.UserRequest{Email: "owner@example.com", Role: auth.RoleViewer, Password: password}, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{admin, grafana, pma, public} {
		e.waitCert(h, 60*time.Second, isValid)
	}

	// The browser opens the private app, and is sent to sign in.
	d := &dashboard{t: t, e: e, tab: browser.Get(t).Tab(t), base: e.url(admin, "")}
	sent := len(e.sink.Messages())
	d.do(chromedp.Navigate(e.url(grafana, "/d/home?orgId=1")), chromedp.WaitVisible(chromedp.ID("email")))
	if u, _ := chromedp.Run(d.tab, chromedp.Evaluate[string](`location.host + location.pathname`)); !strings.HasPrefix(u, admin) || !strings.HasSuffix(u, "/signin") {
		t.Fatalf("a private app without a session goes to %s, not the admin host's sign-in", u)
	}
	d.do(chromedp.SendKeys(chromedp.ID("email"), "owner@example.com"), chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("code")))
	d.do(chromedp.SendKeys(chromedp.ID("code"), mailedCodeTo(t, e, "owner@example.com", sent)), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("seen")))
	seen := d.text("seen")
	if want := fmt.Sprintf(`%s user="owner@example.com" email="owner@example.com" cookie=""`, grafana); !strings.HasPrefix(seen, grafana) || !strings.Contains(seen, want[len(grafana):]) {
		t.Errorf("after signing in, the app saw %s; want %s", seen, want)
	}
	if u, _ := chromedp.Run(d.tab, chromedp.Evaluate[string](`location.pathname + location.search`)); u != "/d/home?orgId=1" {
		t.Errorf("after signing in the browser is at %s, not where it started", u)
	}

	// The other private app is not for this account: the admin host says
	// so, in the words the gate uses.
	d.do(chromedp.Navigate(e.url(pma, "/")), chromedp.WaitVisible(chromedp.ID("error")))
	if msg := d.text("error"); !strings.Contains(msg, "may not use pma") || !strings.Contains(msg, "--allow owner@example.com") {
		t.Errorf("the app the account may not use says %q", msg)
	}

	cookies, err := chromedp.Call(d.tab, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url(grafana, "/")}})
	if err != nil {
		t.Fatal(err)
	}
	var appToken string
	for _, c := range cookies.Cookies {
		if c.Name == gate.CookieName {
			appToken = c.Value
		}
	}
	if appToken == "" {
		t.Fatalf("no %s cookie on %s", gate.CookieName, grafana)
	}
	c := e.httpsClient(e.pebble.Roots())
	ask := func(host, path, cookie string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url(host, path), nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	spoof := map[string]string{"X-Moat-User": "root", "X-Moat-Email": "root@example.com"}
	own := gate.CookieName + "=" + appToken + "; theme=dark"
	if resp, body := ask(grafana, "/", own, spoof); resp.StatusCode != 200 || !strings.Contains(body, `user="owner@example.com"`) || !strings.Contains(body, `cookie="theme=dark"`) {
		t.Errorf("the app's own session, with spoofed headers: %d %s", resp.StatusCode, body)
	}
	if resp, body := ask(pma, "/", own, nil); resp.StatusCode != http.StatusSeeOther || strings.Contains(body, "user=") {
		t.Errorf("grafana's session on pma: %d %s", resp.StatusCode, body)
	}
	if resp, _ := ask(admin, "/v1/me", api.CookieName+"="+appToken, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("grafana's session on the admin host: %d", resp.StatusCode)
	}
	if resp, body := ask(public, "/", "", spoof); resp.StatusCode != 200 || !strings.Contains(body, `user="" email=""`) {
		t.Errorf("a public app got the client's X-Moat headers: %d %s", resp.StatusCode, body)
	}
	// A form's POST without a session is refused, not redirected.
	req, _ := http.NewRequest("POST", e.url(grafana, "/api/x"), strings.NewReader("a=1"))
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a POST without a session: %v %v", resp, err)
	}
}

// mailedCodeTo waits for the sign-in code mailed to email after the
// sink had sent messages.
func mailedCodeTo(t *testing.T, e *mailEnv, email string, sent int) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		msgs := e.sink.Messages()
		for _, m := range msgs[min(sent, len(msgs)):] {
			if c := mailedCode.FindSubmatch(m.Data); c != nil && len(m.To) == 1 && m.To[0] == email {
				return string(c[1])
			}
		}
		e.sink.Wait(len(msgs)+1, 200*time.Millisecond)
	}
	t.Fatal("no sign-in code reached the mail server")
	return ""
}

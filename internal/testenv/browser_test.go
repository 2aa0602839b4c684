package testenv

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

var browser SharedBrowser

func TestMain(m *testing.M) {
	code := m.Run()
	browser.Close()
	os.Exit(code)
}

// TestBrowser: the shared Chromium renders a page, submits its form
// without script, and keeps each tab's cookies to itself.
func TestBrowser(t *testing.T) {
	mux := http.NewServeMux()
	// A browser asks for the icon; a 404 would be a console error.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "seen", Value: "yes"})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>moat test</title><form method="post" action="/hello"><input name="who" id="who"><button id="go">Go</button></form>`))
	})
	mux.HandleFunc("POST /hello", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("seen")
		seen := err == nil && c.Value == "yes"
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if seen {
			w.Write([]byte(`<!doctype html><p id="out">hello ` + html.EscapeString(r.PostFormValue("who")) + `</p>`))
		} else {
			w.Write([]byte(`<!doctype html><p id="out">no cookie</p>`))
		}
	})
	mux.HandleFunc("GET /cookie", func(w http.ResponseWriter, r *http.Request) {
		_, err := r.Cookie("seen")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err == nil {
			w.Write([]byte(`<!doctype html><p id="out">shared</p>`))
		} else {
			w.Write([]byte(`<!doctype html><p id="out">own</p>`))
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := browser.Get(t)
	tab := b.Tab(t)
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(tab, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("who"), "owner"), chromedp.Click(chromedp.ID("go"))); err != nil {
		t.Fatal(err)
	}
	out, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("out")))
	if err != nil {
		t.Fatal(err)
	}
	if title != "moat test" || out != "hello owner" {
		t.Errorf("title %q, after the form %q", title, out)
	}
	other := b.Tab(t)
	if err := chromedp.Do(other, chromedp.Navigate(srv.URL+"/cookie")); err != nil {
		t.Fatal(err)
	}
	if out, err = chromedp.Run(other, chromedp.Text(chromedp.ID("out"))); err != nil || out != "own" {
		t.Errorf("a second tab sees the first one's cookie: %q %v", out, err)
	}
	if png := Screenshot(t, tab, t.TempDir(), "hello"); png == "" {
		t.Error("no screenshot")
	}
}

// TestBrowserCatchesConsoleErrors: a page whose script the CSP refuses
// fails the test that opened it.
func TestBrowserCatchesConsoleErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>x</title><script>document.title = "ran"</script><p id="p">x</p>`))
	}))
	defer srv.Close()
	b := browser.Get(t)
	rec := &recorder{TB: t}
	tab := b.Tab(rec)
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("p"))); err != nil {
		t.Fatal(err)
	}
	title, _ := chromedp.Run(tab, chromedp.Title())
	if title == "ran" {
		t.Fatal("the inline script ran despite the CSP")
	}
	rec.cleanup()
	if len(rec.errors) == 0 || !strings.Contains(strings.Join(rec.errors, "\n"), "Content Security Policy") {
		t.Errorf("the CSP violation did not fail the test: %q", rec.errors)
	}
}

// recorder is a testing.TB whose errors and cleanups the test runs and
// reads itself.
type recorder struct {
	testing.TB
	errors   []string
	cleanups []func()
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
